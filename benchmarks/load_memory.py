"""Peak memory and time of loading a 256x256 ADM checkpoint and of one network call, two ways (issue 26, item 2).

* ``copy``: what loading did before: ``torch.load`` reads every tensor into memory, the network is built with its own
  freshly initialised weights, and ``load_state_dict`` copies the file's tensors into them (two copies at the peak).
* ``library``: :func:`repaint.checkpoints.load_denoiser` as it is now: the file memory-mapped, the network built on
  the meta device, the file's tensors assigned as its parameters.
* ``bf16-compile``, ``bf16-compile-freeze``: ``library``, then the network converted as ``repaint.accel.accelerate``
  converts it for a run (a bf16, channels-last copy; compiled; the second also frozen), then a first call (which
  compiles) and a second one, timed. Not by default: the compilation takes minutes.

Each way runs in its own process (peak RSS is a per-process high-water mark), on one thread, on a checkpoint of the
CelebA-HQ/Places2 architecture with random weights written once to ``--cache`` (2.2 GB). The two outputs of the one
call must agree exactly. Results: a JSON line per way, and ``--out`` (default benchmarks/results/load_memory.json).

    python benchmarks/load_memory.py                  # about 5 minutes on 2 cores (two network calls of ~1-2 min)
    python benchmarks/load_memory.py --ways library bf16-compile bf16-compile-freeze --out load_memory_modes.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
WAYS = ("copy", "library", "bf16-compile", "bf16-compile-freeze")


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # ru_maxrss is in KiB on Linux


def measure(way: str, path: Path) -> dict:
    """Load ``path`` the given way, then make one call at batch 1; times and peak RSS after each."""
    from repaint.checkpoints import get_preset, load_denoiser
    from repaint.models.config import build_model

    torch.set_num_threads(1)
    start = time.perf_counter()
    if way != "copy":
        net, _, _ = load_denoiser(str(path), preset="celeba256")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = build_model(get_preset("celeba256").config)
        net.load_state_dict(state, strict=True)
        del state
        net.eval()
    load_s, load_rss = time.perf_counter() - start, _peak_gib()
    weights_gib = round(sum(p.numel() * p.element_size() for p in net.parameters()) / 2**30, 3)
    extra = {}
    if way.startswith("bf16"):
        from repaint.accel import Accel, accelerate

        start = time.perf_counter()
        net = accelerate(net, Accel("bf16", channels_last=True, compile=True, freeze=way.endswith("freeze")), "cpu")
        extra = {"convert_s": round(time.perf_counter() - start, 2),
                 "peak_rss_after_convert_gib": round(_peak_gib(), 3)}
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    with torch.no_grad():
        out = net(x, torch.tensor([500]))
    call_s = time.perf_counter() - start
    if way.startswith("bf16"):   # the first call compiled: time a second one
        start = time.perf_counter()
        with torch.no_grad():
            out = net(x, torch.tensor([500]))
        extra.update(first_call_s=round(call_s, 1))
        call_s = time.perf_counter() - start
    return {"way": way, "load_s": round(load_s, 2), "peak_rss_after_load_gib": round(load_rss, 3), **extra,
            "call_s": round(call_s, 1), "peak_rss_after_call_gib": round(_peak_gib(), 3),
            "output_sum": float(out.double().sum()), "weights_gib": weights_gib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/repaint-load-memory"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "load_memory.json")
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=["copy", "library"])
    parser.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    path = args.cache / "celeba256_250000.pt"
    if args.way:
        print(json.dumps(measure(args.way, path)))
        return
    if not path.exists():
        from repaint.checkpoints import get_preset
        from repaint.models.config import build_model

        args.cache.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        torch.save(build_model(get_preset("celeba256").config).state_dict(), path)
    rows = []
    for way in args.ways:
        line = subprocess.run([sys.executable, __file__, "--cache", str(args.cache), "--way", way], check=True,
                              capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        rows.append(json.loads(line.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]))
    exact = [row["output_sum"] for row in rows if row["way"] in ("copy", "library")]
    assert len(set(exact)) <= 1, "the two float32 ways must compute the same network"
    result = {"rows": rows, "load_average": os.getloadavg(), "torch": torch.__version__,
              "command": "python benchmarks/load_memory.py " + " ".join(sys.argv[1:])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""The same evaluation under torchrun (2 CPU processes, gloo) gives the report of a single process."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from evaluation_helpers import FAST, image_folder, tiny_model

from repaint import evaluation as ev

WORKER = textwrap.dedent("""
    import sys
    import torch.distributed as dist
    from repaint.evaluation import evaluate
    from repaint.settings import SamplerSettings

    images, out, model = sys.argv[1:4]
    report = evaluate(images, out, model, ["half", "expand"], settings=SamplerSettings(**{settings}),
                      n_samples=2, batch_size=2, lpips_random=True, progress=False)
    assert dist.get_world_size() == 2
    with open(f"{{out}}.rank{{dist.get_rank()}}", "w") as f:  # one file per rank: printed lines may interleave
        f.write(str(len(report.per_image)))
""")


def records(out: Path) -> dict:
    return {str(p.relative_to(out)): json.loads(p.read_text()) for p in sorted(out.glob("*/metrics/*.json"))}


def test_torchrun_two_processes_equal_one(tmp_path):
    model = tiny_model(tmp_path / "tiny.safetensors")
    images = image_folder(tmp_path / "images", n=3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # as the workers: CPU kernels may round differently with another thread count
    try:
        single = ev.evaluate(images, tmp_path / "single", str(model), ["half", "expand"], settings=FAST,
                             n_samples=2, batch_size=2, lpips_random=True, progress=False)
    finally:
        torch.set_num_threads(threads)

    worker = tmp_path / "worker.py"
    worker.write_text(WORKER.format(settings=repr(FAST.to_dict())))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker),
         str(images), str(tmp_path / "multi"), str(model)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for rank in (0, 1):  # every rank sees the merged report
        assert (tmp_path / f"multi.rank{rank}").read_text() == "6"

    # the same pixels, file by file (seeds depend on the image, not on the rank or the batch)
    pngs = sorted(p.relative_to(tmp_path / "single") for p in (tmp_path / "single").rglob("*.png"))
    assert pngs == sorted(p.relative_to(tmp_path / "multi") for p in (tmp_path / "multi").rglob("*.png"))
    for png in pngs:
        assert (tmp_path / "single" / png).read_bytes() == (tmp_path / "multi" / png).read_bytes(), png
    # the same numbers
    assert records(tmp_path / "multi") == records(tmp_path / "single")
    assert ev.build_report(tmp_path / "multi").summary == single.summary
    assert (tmp_path / "multi" / "report.csv").read_text() == (tmp_path / "single" / "report.csv").read_text()
    assert (tmp_path / "multi" / "report.md").read_text().split("## Per image")[0].replace("multi", "single") == \
        (tmp_path / "single" / "report.md").read_text().split("## Per image")[0]
    # rank 1 sampled image 1 only: its outputs exist, written by the other process
    assert (tmp_path / "multi" / "expand" / "inpainted" / f"img1_s{ev.sample_seed(0, 1, 1)}.png").is_file()

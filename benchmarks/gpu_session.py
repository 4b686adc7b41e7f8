"""Everything a lent GPU is asked to measure, in one call, in order of importance, inside a time budget.

A device session is short (minutes, machine start included), so this script runs the speed benchmark
(benchmarks/bench.py's functions) and the numerics checks (benchmarks/gpu_check.py's) in one process, sharing the
compiled networks, most important stage first, and writes what it has after every stage:

    PYTHONPATH=src python3 benchmarks/gpu_session.py --out "$OUT" --budget 540 --faces faces.tar

Stages: environment and ceilings (matmul, copy, one large convolution); the default mode ("auto") against the float32
reference at batch 8, then batch 1, then a batch scan; the numerics checks; eager modes; the bundled face model's
fills; compilation time with a warm cache (a second process); a real RePaint run; a kernel-time profile of one
compiled call; then variants of the compiled mode while time is left. Results: OUT/gpu_session.json (and the log
on stdout).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402
import gpu_check  # noqa: E402
from repaint.accel import Accel, accelerate, compile_cache_dir  # noqa: E402
from repaint.inpainter import unet_model_fn  # noqa: E402
from repaint.models.config import build_model
from repaint.checkpoints import get_preset  # noqa: E402

EAGER = ["fp32-graphs", "fp16", "fp16-cl", "fp16-graphs", "bf16"]
VARIANTS = ["fp16-cmn-compile-graphs", "fp16-nocl-compile-graphs", "bf16-compile-graphs",
            "fp16-static-compile-graphs", "fp16-cdt-compile-graphs"]
SCAN = (2, 4, 16, 32)


class Session:
    """Stages run in order while the budget lasts; the JSON is rewritten after each one."""

    def __init__(self, out: Path, budget: float, only: list[str] | None = None):
        self.only = only
        self.out = out
        self.deadline = time.monotonic() + budget
        self.data: dict = dict(stages={}, rows=[], errors={})
        out.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def stage(self, name: str, needs: float, fn, *args) -> None:
        if self.only and name not in self.only:
            return
        if self.left() < needs:
            print(f"[skip] {name}: {self.left():.0f} s left, needs about {needs:.0f}", flush=True)
            self.data["stages"][name] = dict(skipped=True, left_s=self.left())
            return self.save()
        print(f"[stage] {name} ({self.left():.0f} s left)", flush=True)
        start = time.monotonic()
        try:
            fn(*args)
            self.data["stages"][name] = dict(seconds=time.monotonic() - start)
        except Exception as error:  # record and go on: later stages may still work
            import traceback

            traceback.print_exc()
            self.data["errors"][name] = f"{type(error).__name__}: {' '.join(str(error).split())[:500]}"
            self.data["stages"][name] = dict(seconds=time.monotonic() - start, failed=True)
        self.save()

    def save(self) -> None:
        self.data["checks"] = gpu_check.RESULTS
        (self.out / "gpu_session.json").write_text(json.dumps(self.data, indent=1, default=str))


def per_call(fn, args, calls: int, device: torch.device) -> float:
    """Seconds per call, synchronised around ``calls`` calls."""
    with torch.no_grad():
        bench.sync(device)
        start = time.perf_counter()
        for _ in range(calls):
            fn(*args)
        bench.sync(device)
    return (time.perf_counter() - start) / calls


def runs_compiled(fn) -> bool | None:
    """Whether a compiled mode still runs its compiled code (False: it fell back to eager); None if not compiled."""
    compiled = getattr(fn, "fn", fn)
    if not hasattr(compiled, "compiled"):
        return None
    return compiled.fn is compiled.compiled


class Bench:
    """The celeba256 architecture (random weights) and the timing of modes against the reference."""

    def __init__(self, session: Session, device: torch.device, preset: str):
        self.s = session
        self.device = device
        self.preset = preset
        self.config = get_preset(preset).config
        torch.manual_seed(0)
        with torch.device(device):
            self.unet = build_model(self.config).eval().requires_grad_(False)
        self.fast: dict = {}
        self.flops = {}
        self.overhead = {}

    def inputs(self, batch: int):
        gen = torch.Generator(device=self.device).manual_seed(batch)
        size = self.config.image_size
        x = torch.randn(batch, 3, size, size, device=self.device, generator=gen)
        t = torch.randint(0, 1000, (batch,), device=self.device, generator=gen)
        return x, t, None

    def callable(self, mode: str):
        if mode == "reference":
            return self.unet
        plan = bench.MODES[mode].resolve(self.device)
        for other, fn in self.fast.items():
            if bench.MODES[other].resolve(self.device) == plan:
                return fn
        self.fast[mode] = accelerate(self.unet, bench.MODES[mode], self.device)
        return self.fast[mode]

    def time_modes(self, modes: list[str], batch: int, rounds: int = 5, calls: int = 4) -> list[dict]:
        """Each mode's first call (compilation, capture), then ``rounds`` rounds alternating with the reference."""
        if batch not in self.flops:
            self.flops[batch] = bench.count_flops(self.config, batch)
        if batch not in self.overhead:
            self.overhead[batch] = bench.sampler_overhead(self.config, batch, self.device)
        args = self.inputs(batch)
        modes = ["reference", *[m for m in modes if m != "reference"]]
        first, memory = {}, {}
        cuda = self.device.type == "cuda"
        for mode in modes:
            bench._cudnn_for(mode, self.device)
            if cuda:
                torch.cuda.reset_peak_memory_stats(self.device)
            resident = torch.cuda.memory_allocated(self.device) if cuda else 0
            fn = self.callable(mode)
            first[mode] = per_call(fn, args, 1, self.device)  # compilation and graph capture included
            per_call(fn, args, 2, self.device)  # warm-up
            memory[mode] = (torch.cuda.max_memory_allocated(self.device) - resident) / 2**30 if cuda else 0.0
            print(f"  {mode:<28} batch {batch:>2}: first call {first[mode]:7.1f} s", flush=True)
        samples = {mode: [] for mode in modes}
        for _ in range(rounds):
            for mode in modes:
                bench._cudnn_for(mode, self.device)
                samples[mode].append(per_call(self.callable(mode), args, calls, self.device))
        rows = []
        for mode in modes:
            times = sorted(samples[mode])
            median = times[len(times) // 2]
            row = dict(mode=mode, accel=bench.MODES[mode].resolve(self.device).label(), batch=batch,
                       runs_compiled=runs_compiled(self.callable(mode)),
                       per_call_s=median, per_call_min_s=times[0], per_call_max_s=times[-1],
                       first_call_s=first[mode], activation_mem_gib=memory[mode],
                       tflops=self.flops[batch] / median / 1e12,
                       overhead_frac=self.overhead[batch] / median)
            for sched in ("paper", "100-j10-r5", "250-no-resampling"):
                n_calls, steps = bench.schedule_counts(bench.schedule_times(sched))
                row[f"s_per_image[{sched}]"] = (n_calls * median + steps * self.overhead[batch]) / batch
            rows.append(row)
        ref = next(r["per_call_s"] for r in rows if r["mode"] == "reference")
        for row in rows:
            row["speedup_vs_reference"] = ref / row["per_call_s"]
            print(f"  {row['mode']:<28} batch {batch:>2}: {row['per_call_s'] * 1e3:8.2f} ms/call "
                  f"[{row['per_call_min_s'] * 1e3:.2f}-{row['per_call_max_s'] * 1e3:.2f}]  "
                  f"{row['tflops']:6.1f} TFLOP/s  paper {row['s_per_image[paper]']:6.1f} s/image  "
                  f"x{row['speedup_vs_reference']:.2f}", flush=True)
        self.s.data["rows"].extend(rows)
        return rows


def stage_environment(s: Session, device: torch.device) -> None:
    import triton  # noqa: F401  (its version goes in the record)

    props = torch.cuda.get_device_properties(device)
    s.data["environment"] = dict(
        device=torch.cuda.get_device_name(device), torch=torch.__version__, cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version(), triton=sys.modules["triton"].__version__,
        multiprocessors=props.multi_processor_count, memory_gib=props.total_memory / 2**30,
        python=sys.version.split()[0], compile_cache=str(compile_cache_dir()),
    )
    peak16 = bench.matmul_peak(device, torch.bfloat16, 8192, 20)
    peak32 = bench.matmul_peak(device, torch.float32, 8192, 5)
    src = torch.randn(2**28, device=device)  # 1 GiB
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        dst.copy_(src)
    torch.cuda.synchronize()
    copy_tb_s = 10 * 2 * src.numel() * 4 / (time.perf_counter() - start) / 1e12
    del src, dst
    # the largest convolutions of the model: 3x3 at 256x256, 256 -> 256 and 512 -> 256 channels, batch 8, fp16 NHWC
    torch.backends.cudnn.benchmark = True
    convs = {}
    for cin in (256, 512):
        x = torch.randn(8, cin, 256, 256, device=device, dtype=torch.float16).contiguous(
            memory_format=torch.channels_last)
        conv = torch.nn.Conv2d(cin, 256, 3, padding=1).to(device, torch.float16, memory_format=torch.channels_last)
        with torch.no_grad():
            per_call(conv, (x,), 3, device)
            seconds = per_call(conv, (x,), 20, device)
        convs[f"{cin}->256"] = 2 * 8 * 256 * 256 * cin * 256 * 9 / seconds / 1e12
    s.data["ceilings"] = dict(matmul_bf16_tflops=peak16, matmul_fp32_tflops=peak32, copy_tb_s=copy_tb_s,
                              conv3x3_fp16_tflops=convs)
    print(f"  {s.data['environment']}\n  ceilings: {s.data['ceilings']}", flush=True)


def stage_faces(s: Session, device: torch.device, faces: str) -> None:
    s.data["face_fills"] = gpu_check.check_face_fills(faces, device, count=32)


def stage_warm_compile(s: Session, b: Bench) -> None:
    """A second process compiles the default mode at batch 8 with the cache the first one filled."""
    accel = bench.MODES["auto"]
    size = b.config.image_size
    code = (
        "import sys, time, torch; sys.path.insert(0, 'benchmarks'); import bench\n"
        "from repaint.accel import *; from repaint.checkpoints import get_preset\n"
        "from repaint.models.config import build_model\n"
        f"torch.manual_seed(0); d = torch.device('{b.device.type}')\n"
        f"with d: net = build_model(get_preset('{b.preset}').config).eval().requires_grad_(False)\n"
        f"x = torch.randn(8, 3, {size}, {size}, device=d); t = torch.full((8,), 500, device=d)\n"
        f"fast = accelerate(net, {accel!r}, d); bench.sync(d); start = time.perf_counter()\n"
        "with torch.no_grad(): fast(x, t)\n"
        "bench.sync(d); print('FIRST_CALL', time.perf_counter() - start)\n"
    )
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=max(30, s.left() - 5),
                          env={**os.environ})
    total = time.perf_counter() - start
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("FIRST_CALL")]
    s.data["warm_compile"] = dict(first_call_s=float(line[0].split()[1]) if line else None, process_s=total,
                                  returncode=done.returncode, stderr_tail=done.stderr[-1500:])
    print(f"  warm-cache first call: {s.data['warm_compile']['first_call_s']} s (process {total:.1f} s)", flush=True)


def stage_real_run(s: Session, b: Bench) -> None:
    fast = b.callable("auto")
    times = bench.schedule_times("100-j10-r5")
    n_calls, steps = bench.schedule_counts(times)
    with torch.no_grad():
        seconds = bench.run_sampler(unet_model_fn(fast), b.config, times, 8, b.device)
    row = next(r for r in s.data["rows"] if r["mode"] == "auto" and r["batch"] == 8)
    estimate = (n_calls * row["per_call_s"] + steps * b.overhead[8]) / 8
    s.data["real_run"] = dict(mode="auto", batch=8, schedule="100-j10-r5", calls=n_calls, transitions=steps,
                              s_per_image=seconds / 8, estimated_s_per_image=estimate)
    print(f"  real run: {seconds / 8:.2f} s/image, estimate {estimate:.2f}", flush=True)


def stage_profile(s: Session, b: Bench) -> None:
    """Kernel time of one compiled call (no CUDA graph, so each kernel is seen), grouped by kind."""
    from torch.profiler import ProfilerActivity, profile

    graphed = b.callable("auto")
    compiled = getattr(graphed, "fn", graphed)  # the _Compiled under the graph replay
    args = b.inputs(8)
    per_call(compiled, args, 2, b.device)
    activity = ProfilerActivity.CUDA if b.device.type == "cuda" else ProfilerActivity.CPU
    with profile(activities=[activity]) as prof, torch.no_grad():
        for _ in range(3):
            compiled(*args)
        bench.sync(b.device)
    kinds: dict[str, float] = {}
    kernels = []
    for event in prof.key_averages():
        cuda_us = (getattr(event, "device_time_total", 0) or getattr(event, "cuda_time_total", 0)
                   if b.device.type == "cuda" else event.self_cpu_time_total)
        if cuda_us <= 0:
            continue
        name = event.key
        low = name.lower()
        kind = ("attention" if "flash" in low or "fmha" in low or "attention" in low else
                "triton (fused elementwise, norms)" if low.startswith("triton") else
                "convolution" if any(k in low for k in ("conv", "xmma", "implicit", "cudnn", "fprop", "sm90")) else
                "matmul" if "gemm" in low or "cutlass" in low else "other")
        kinds[kind] = kinds.get(kind, 0) + cuda_us / 3 / 1e3
        kernels.append((cuda_us / 3 / 1e3, event.count // 3, name[:120]))
    kernels.sort(reverse=True)
    s.data["profile_batch8_ms_per_call"] = dict(by_kind=kinds, total=sum(kinds.values()), top=kernels[:40])
    print(f"  profile (ms per call): {kinds}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--budget", type=float, default=540, help="seconds for all stages (default: %(default)s)")
    parser.add_argument("--faces", help="64x64 faces (folder or .tar) for the fill check")
    parser.add_argument("--preset", default="celeba256", help="architecture, random weights (default: %(default)s)")
    parser.add_argument("--stages", help="run only these stages (comma-separated names, in the usual order)")
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # cpu: a dry run of the script
    args = parser.parse_args(argv)
    for name, value in (("cache_size_limit", 64), ("recompile_limit", 64), ("accumulated_cache_size_limit", 512),
                        ("accumulated_recompile_limit", 512)):
        if hasattr(torch._dynamo.config, name):  # this script compiles many modes in one process
            setattr(torch._dynamo.config, name, value)
    s = Session(Path(args.out), args.budget, args.stages.split(",") if args.stages else None)
    device = torch.device(args.device)
    if device.type == "cuda":
        s.stage("environment", 30, stage_environment, s, device)
    b = Bench(s, device, args.preset)
    s.data["default_plan"] = asdict(Accel().resolve(device))
    s.stage("auto batch 8", 60, lambda: b.time_modes(["auto"], 8))
    if s.only and "numerics of auto" in s.only:  # a short session's correctness check of the default alone
        s.stage("numerics of auto", 10, lambda: gpu_check.check_outputs(
            b.unet, b.config, device, 4, modes={"auto": Accel()}, fast={"auto": b.callable("auto")}))
    s.stage("profile", 20, stage_profile, s, b)
    s.stage("auto batch 1", 60, lambda: b.time_modes(["auto"], 1))
    s.stage("batch scan", 40, lambda: [b.time_modes(["auto"], batch, rounds=3, calls=3) for batch in SCAN])
    s.stage("numerics", 30, lambda: gpu_check.check_outputs(b.unet, b.config, device, 4,
                                                           fast={"auto": b.callable("auto")}))
    s.stage("sampling checks", 20, lambda: gpu_check.check_sampling(b.callable("auto"), b.config, device, 4))
    s.stage("guidance", 15, gpu_check.check_guidance, device)
    s.stage("eager modes batch 8", 30, lambda: b.time_modes(EAGER, 8, rounds=3, calls=3))
    s.stage("eager modes batch 1", 20, lambda: b.time_modes(EAGER, 1, rounds=3, calls=5))
    if args.faces:
        s.stage("face fills", 60, stage_faces, s, device, args.faces)
    s.stage("warm-cache compile", 60, stage_warm_compile, s, b)
    s.stage("real run", 40, stage_real_run, s, b)
    for variant in VARIANTS:
        s.stage(f"variant {variant}", 100, lambda v=variant: b.time_modes(["auto", v], 8, rounds=3, calls=4))
    failed = [r["check"] for r in gpu_check.RESULTS if not r["ok"]]
    print(f"checks: {len(gpu_check.RESULTS) - len(failed)} passed, {len(failed)} failed {failed}")
    print(f"{'mode':<28}{'batch':>6}{'ms/call':>10}{'x ref':>7}{'s/img paper':>12}{'first s':>9}{'GiB':>7}")
    for r in s.data["rows"]:
        print(f"{r['mode']:<28}{r['batch']:>6}{r['per_call_s'] * 1e3:>10.2f}{r['speedup_vs_reference']:>7.2f}"
              f"{r['s_per_image[paper]']:>12.1f}{r['first_call_s']:>9.1f}{r['activation_mem_gib']:>7.2f}")
    print(f"errors: {s.data['errors']}")
    s.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())

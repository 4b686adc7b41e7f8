"""Speed of RePaint: seconds per image at the paper's schedule, network TFLOP/s, sampler overhead, peak memory.

Every execution mode (:mod:`repaint.accel`) is measured in the same run as the reference mode (float32, eager,
contiguous), so the speed-up holds even on a noisy machine. Weights are random: speed does not depend on them.

    python benchmarks/bench.py --preset celeba256 --batch 1 4 8 16 --device cuda     # the full GPU run
    python benchmarks/bench.py --quick                                              # small CPU run (64x64 UNet)

What is measured, per mode and batch size:
  * per call: the mean wall time of ``--calls`` network calls after ``--warmup`` calls (the device is synchronised
    around the timed block only); TFLOP/s = FLOPs of one call (counted with FlopCounterMode on the meta device) /
    that time, and its fraction of the device's matrix peak, measured with a large bfloat16 matmul in the same run.
  * per image at a schedule: (calls x per-call time + transitions x sampler overhead per transition) / batch.
  * sampler overhead: the RePaint loop run with the network replaced by a no-op that returns a preallocated output
    of the right shape; reported per transition and as a fraction of one network call (target <= 5 %).
  * a real run: the whole sampler with the real network at ``--real-run`` (a short schedule by default,
    ``paper`` for the full 2,410 calls), to check the estimate.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from repaint.accel import Accel, accelerate, is_noop
from repaint.diffusion import Diffusion, DiffusionConfig
from repaint.inpainter import unet_model_fn
from repaint.models.config import UNetConfig, build_model
from repaint.checkpoints import get_preset
from repaint.samplers.common import make_generators
from repaint.samplers.repaint import repaint
from repaint.schedule import JumpSchedule, transitions

MODES: dict[str, Accel] = {
    "reference": Accel.reference(),                              # float32, eager, NCHW: as the reference runs
    "auto": Accel(),                      # the default: CUDA fp16 compiled + graphs; CPU: see accel.resolve
    "auto-eager": Accel(compile=False),   # the default where no compiler runs: fp16 + CUDA graphs, NCHW
    "reference-fp16": Accel("reference-fp16", channels_last=False),  # the reference's own use_fp16 mode
    "fp32-cl": Accel("fp32", channels_last=True),
    "fp32-graphs": Accel("fp32", cuda_graphs=True),
    "bf16": Accel("bf16", compile=False),
    "fp16": Accel("fp16", compile=False),
    "fp16-cl": Accel("fp16", compile=False, channels_last=True),
    "bf16-graphs": Accel("bf16", compile=False, cuda_graphs=True),
    "fp16-graphs": Accel("fp16", compile=False, cuda_graphs=True),
    "bf16-compile": Accel("bf16", compile=True, cuda_graphs=False),
    "fp16-compile": Accel("fp16", compile=True, cuda_graphs=False),
    "bf16-compile-graphs": Accel("bf16", compile=True, cuda_graphs=True),
    "fp16-compile-graphs": Accel("fp16", compile=True, cuda_graphs=True),
    "fp16-nocl-compile-graphs": Accel("fp16", compile=True, cuda_graphs=True, channels_last=False),
    "fp16-static-compile-graphs": Accel("fp16", compile=True, cuda_graphs=True, dynamic_batch=False),
    "fp16-cdt-compile-graphs": Accel("fp16", compile=True, cuda_graphs=True,
                                     compile_options=(("coordinate_descent_tuning", True),)),
    "fp16-cmn-compile-graphs": Accel("fp16", compile=True, cuda_graphs=True, channel_moments_norm=True),
}
DEFAULT_MODES = {
    "cuda": ["reference", "auto", "fp16", "fp16-graphs", "fp32-graphs", "bf16-compile-graphs"],
    "cpu": ["reference", "auto", "bf16"],
}
SCHEDULES = {  # name: (T, jump_length, jump_n_sample)
    "paper": (250, 10, 10),
    "250-no-resampling": (250, 10, 1),
    "100-j10-r5": (100, 10, 5),
    "50-j5-r2": (50, 5, 2),
}
OVERHEAD_SCHEDULE = (30, 10, 10)  # same mix of reverse and re-noising steps as the paper's, 390 transitions
# --quick: the size of the bundled 64x64 face model class (23.0M parameters, 15.3 GFLOP per call)
QUICK_CONFIG = UNetConfig(
    image_size=64, model_channels=64, num_res_blocks=2, attention_resolutions=(16, 8), channel_mult=(1, 2, 3, 4),
    learn_sigma=True, num_head_channels=32,
)


def schedule_times(name: str) -> list[int]:
    t_T, jump, resample = SCHEDULES[name] if name in SCHEDULES else name
    return JumpSchedule(t_T=t_T, jump_length=jump, jump_n_sample=resample).times()


def schedule_counts(times: list[int]) -> tuple[int, int]:
    """(network calls, transitions) of a schedule."""
    pairs = transitions(times)
    return sum(1 for a, b in pairs if b < a), len(pairs)


def count_flops(config: UNetConfig, batch: int) -> int:
    """FLOPs (2 x multiply-adds) of one UNet call, counted on the meta device (no memory, no compute)."""
    with torch.device("meta"):
        net = build_model(config)
        x = torch.empty(batch, config.in_channels, config.image_size, config.image_size)
        t = torch.zeros(batch, dtype=torch.int64)
        y = torch.zeros(batch, dtype=torch.int64) if config.class_cond else None
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x, t, y)
    return counter.get_total_flops()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int, reps: int) -> float:
    """Measured dense matmul throughput in TFLOP/s (size x size x size, ``reps`` times after one warm-up)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * size**3 * reps / (time.perf_counter() - start) / 1e12


def time_calls(model, args, calls: int, warmup: int, device: torch.device) -> tuple[float, float]:
    """(seconds per call, seconds of the warm-up) of ``model(*args)``."""
    start = time.perf_counter()
    for _ in range(warmup):
        model(*args)
    sync(device)
    warm = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(calls):
        model(*args)
    sync(device)
    return (time.perf_counter() - start) / max(calls, 1), warm


def make_inputs(config: UNetConfig, batch: int, device: torch.device, seed: int = 0):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    size = config.image_size
    gt = (torch.rand(batch, config.in_channels, size, size, generator=gen) * 2 - 1).to(device)
    mask = torch.ones(batch, 1, size, size, device=device)
    mask[..., size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 0  # a centred square to fill
    y = torch.zeros(batch, dtype=torch.int64, device=device) if config.class_cond else None
    return gt, mask, y


def run_sampler(model, config: UNetConfig, times: list[int], batch: int, device: torch.device) -> float:
    """Wall seconds of one whole RePaint run (T from the schedule) with ``model(x, model_t)``."""
    gt, mask, _ = make_inputs(config, batch, device)
    diffusion = Diffusion(DiffusionConfig(timestep_respacing=str(max(times) + 1), learn_sigma=config.learn_sigma),
                          device)
    sync(device)
    start = time.perf_counter()
    repaint(model, diffusion, times, gt, mask, generators=make_generators(range(batch), device), check_finite=False)
    sync(device)
    return time.perf_counter() - start


def sampler_overhead(config: UNetConfig, batch: int, device: torch.device) -> float:
    """Seconds per transition of the RePaint loop itself (network replaced by a no-op of the right output shape)."""
    out = torch.zeros(batch, config.out_channels, config.image_size, config.image_size, device=device)

    def noop(x, model_t):
        return out

    times = schedule_times(OVERHEAD_SCHEDULE)
    run_sampler(noop, config, schedule_times((10, 5, 2)), batch, device)  # warm-up
    return run_sampler(noop, config, times, batch, device) / schedule_counts(times)[1]


def measure(modes, unet, config, batches, args, device, flops, peak, overhead) -> list[dict]:
    """Time every mode at every batch size; modes are interleaved in ``args.rounds`` rounds (median per mode)."""
    fast = accelerated(unet, modes, device)
    rows = []
    for batch in batches:
        _, _, y = make_inputs(config, batch, device)
        x = torch.randn(batch, config.in_channels, config.image_size, config.image_size, device=device)
        t = torch.full((batch,), 500, dtype=torch.int64, device=device)
        warm, memory, first = {}, {}, {}
        for name in modes:  # warm-up (compilation, graph capture, cuDNN autotuning) and peak memory
            _cudnn_for(name, device)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            resident = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
            with torch.no_grad():
                first[name] = time_calls(fast[name], (x, t, y), 0, 1, device)[1]  # compilation, graph capture
                warm[name] = time_calls(fast[name], (x, t, y), 0, args.warmup, device)[1]
            if device.type == "cuda":
                memory[name] = (torch.cuda.max_memory_allocated(device), resident)
        samples = {name: [] for name in modes}
        per_round = max(1, args.calls // args.rounds)
        for _ in range(args.rounds):
            for name in modes:
                _cudnn_for(name, device)
                with torch.no_grad():
                    samples[name].append(time_calls(fast[name], (x, t, y), per_round, 0, device)[0])
        for name in modes:
            per_call = sorted(samples[name])[len(samples[name]) // 2]
            peak_mem, resident = memory.get(name, (None, None))
            row = dict(
                mode=name, accel=MODES[name].resolve(device).label(), batch=batch, per_call_s=per_call,
                first_call_s=first[name], warmup_s=warm[name], per_image_call_s=per_call / batch,
                tflops=flops[batch] / per_call / 1e12,
                frac_of_bf16_peak=flops[batch] / per_call / 1e12 / peak, overhead_frac=overhead[batch] / per_call,
                peak_mem_gib=None if peak_mem is None else peak_mem / 2**30,
                activation_mem_gib=None if peak_mem is None else (peak_mem - resident) / 2**30,
            )
            for sched in args.schedules:
                calls, steps = schedule_counts(schedule_times(sched))
                row[f"s_per_image[{sched}]"] = (calls * per_call + steps * overhead[batch]) / batch
            rows.append(row)
            print(f"  {name:<20} batch {batch:>3}: {per_call * 1e3:9.2f} ms/call  {row['tflops']:8.3f} TFLOP/s  "
                  f"paper {row['s_per_image[paper]']:9.1f} s/image", flush=True)
    return rows


def accelerated(unet, modes: list[str], device: torch.device) -> dict:
    """The callable of each mode; modes that resolve to the same plan share one (so "auto" is not compiled twice,
    and timing it under two names shows the run-to-run spread)."""
    by_plan: dict[Accel, object] = {}
    fast = {}
    for name in modes:
        plan = MODES[name].resolve(device)
        if plan not in by_plan:
            by_plan[plan] = accelerate(unet, MODES[name], device)
        fast[name] = by_plan[plan]
    return fast


def _cudnn_for(name: str, device: torch.device) -> None:
    """cuDNN autotuning for the fast modes only: the reference implementation does not turn it on."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not is_noop(MODES[name], device)


def run_bench(
    preset: str = "celeba256",
    batches: tuple[int, ...] = (1, 4, 8, 16),
    device: str = "cuda",
    modes: list[str] | None = None,
    calls: int = 20,
    warmup: int = 5,
    quick: bool = False,
    rounds: int = 5,
    schedules: tuple[str, ...] = tuple(SCHEDULES),
    real_run: str | tuple[int, int, int] | None = "50-j5-r2",
    out: str | Path | None = "benchmarks/results",
    config: UNetConfig | None = None,
) -> dict:
    """Run the benchmark; returns (and writes to ``out``/<name>.json unless None) the results dict.

    ``quick`` uses the small 64x64 UNet (:data:`QUICK_CONFIG`), batch 1-2 and 3 calls: for CPUs. The ``calls``
    timed calls per point are split into ``rounds`` rounds that alternate between the modes (median per mode).
    ``config`` times that architecture instead of the preset's (``preset`` then only names the JSON file).
    ``real_run`` is a name in :data:`SCHEDULES` or a (T, jump length, resamplings) triple.
    """
    device = torch.device(device)
    if quick and config is None:
        config, preset = QUICK_CONFIG, "quick64"
        batches, calls, warmup = tuple(b for b in batches if b <= 2) or (1, 2), min(calls, 3), min(warmup, 1)
        rounds = min(rounds, 3)
    config = config or get_preset(preset).config
    modes = modes or DEFAULT_MODES["cuda" if device.type == "cuda" else "cpu"]
    if modes[0] != "reference":
        modes = ["reference", *[m for m in modes if m != "reference"]]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown mode(s) {unknown}; available: {', '.join(MODES)}")
    schedules = tuple(dict.fromkeys(("paper", *schedules)))
    args = argparse.Namespace(calls=calls, warmup=warmup, schedules=schedules, rounds=min(calls, rounds))

    torch.manual_seed(0)
    with torch.device(device):
        unet = build_model(config).eval()
    unet.requires_grad_(False)
    flops = {b: count_flops(config, b) for b in batches}
    peak_size = 8192 if device.type == "cuda" else 1024
    peak = matmul_peak(device, torch.bfloat16, peak_size, 20 if device.type == "cuda" else 3)
    peak32 = matmul_peak(device, torch.float32, peak_size, 20 if device.type == "cuda" else 3)
    overhead = {b: sampler_overhead(config, b, device) for b in batches}
    print(f"{preset}: {sum(p.numel() for p in unet.parameters()) / 1e6:.1f}M parameters, "
          f"{flops[batches[0]] / batches[0] / 1e12:.4f} TFLOP per image per call; matmul peak bf16 {peak:.3g}, "
          f"fp32 {peak32:.3g} TFLOP/s", flush=True)

    rows = measure(modes, unet, config, batches, args, device, flops, peak, overhead)
    ref = {r["batch"]: r["per_call_s"] for r in rows if r["mode"] == "reference"}
    for row in rows:
        row["speedup_vs_reference"] = ref[row["batch"]] / row["per_call_s"]

    real = None
    if real_run:
        best = min((r for r in rows if r["batch"] == batches[-1]), key=lambda r: r["per_call_s"])
        fast = accelerate(unet, MODES[best["mode"]], device)
        times = schedule_times(real_run)
        with torch.no_grad():
            run_sampler(unet_model_fn(fast), config, schedule_times((10, 5, 2)), batches[-1], device)  # warm-up
            seconds = run_sampler(unet_model_fn(fast), config, times, batches[-1], device)
        calls_, steps = schedule_counts(times)
        estimate = (calls_ * best["per_call_s"] + steps * overhead[batches[-1]]) / batches[-1]
        real = dict(mode=best["mode"], batch=batches[-1], schedule=str(real_run), calls=calls_, transitions=steps,
                    s_per_image=seconds / batches[-1], estimated_s_per_image=estimate)

    result = dict(
        preset=preset, config=config.to_dict(), device=_describe(device), torch=torch.__version__,
        threads=torch.get_num_threads(), parameters=sum(p.numel() for p in unet.parameters()),
        flops_per_call={str(b): f for b, f in flops.items()}, matmul_peak_tflops={"bf16": peak, "fp32": peak32},
        schedules={s: dict(zip(("calls", "transitions"), schedule_counts(schedule_times(s)))) for s in schedules},
        sampler_overhead_s_per_transition={str(b): v for b, v in overhead.items()},
        calls=calls, warmup=warmup, rounds=args.rounds, rows=rows, real_run=real,
        modes={m: asdict(MODES[m]) for m in modes},
    )
    print_table(result)
    if out is not None:
        path = Path(out) / f"bench_{preset}_{device.type}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))
        print(f"saved {path}")
    return result


def _describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} thread(s)"


def print_table(result: dict) -> None:
    sched = [s for s in result["schedules"] if s != "paper"][:2]
    head = (f"{'mode':<20}{'accel':<24}{'batch':>5}{'ms/call':>10}{'TFLOP/s':>9}{'%peak':>7}{'x ref':>7}"
            f"{'ovh%':>6}{'s/img paper':>12}" + "".join(f"{'s/img ' + s:>24}" for s in sched) + f"{'GiB':>7}")
    print(f"\n{result['preset']} on {result['device']} (torch {result['torch']}), bf16 matmul peak "
          f"{result['matmul_peak_tflops']['bf16']:.3g} TFLOP/s")
    print(head)
    for r in result["rows"]:
        mem = "" if r["peak_mem_gib"] is None else f"{r['peak_mem_gib']:7.2f}"
        print(f"{r['mode']:<20}{r['accel']:<24}{r['batch']:>5}{r['per_call_s'] * 1e3:>10.2f}{r['tflops']:>9.3g}"
              f"{100 * r['frac_of_bf16_peak']:>7.1f}{r['speedup_vs_reference']:>7.2f}{100 * r['overhead_frac']:>6.1f}"
              f"{r.get('s_per_image[paper]', float('nan')):>12.1f}"
              + "".join(f"{r.get(f's_per_image[{s}]', float('nan')):>24.2f}" for s in sched) + mem)
    for b, v in result["sampler_overhead_s_per_transition"].items():
        print(f"sampler overhead, batch {b}: {v * 1e3:.3f} ms per transition (no-op network)")
    if result["real_run"]:
        r = result["real_run"]
        print(f"real run {r['schedule']} ({r['calls']} calls), {r['mode']} batch {r['batch']}: "
              f"{r['s_per_image']:.2f} s/image (estimate {r['estimated_s_per_image']:.2f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="RePaint speed benchmark (random weights).",
        epilog="examples:\n  python benchmarks/bench.py --preset celeba256 --batch 1 4 8 16 --device cuda\n"
               "  python benchmarks/bench.py --quick",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", default="celeba256", help="architecture to time (default: %(default)s)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4, 8, 16], help="batch sizes (default: 1 4 8 16)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), help="execution modes (reference is always run)")
    parser.add_argument("--calls", type=int, default=20, help="timed network calls per point (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="alternations between the modes (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="small 64x64 UNet, batch <= 2, 3 calls: for CPUs")
    parser.add_argument("--real-run", default="50-j5-r2", choices=[*SCHEDULES, "none"],
                        help="also sample for real at this schedule with the fastest mode (default: %(default)s)")
    parser.add_argument("--out", default="benchmarks/results", help="folder for the JSON (default: %(default)s)")
    a = parser.parse_args(argv)
    run_bench(a.preset, tuple(a.batch), a.device, a.modes, a.calls, a.warmup, a.quick, a.rounds,
              real_run=None if a.real_run == "none" else a.real_run, out=a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

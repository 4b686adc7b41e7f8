"""The fastest accurate network call on a CPU (issue 26, item 1): every CPU execution mode, timed interleaved, and
checked against float32 by the tolerance written down beforehand in docs/performance.md ("CPU modes").

    python benchmarks/cpu_modes.py --model face64 --batch 1 8 --threads 1 2 --repeats 7 --accuracy
    python benchmarks/cpu_modes.py --model adm256 --batch 1 --threads 1 2 --repeats 2 --accuracy

Modes: fp32 (the reference: eager, NCHW), fp32-cl (channels-last), bf16 (weights in bfloat16, autocast), bf16-cl,
fp32-compile / bf16-compile (``torch.compile``, inductor's C++ backend), bf16-compile-freeze (the same with inductor's
freezing: weights as constants, oneDNN convolutions on weights reordered once), bf16-compile-cmn (the same as
bf16-compile with GroupNorm read as per-channel moments, ``Accel(channel_moments_norm=True)``), onnxruntime (the UNet
exported with ``torch.onnx.export`` at a fixed batch, run by ONNX Runtime's CPU provider in float32), and int8-compile /
int8-resblocks-compile (static int8 quantization, calibrated on synthetic noisy images, compiled: :class:`Int8Call`;
``pip install 'repaint-inpaint[int8]'``).

Timing: per thread count (``torch.set_num_threads``; ONNX Runtime gets the same intra-op thread count), one untimed
warm-up call per mode, then ``--repeats`` rounds that call every mode once, in turn (A B C A B C ...), so the load of
the machine falls on all modes alike. min/median/max per mode, the load average at each round, and GFLOP/s = FLOPs of
one call (FlopCounterMode on the meta device) / the median.

Accuracy (``--accuracy``): face64: the mean fill PSNR over 8 seeds of RePaint (T=50, j=5, r=2) on examples/face.png,
against float32's; adm256 (random weights): the relative error of one call against float32 at six timesteps.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from repaint.accel import Accel, accelerate
from repaint.checkpoints import get_preset, load_denoiser
from repaint.models.config import build_model

ROOT = Path(__file__).resolve().parents[1]
TORCH_MODES: dict[str, Accel] = {
    "fp32": Accel.reference(),
    "fp32-cl": Accel("fp32", channels_last=True, compile=False, cuda_graphs=False),
    "bf16": Accel("bf16", channels_last=False, compile=False, cuda_graphs=False),
    "bf16-cl": Accel("bf16", channels_last=True, compile=False, cuda_graphs=False),
    "fp32-compile": Accel("fp32", channels_last=False, compile=True, cuda_graphs=False, dynamic_batch=False),
    "bf16-compile": Accel("bf16", channels_last=True, compile=True, cuda_graphs=False, dynamic_batch=False),
    "bf16-compile-freeze": Accel("bf16", channels_last=True, compile=True, cuda_graphs=False, dynamic_batch=False,
                                 freeze=True),
    "bf16-compile-cmn": Accel("bf16", channels_last=True, compile=True, cuda_graphs=False, dynamic_batch=False,
                              channel_moments_norm=True),
}
INT8_MODES = ("int8-compile", "int8-resblocks-compile")
MODES = (*TORCH_MODES, "onnxruntime", *INT8_MODES)
TIMESTEPS = (999, 750, 500, 250, 50, 10)   # the 256² accuracy check (docs/performance.md)
FILL_SEEDS = tuple(range(8))


def random_adm256() -> tuple[torch.nn.Module, object]:
    """The 256² ADM UNet with random weights; the layers the reference initialises to zero get random values too
    (else every output is zero and any mode "matches")."""
    torch.manual_seed(0)
    config = get_preset("celeba256").config
    net = build_model(config)
    with torch.no_grad():
        for param in net.parameters():
            if param.dim() > 1 and not param.any():
                fan_in = param[0].numel()
                param.normal_(0, 1 / math.sqrt(fan_in))
    return net.eval().requires_grad_(False), config


def load_model(name: str) -> tuple[torch.nn.Module, object]:
    """(network, its UNetConfig)."""
    if name == "adm256":
        return random_adm256()
    net, config, _ = load_denoiser("default")
    return net.eval().requires_grad_(False), config


def count_flops(config, batch: int) -> int:
    """FLOPs of one call, counted on the meta device (no memory, no compute)."""
    with torch.device("meta"):
        net = build_model(config)
        x = torch.zeros(batch, config.in_channels, config.image_size, config.image_size)
        t = torch.zeros(batch, dtype=torch.int64)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x, t)
    return counter.get_total_flops()


class OnnxCall:
    """The UNet exported to ONNX at one batch size, run by ONNX Runtime (CPU, float32), called like the network."""

    def __init__(self, net: torch.nn.Module, config, batch: int, threads: int, folder: Path):
        try:
            import onnx  # noqa: F401  (torch.onnx.export writes through it)
            import onnxruntime as ort
        except ImportError as error:
            raise ImportError(f"{error.name} is not installed: pip install 'repaint-inpaint[onnx]'") from None

        path = folder / f"unet_b{batch}.onnx"
        if not path.exists():
            size = config.image_size
            x = torch.zeros(batch, config.in_channels, size, size)
            t = torch.zeros(batch, dtype=torch.int64)
            torch.onnx.export(net, (x, t), str(path), input_names=["x", "t"], output_names=["out"],
                              opset_version=17, dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y=None) -> torch.Tensor:
        out = self.session.run(["out"], {"x": x.contiguous().numpy(), "t": t.to(torch.int64).numpy()})[0]
        return torch.from_numpy(out)


def make_calls(net, config, modes, batch, threads, folder) -> tuple[dict, dict]:
    """{mode: callable}, {mode: why it could not be built}."""
    calls, failed = {}, {}
    torch._dynamo.reset()  # every group compiles afresh: stale guards would count towards dynamo's recompile limit
    for mode in modes:
        try:
            if mode == "onnxruntime":
                calls[mode] = OnnxCall(net, config, batch, threads, folder)
            elif mode in INT8_MODES:
                calls[mode] = Int8Call(net, config, batch, resblocks_only=mode == "int8-resblocks-compile")
            else:
                calls[mode] = accelerate(net, TORCH_MODES[mode], "cpu")
        except Exception as error:  # recorded and reported: a mode that cannot run here
            failed[mode] = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
    return calls, failed


def inputs(config, batch: int, t: int = 500, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    size = config.image_size
    x = torch.randn(batch, config.in_channels, size, size, generator=gen)
    return x, torch.full((batch,), t, dtype=torch.int64)


def time_modes(calls: dict, config, batch: int, repeats: int) -> tuple[dict, list]:
    x, t = inputs(config, batch)
    first = {}
    with torch.no_grad():
        for mode, fn in calls.items():  # warm-up (compiles, builds ONNX Runtime's kernels)
            start = time.perf_counter()
            fn(x, t)
            first[mode] = time.perf_counter() - start
        times = {mode: [] for mode in calls}
        loads = []
        for _ in range(repeats):
            loads.append(os.getloadavg()[0])
            for mode, fn in calls.items():
                start = time.perf_counter()
                fn(x, t)
                times[mode].append(time.perf_counter() - start)
    return {"times": times, "first_call": first}, loads


def relative_errors(calls: dict, config) -> dict:
    """||out - fp32|| / ||fp32|| of one call at batch 1 at each of TIMESTEPS, on a noisy smooth image."""
    from repaint.diffusion import Diffusion, DiffusionConfig

    diffusion = Diffusion(DiffusionConfig(steps=1000, noise_schedule="linear", learn_sigma=True), "cpu")
    gen = torch.Generator().manual_seed(1)
    size = config.image_size
    x0 = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=gen) * 2 - 1, size=(size, size),
                                         mode="bicubic").clamp(-1, 1)
    errors = {mode: {} for mode in calls}
    with torch.no_grad():
        for step in TIMESTEPS:
            t = torch.tensor([step])
            noise = torch.randn(x0.shape, generator=gen)
            xt = diffusion.q_sample(x0, t, noise)
            ref = calls["fp32"](xt, t).float()
            for mode, fn in calls.items():
                errors[mode][step] = float((fn(xt, t).float() - ref).norm() / ref.norm())
    return {mode: {"per_timestep": e, "max": max(e.values())} for mode, e in errors.items()}


def fill_psnrs(calls: dict) -> dict:
    """Mean fill PSNR (masked pixels, [0, 1] range) of RePaint T=50, j=5, r=2 on examples/face.png, 8 seeds."""
    from repaint.images import load_image
    from repaint.inpainter import Inpainter, unet_model_fn
    from repaint.masks import load_mask
    from repaint.samplers import get_sampler
    from repaint.samplers.common import make_generators
    from repaint.settings import SamplerSettings

    inpainter = Inpainter.load("default", accel=Accel.reference())
    settings = SamplerSettings(steps=50, jump_length=5, jump_n_sample=2)
    if not inpainter.trained.clip_sample:
        settings = replace(settings, clip_denoised=False)
    n = len(FILL_SEEDS)
    image = load_image(ROOT / "examples/face.png")[None].expand(n, -1, -1, -1).contiguous()
    keep = load_mask(ROOT / "examples/face_mask.png")[None, None].expand(n, -1, -1, -1).contiguous()
    hole = (1 - keep).expand_as(image).bool()
    results = {}
    for mode, fn in calls.items():
        with torch.no_grad():
            out = get_sampler("repaint")(unet_model_fn(fn), inpainter.diffusion(settings), image, keep,
                                         settings=settings, generators=make_generators(FILL_SEEDS, "cpu"))
        psnrs = []
        for i in range(n):
            err = ((out[i] - image[i]) / 2)[hole[i]]
            psnrs.append(float(10 * torch.log10(1 / err.pow(2).mean())))
        results[mode] = {"per_seed": psnrs, "mean": statistics.fmean(psnrs)}
    for mode in results:
        results[mode]["change_db"] = results[mode]["mean"] - results["fp32"]["mean"]
    return results


CALIBRATION_STEPS = (990, 700, 400, 150, 30, 5)   # timesteps of the int8 calibration inputs (seed 123)
RESBLOCK_CONVS = re.compile(r"\.(in_layers\.2|out_layers\.3)$")   # the 3x3 convolutions of the residual blocks


def noisy_smooth(config, batch: int, step: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` smooth random images (8x8 noise, bicubic) noised to ``step`` of the linear 1000-step schedule."""
    from repaint.diffusion import Diffusion, DiffusionConfig

    diffusion = Diffusion(DiffusionConfig(steps=1000, noise_schedule="linear", learn_sigma=True), "cpu")
    size = config.image_size
    x0 = torch.nn.functional.interpolate(torch.rand(batch, 3, 8, 8, generator=gen) * 2 - 1, size=(size, size),
                                         mode="bicubic").clamp(-1, 1)
    t = torch.full((batch,), step, dtype=torch.int64)
    return diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=gen)), t


class Int8Call:
    """Static int8 quantization, compiled: torchao's PT2E flow with ``X86InductorQuantizer`` (weights int8, one scale
    per output channel; activations uint8, one scale per tensor, fixed by calibration on six noisy smooth random
    images, ``CALIBRATION_STEPS``, other seeds than the accuracy check's), exported at one batch size, then
    ``torch.compile`` with inductor's freezing, which lowers the quantized convolutions and linears to oneDNN's int8
    kernels (AVX512-VNNI here). ``resblocks_only``: only the residual blocks' 3x3 convolutions are quantized; the
    input and output convolutions, the skip and resampling convolutions, attention and the embeddings stay float32."""

    def __init__(self, net: torch.nn.Module, config, batch: int, resblocks_only: bool = False):
        try:
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
            from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86
        except ImportError:
            raise ImportError("torchao is not installed: pip install 'repaint-inpaint[int8]'") from None

        gen = torch.Generator().manual_seed(123)
        exported = torch.export.export(net, noisy_smooth(config, batch, 500, gen)).module()
        quantizer, qconfig = x86.X86InductorQuantizer(), x86.get_default_x86_inductor_quantization_config()
        if resblocks_only:
            for name, _ in filter(lambda item: RESBLOCK_CONVS.search(item[0]), net.named_modules()):
                quantizer.set_module_name_qconfig(name, qconfig)
        else:
            quantizer.set_global(qconfig)
        prepared = prepare_pt2e(exported, quantizer)
        with torch.no_grad():
            for step in CALIBRATION_STEPS:
                prepared(*noisy_smooth(config, batch, step, gen))
        self.fn = torch.compile(convert_pt2e(prepared))

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y=None) -> torch.Tensor:
        with torch._inductor.config.patch(freezing=True):   # read when the first call traces
            return self.fn(x, t)


def check_accuracy(net, config, modes, threads, folder, model: str, calls: dict, batch: int) -> dict:
    """Every mode against fp32, by the tolerance of its model (docs/performance.md, "CPU modes"); ``calls`` (built
    for ``batch``) are used where the check runs at that batch (ONNX models have a fixed batch)."""
    wanted = len(FILL_SEEDS) if model == "face64" else 1
    if batch != wanted:
        calls = make_calls(net, config, modes, wanted, threads, folder)[0]
    return fill_psnrs(calls) if model == "face64" else relative_errors(calls, config)


def summarise(runs: list[dict], accuracy: dict, flops: dict, model: str) -> list[dict]:
    rows = []
    for run in runs:
        base = statistics.median(run["times"]["fp32"])
        for mode, times in run["times"].items():
            med = statistics.median(times)
            acc = accuracy.get(mode, {})
            figure = acc.get("change_db", acc.get("max"))
            limit_ok = None if figure is None else (abs(figure) <= 0.1 if model == "face64" else figure <= 2e-2)
            rows.append(dict(mode=mode, batch=run["batch"], threads=run["threads"], min_ms=1e3 * min(times),
                             median_ms=1e3 * med, max_ms=1e3 * max(times), speedup=base / med,
                             gflops=flops[run["batch"]] / med / 1e9, accuracy=figure, within_tolerance=limit_ok,
                             load=run["loads"]))
    return rows


def print_rows(rows: list[dict], model: str) -> None:
    unit = "fill PSNR change (dB)" if model == "face64" else "max rel. error"
    print(f"| mode | batch | threads | ms/call min / median / max | x fp32 | GFLOP/s | {unit} | within tolerance |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:+.3f}" if model == "face64" else f"{r['accuracy']:.2e}"
        ok = "-" if r["within_tolerance"] is None else ("yes" if r["within_tolerance"] else "no")
        print(f"| {r['mode']} | {r['batch']} | {r['threads']} | {r['min_ms']:.0f} / {r['median_ms']:.0f} / "
              f"{r['max_ms']:.0f} | {r['speedup']:.2f} | {r['gflops']:.1f} | {acc} | {ok} |")


def matmul_peak(dtype: torch.dtype, threads: int, n: int = 2048, repeats: int = 8) -> dict:
    """The roofline's ceiling: GFLOP/s of one large square matmul in ``dtype`` (best and median of ``repeats``)."""
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(dtype) for _ in range(2))
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    flop = 2 * n**3
    return dict(dtype=str(dtype).removeprefix("torch."), threads=threads, n=n, best_gflops=flop / min(times) / 1e9,
                median_gflops=flop / statistics.median(times) / 1e9, load=os.getloadavg()[0])


def print_peaks(threads: list[int], out: Path | None) -> None:
    peaks = [matmul_peak(dtype, t) for t in threads for dtype in (torch.float32, torch.bfloat16)]
    for p in peaks:
        print(f"{p['dtype']} matmul {p['n']}^3, {p['threads']} thread(s): best {p['best_gflops']:.1f}, "
              f"median {p['median_gflops']:.1f} GFLOP/s (load {p['load']:.1f})")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(dict(peaks=peaks, torch=torch.__version__, argv=sys.argv[1:],
                                       date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())), indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("face64", "adm256"), default="face64")
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--accuracy", action="store_true", help="check every mode against the tolerance")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--peak", action="store_true",
                        help="measure only this CPU's matmul ceiling in fp32 and bf16 (the roofline), per --threads")
    args = parser.parse_args(argv)
    if args.peak:
        print_peaks(args.threads, args.out)
        return 0
    modes = ["fp32", *[m for m in args.modes if m != "fp32"]]
    net, config = load_model(args.model)
    flops = {b: count_flops(config, b) for b in args.batch}
    folder = Path(tempfile.mkdtemp(prefix="cpu_modes_"))
    runs, failed, accuracy = [], {}, {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batch:
            calls, why = make_calls(net, config, modes, batch, threads, folder)
            failed.update(why)
            result, loads = time_modes(calls, config, batch, args.repeats)
            runs.append(dict(threads=threads, batch=batch, loads=loads, **result))
            print(f"threads {threads} batch {batch}: " + ", ".join(
                f"{m} {1e3 * statistics.median(v):.0f} ms" for m, v in result["times"].items()), flush=True)
            if args.accuracy and not accuracy:  # once, at the first thread count, with these very calls
                accuracy = check_accuracy(net, config, modes, threads, folder, args.model, calls, batch)
            del calls
    rows = summarise(runs, accuracy, flops, args.model)
    print_rows(rows, args.model)
    for mode, why in failed.items():
        print(f"{mode}: could not run: {why}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(dict(
            model=args.model, flops_per_call=flops, torch=torch.__version__, python=platform.python_version(),
            cpu_capability=torch.backends.cpu.get_cpu_capability(), machine=platform.machine(),
            cpus=os.cpu_count(), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), argv=sys.argv[1:],
            rows=rows, failed=failed, accuracy=accuracy, runs=runs), indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

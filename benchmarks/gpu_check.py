"""GPU numerics and speed check of the fast execution paths (repaint.accel); run it whenever a GPU is at hand.

    python benchmarks/gpu_check.py                         # celeba256 architecture, random weights
    python benchmarks/gpu_check.py --checkpoint celeba256  # real weights (found as `repaint` finds presets)
    python benchmarks/gpu_check.py --compile               # also torch.compile (tens of seconds of warm-up)

Checks, each printed PASS/FAIL (exit status 1 if any fails):
  1. every fast mode's output vs the float32 reference: relative error ||out - ref|| / ||ref|| under a bound
     (bf16 3e-2, fp16 / reference-fp16 1e-2; the CPU tests measure bf16 at 0.8-1.5 % on random-weight UNets),
     float32 output dtype; CUDA-graph replay equal to the same mode without graphs.
  2. flash attention usable for the model's q/k/v (the call runs with SDPA restricted to the flash kernel).
  3. a short RePaint run with the fastest mode: no NaN/inf, known region exactly the input after the final paste.
  4. the sampling loop never synchronises host and device (torch.cuda.set_sync_debug_mode("error")).
  5. classifier guidance through a bf16 classifier: finite gradient close to the float32 one.
  6. per-call times of the reference and the fast modes at one batch size (a rough speed check; see bench.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from repaint.accel import Accel, accelerate
from repaint.diffusion import Diffusion, DiffusionConfig
from repaint.pipeline import resolve_checkpoint, unet_model_fn
from repaint.presets import build_model, get_preset, load_checkpoint
from repaint.sampler import classifier_guidance, make_generators, repaint, repaint_iter
from repaint.schedule import jump_schedule

BOUNDS = {"bf16": 3e-2, "fp16": 1e-2, "reference-fp16": 1e-2}
RESULTS: list[dict] = []


def check(name: str, ok: bool, **info) -> bool:
    RESULTS.append(dict(check=name, ok=bool(ok), **info))
    details = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
    print(f"{'PASS' if ok else 'FAIL'}  {name}  {details}", flush=True)
    return ok


def rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref.float()).norm() / ref.float().norm()).item()


def load_unet(args, device):
    if args.checkpoint:
        path, preset = resolve_checkpoint(args.checkpoint)
        unet, config = load_checkpoint(path, preset=preset, kind="unet", map_location="cpu")
        return unet.to(device).eval().requires_grad_(False), config
    config = get_preset(args.preset).config
    torch.manual_seed(0)
    with torch.device(device):
        unet = build_model(config).eval()
    return unet.requires_grad_(False), config


def per_call(model, inputs, calls: int = 10) -> float:
    with torch.no_grad():
        for _ in range(3):
            model(*inputs)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            model(*inputs)
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls


def check_outputs(unet, config, device, args) -> dict:
    """Checks 1, 2 and 6; returns the fast callables by mode name."""
    gen = torch.Generator(device=device).manual_seed(0)
    size = config.image_size
    x = torch.randn(args.batch, config.in_channels, size, size, device=device, generator=gen)
    t = torch.tensor([999, 500, 100, 0] * args.batch, device=device)[: args.batch]
    y = torch.arange(args.batch, device=device) % config.num_classes if config.class_cond else None
    with torch.no_grad():
        ref = unet(x, t, y)
    modes = {"bf16": Accel("bf16"), "fp16": Accel("fp16"), "reference-fp16": Accel("reference-fp16"),
             "bf16-graphs": Accel("bf16", cuda_graphs=True)}
    if args.compile:
        modes["bf16-compile-graphs"] = Accel("bf16", compile=True, cuda_graphs=True)
    fast, outs = {}, {}
    for name, accel in modes.items():
        fast[name] = accelerate(unet, accel, device)
        with torch.no_grad():
            outs[name] = fast[name](x, t, y)
        bound = BOUNDS[accel.precision]
        check(f"output {name} vs fp32", outs[name].dtype == torch.float32 and rel(outs[name], ref) <= bound,
              rel_err=rel(outs[name], ref), bound=bound, dtype=str(outs[name].dtype))
    check("CUDA-graph replay equals eager bf16", rel(outs["bf16-graphs"], outs["bf16"]) <= 1e-3,
          rel_err=rel(outs["bf16-graphs"], outs["bf16"]))
    if "bf16-compile-graphs" in outs:
        check("compiled bf16 close to eager bf16", rel(outs["bf16-compile-graphs"], outs["bf16"]) <= 1e-2,
              rel_err=rel(outs["bf16-compile-graphs"], outs["bf16"]))

    from torch.nn.attention import SDPBackend, sdpa_kernel
    try:
        with torch.no_grad(), sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            flash = fast["bf16"](x, t, y)
        check("flash attention usable (bf16)", torch.isfinite(flash).all().item())
    except RuntimeError as error:
        check("flash attention usable (bf16)", False, error=str(error).splitlines()[0][:200])

    times = {"reference": per_call(unet, (x, t, y))}
    for name in fast:
        times[name] = per_call(fast[name], (x, t, y))
    for name, seconds in times.items():
        print(f"      {name:<22} batch {args.batch}: {seconds * 1e3:8.2f} ms/call "
              f"({times['reference'] / seconds:.2f}x the reference)")
    RESULTS.append(dict(check="per-call seconds", ok=True, batch=args.batch, seconds=times))
    return fast


def check_sampling(fast_model, config, device, args) -> None:
    """Checks 3 and 4."""
    size, batch = config.image_size, args.batch
    gen = torch.Generator(device="cpu").manual_seed(1)
    gt = (torch.rand(batch, config.in_channels, size, size, generator=gen) * 2 - 1).to(device)
    mask = torch.ones(batch, 1, size, size, device=device)
    mask[..., size // 4: 3 * size // 4, :] = 0
    y = torch.arange(batch, device=device) % config.num_classes if config.class_cond else None
    model = unet_model_fn(fast_model, y)
    diffusion = Diffusion(DiffusionConfig(timestep_respacing="50", learn_sigma=config.learn_sigma), device)
    times = jump_schedule(t_T=50, jump_length=5, jump_n_sample=2)
    with torch.no_grad():
        out = repaint(model, diffusion, times, gt, mask, generators=make_generators(range(batch), device),
                      check_finite=False)
    known = mask.expand_as(gt).bool()
    check("sampling finite", torch.isfinite(out).all().item())
    check("known region exact after paste", torch.equal(out[known], gt[known]))

    previous = torch.cuda.get_sync_debug_mode()
    try:
        torch.cuda.set_sync_debug_mode("error")
        with torch.no_grad():
            for _ in repaint_iter(model, diffusion, times, gt, mask, generators=make_generators(range(batch), device)):
                pass
        check("no host-device sync in the sampling loop", True)
    except RuntimeError as error:
        check("no host-device sync in the sampling loop", False, error=str(error).splitlines()[0][:200])
    finally:
        torch.cuda.set_sync_debug_mode(previous)


def check_guidance(device, args) -> None:
    """Check 5, on the ImageNet 256 classifier architecture with random weights."""
    config = get_preset("imagenet256_classifier").config
    torch.manual_seed(0)
    with torch.device(device):
        clf = build_model(config).eval().requires_grad_(False)
    x = torch.randn(2, 3, config.image_size, config.image_size, device=device)
    t, y = torch.tensor([500, 50], device=device), torch.tensor([1, 7], device=device)
    ref = classifier_guidance(clf, y)(x, t)
    grad = classifier_guidance(accelerate(clf, Accel("bf16"), device), y)(x, t)
    check("bf16 classifier guidance gradient", torch.isfinite(grad).all().item() and rel(grad, ref) <= 1e-1,
          rel_err=rel(grad, ref))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="celeba256", help="architecture with random weights (default: %(default)s)")
    parser.add_argument("--checkpoint", help="a preset name or file: real weights instead of random ones")
    parser.add_argument("--batch", type=int, default=4, help="(default: %(default)s)")
    parser.add_argument("--compile", action="store_true", help="also check torch.compile + CUDA graphs")
    parser.add_argument("--out", default="benchmarks/results/gpu_check.json")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 2
    device = torch.device("cuda")
    unet, config = load_unet(args, device)
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, "
          f"{args.checkpoint or args.preset} ({'real' if args.checkpoint else 'random'} weights)")
    fast = check_outputs(unet, config, device, args)
    check_sampling(fast["bf16-graphs"], config, device, args)
    check_guidance(device, args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(RESULTS, indent=2, default=str))
    failed = [r["check"] for r in RESULTS if not r["ok"]]
    print(f"{len(RESULTS) - len(failed)} passed, {len(failed)} failed" + (f": {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

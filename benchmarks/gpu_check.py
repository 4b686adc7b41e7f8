"""GPU numerics of the fast execution paths (repaint.accel), the default one first; run it whenever a GPU is at hand.

    python benchmarks/gpu_check.py                         # celeba256 architecture, random weights
    python benchmarks/gpu_check.py --checkpoint celeba256  # real weights (found as `repaint` finds presets)
    python benchmarks/gpu_check.py --faces ../shared/data/utkface64/test.tar   # also the fill check on real faces

Checks, each printed PASS/FAIL (exit status 1 if any fails):
  1. every mode's output vs the float32 reference: relative error ||out - ref|| / ||ref|| under a bound
     (bf16 3e-2, fp16 / reference-fp16 1e-2; the CPU tests measure bf16 at 0.8-1.5 % on random-weight UNets),
     float32 output dtype. The modes: the default ("auto": compiled fp16 with CUDA graphs), bf16, fp16,
     reference-fp16, fp16 with CUDA graphs (which must equal fp16 without them).
  2. flash attention usable for the model's q/k/v (the call runs with SDPA restricted to the flash kernel).
  3. a short RePaint run with the default mode: no NaN/inf, known region exactly the input after the final paste.
  4. the sampling loop never synchronises host and device (torch.cuda.set_sync_debug_mode("error")).
  5. classifier guidance through a bf16 classifier: finite gradient close to the float32 one.
  6. with --faces: the bundled face model's fills (RePaint's fast schedule, the paper's six mask settings) in the
     default mode within 0.1 dB PSNR of the float32 fills, as a paired mean over faces and masks.
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
from repaint.checkpoints import resolve_checkpoint
from repaint.inpainter import unet_model_fn
from repaint.models.config import build_model
from repaint.checkpoints import get_preset, load_checkpoint
from repaint.samplers.common import classifier_guidance, make_generators
from repaint.samplers.repaint import repaint, repaint_iter
from repaint.schedule import jump_schedule

BOUNDS = {"bf16": 3e-2, "fp16": 1e-2, "reference-fp16": 1e-2, "fp32": 1e-5}
FILL_MARGIN_DB = 0.1  # the default mode's fills may differ from float32's by at most this much PSNR, on average
MODES = {
    "auto": Accel(),
    "bf16": Accel("bf16", compile=False),
    "fp16": Accel("fp16", compile=False),
    "reference-fp16": Accel("reference-fp16"),
    "fp16-graphs": Accel("fp16", compile=False, cuda_graphs=True),
}
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


def test_inputs(config, batch: int, device, seed: int = 0):
    gen = torch.Generator(device=device).manual_seed(seed)
    size = config.image_size
    x = torch.randn(batch, config.in_channels, size, size, device=device, generator=gen)
    t = torch.tensor([999, 500, 100, 0] * batch, device=device)[:batch]
    y = torch.arange(batch, device=device) % config.num_classes if config.class_cond else None
    return x, t, y


def check_outputs(unet, config, device, batch: int, modes: dict[str, Accel] | None = None,
                  fast: dict | None = None) -> dict:
    """Checks 1 and 2; returns the fast callables by mode name (``fast`` may hold some already built)."""
    modes = modes or MODES
    fast = dict(fast or {})
    x, t, y = test_inputs(config, batch, device)
    with torch.no_grad():
        ref = unet(x, t, y)
    outs = {}
    for name, accel in modes.items():
        start = time.perf_counter()
        if name not in fast:
            fast[name] = accelerate(unet, accel, device)
        with torch.no_grad():
            outs[name] = fast[name](x, t, y)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        first_call = time.perf_counter() - start
        plan = accel.resolve(device)
        bound = BOUNDS[plan.precision]
        check(f"output {name} ({plan.label()}) vs fp32", outs[name].dtype == torch.float32 and
              rel(outs[name], ref) <= bound, rel_err=rel(outs[name], ref), bound=bound,
              dtype=str(outs[name].dtype), first_call_s=first_call)
        with torch.no_grad():  # new values through the same graphs / compiled code
            again = fast[name](x.flip(0), t.flip(0), None if y is None else y.flip(0))
            ref_again = unet(x.flip(0), t.flip(0), None if y is None else y.flip(0))
        check(f"output {name} on new inputs vs fp32", rel(again, ref_again) <= bound, rel_err=rel(again, ref_again))
    if "fp16-graphs" in outs and "fp16" in outs:
        check("CUDA-graph replay equals eager fp16", rel(outs["fp16-graphs"], outs["fp16"]) <= 1e-3,
              rel_err=rel(outs["fp16-graphs"], outs["fp16"]))

    from torch.nn.attention import SDPBackend, sdpa_kernel
    try:
        with torch.no_grad(), sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            flash = accelerate(unet, Accel("fp16", compile=False), device)(x, t, y)
        check("flash attention usable (fp16)", torch.isfinite(flash).all().item())
    except RuntimeError as error:
        check("flash attention usable (fp16)", False, error=str(error).splitlines()[0][:200])
    return fast


def check_sampling(fast_model, config, device, batch: int) -> None:
    """Checks 3 and 4."""
    size = config.image_size
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
    if device.type != "cuda":
        return
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


def check_guidance(device) -> None:
    """Check 5, on the ImageNet 256 classifier architecture with random weights."""
    config = get_preset("imagenet256_classifier").config
    torch.manual_seed(0)
    with torch.device(device):
        clf = build_model(config).eval().requires_grad_(False)
    x = torch.randn(2, 3, config.image_size, config.image_size, device=device)
    t, y = torch.tensor([500, 50], device=device), torch.tensor([1, 7], device=device)
    ref = classifier_guidance(clf, y)(x, t)
    grad = classifier_guidance(accelerate(clf, Accel("bf16", compile=False), device), y)(x, t)
    check("bf16 classifier guidance gradient", torch.isfinite(grad).all().item() and rel(grad, ref) <= 1e-1,
          rel_err=rel(grad, ref))


def check_face_fills(faces: str, device, count: int = 16, accel: Accel = Accel()) -> dict:
    """Check 6: PSNR of the hole, default mode minus float32, paired over faces and the six mask settings."""
    from repaint.training.data import ImageDataset
    from repaint.masks import MASK_KINDS, make_mask
    from repaint.evaluation.metrics import mean_ci95, psnr
    from repaint.inpainter import Inpainter
    from repaint.settings import FAST

    data = ImageDataset(faces, flip=False)
    stride = len(data) // count
    gt = torch.stack([data[i * stride] for i in range(count)])
    kinds = sorted(MASK_KINDS)
    images = gt.repeat(len(kinds), 1, 1, 1)
    masks = torch.cat([torch.stack([make_mask(kind, 64, seed=i) for i in range(count)])[:, None] for kind in kinds])
    seeds = list(range(len(images)))
    fills, seconds = {}, {}
    for name, mode in (("fp32", Accel.reference()), ("default", accel)):
        inpainter = Inpainter.load("default", device=device, accel=mode)
        start = time.perf_counter()
        fills[name] = inpainter(images, masks, seeds, FAST).cpu()
        seconds[name] = time.perf_counter() - start
    hole = 1 - masks[:, 0]
    scores = {name: psnr(out.clamp(-1, 1), images, hole) for name, out in fills.items()}
    diff = scores["default"] - scores["fp32"]
    mean, half = mean_ci95(diff)
    per_kind = {kind: float(diff[i * count:(i + 1) * count].mean()) for i, kind in enumerate(kinds)}
    result = dict(fills=len(images), psnr_fp32=float(scores["fp32"].mean()),
                  psnr_default=float(scores["default"].mean()),
                  diff_db=mean, ci95_half_width_db=half, per_kind_diff_db=per_kind, seconds=seconds,
                  default_mode=accel.resolve(device).label())
    check(f"face fills, default within {FILL_MARGIN_DB} dB of fp32", abs(mean) + half <= FILL_MARGIN_DB,
          diff_db=mean, ci95=half, fills=len(images))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="celeba256", help="architecture with random weights (default: %(default)s)")
    parser.add_argument("--checkpoint", help="a preset name or file: real weights instead of random ones")
    parser.add_argument("--batch", type=int, default=4, help="(default: %(default)s)")
    parser.add_argument("--faces", help="a folder or .tar of 64x64 faces: also check the bundled model's fills")
    parser.add_argument("--out", default="benchmarks/results/gpu_check.json")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 2
    device = torch.device("cuda")
    unet, config = load_unet(args, device)
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, "
          f"{args.checkpoint or args.preset} ({'real' if args.checkpoint else 'random'} weights)")
    fast = check_outputs(unet, config, device, args.batch)
    check_sampling(fast["auto"], config, device, args.batch)
    check_guidance(device)
    if args.faces:
        check_face_fills(args.faces, device)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(RESULTS, indent=2, default=str))
    failed = [r["check"] for r in RESULTS if not r["ok"]]
    print(f"{len(RESULTS) - len(failed)} passed, {len(failed)} failed" + (f": {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""A full-size photo through the bundled model on the CPU: what the application layer adds to the network calls.

A synthetic 4000x3000 (12-megapixel) photo with one hole of a few percent goes through the same calls as ``repaint
inpaint photo.png mask.png``: read, plan, inpaint (one window), write the four full-size PNGs. Loading, fitting,
pasting and writing should take at most 2 s; the sampler's own per-step arithmetic is reported apart, and the network
time is measured by hooks around every UNet call. Peak memory is the process's maximum resident set. Results go to
benchmarks/results/photo_cpu.json.

    python benchmarks/photo.py                 # the bundled model's default schedule (230 calls)
    python benchmarks/photo.py --steps 20      # a shorter run, same overhead
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from repaint import api
from repaint.settings import resolve_settings
from repaint.samplers import describe


def synthetic_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth colour fields plus grain: compresses like a photo, not like noise or a flat image."""
    rng = np.random.default_rng(seed)
    low = Image.fromarray(rng.integers(0, 256, (height // 250, width // 250, 3), dtype=np.uint8))
    smooth = np.asarray(low.resize((width, height), Image.BICUBIC), dtype=np.int16)
    grain = rng.integers(-6, 7, (height, width, 3), dtype=np.int16)
    return np.clip(smooth + grain, 0, 255).astype(np.uint8)


def time_network_calls(unet: torch.nn.Module) -> list[float]:
    """Hooks around every forward call of ``unet``; ``[0]`` of the returned list accumulates the seconds inside."""
    network = [0.0]

    def before(module, inputs) -> None:
        network.append(time.perf_counter())

    def after(module, inputs, output) -> None:
        network[0] += time.perf_counter() - network.pop()

    unet.register_forward_pre_hook(before)
    unet.register_forward_hook(after)
    return network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--hole", type=int, default=600, help="side of the square hole in pixels")
    parser.add_argument("--steps", type=int, default=None, help="override the model's recommended T")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "photo_cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        image = synthetic_photo(args.height, args.width)
        keep = np.ones(image.shape[:2], bool)
        top, left = args.height // 3, args.width // 2
        keep[top:top + args.hole, left:left + args.hole] = False
        Image.fromarray(image).save(tmp / "photo.png", compress_level=1)
        Image.fromarray(keep.astype(np.uint8) * 255).save(tmp / "mask.png")

        inpainter = api.load_inpainter("default", device="cpu")
        settings = resolve_settings(inpainter.recommended, steps=args.steps)
        timings: dict[str, float] = {}
        start = time.perf_counter()
        photo, mask = api.read_image(tmp / "photo.png"), api.read_mask(tmp / "mask.png")
        timings["read"] = time.perf_counter() - start

        network = time_network_calls(inpainter.unet)
        start = time.perf_counter()
        layout = api.plan(inpainter, mask, "auto", settings)
        fit, windows = layout.fit, layout.windows
        result = api.inpaint(inpainter, photo, mask, settings=settings, seeds=[0])
        timings["inpaint (whole call)"] = time.perf_counter() - start
        sampled_network = network[0]
        # fitting and pasting alone: the same photo through a 2-step schedule, less its 2 network calls
        network[0] = 0.0
        start = time.perf_counter()
        api.inpaint(inpainter, photo, mask, settings=resolve_settings(settings, steps=2, jump_length=1,
                                                                       jump_n_sample=1, start_resampling=0))
        timings["fit and paste (2-step run less its network calls)"] = time.perf_counter() - start - network[0]
        network[0] = sampled_network
        start = time.perf_counter()
        api.write_result(result, tmp / "out", "photo", source=tmp / "photo.png")   # as repaint inpaint does
        timings["write"] = time.perf_counter() - start
        sizes = {p.name: p.stat().st_size for p in (tmp / "out").rglob("*.png")}

    calls = api.planned_calls(inpainter, settings, mask)
    overhead = timings["read"] + timings["inpaint (whole call)"] - network[0] + timings["write"]
    loading_fitting_writing = (timings["read"] + timings["fit and paste (2-step run less its network calls)"]
                               + timings["write"])
    record = {
        "device": f"CPU ({platform.processor() or platform.machine()}), 1 thread",
        "torch": torch.__version__,
        "photo": f"{args.width}x{args.height}",
        "hole": f"{args.hole}x{args.hole} ({args.hole ** 2 / (args.width * args.height):.1%} of the photo)",
        "fit": fit,
        "windows": [vars(w) for w in windows],
        "schedule": describe(settings),
        "network_calls": calls,
        "seconds": {k: round(v, 3) for k, v in timings.items()},
        "seconds_in_network_calls": round(network[0], 3),
        "seconds_outside_network_calls": round(overhead, 3),
        "seconds_loading_fitting_writing": round(loading_fitting_writing, 3),
        "seconds_sampler_arithmetic": round(overhead - loading_fitting_writing, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "output_png_bytes": sizes,
        "command": "python benchmarks/photo.py" + (f" --steps {args.steps}" if args.steps else ""),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()

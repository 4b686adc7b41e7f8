"""Seconds per 100 px of scratch: a thin scratch across a 12-megapixel photo, at several lengths (issue 23's goal).

A synthetic 4000x3000 photo (benchmarks/photo.py's smooth colour fields with grain) gets one horizontal scratch
``--width`` px wide and L px long for each L of ``--lengths``; each goes through ``repaint.api.inpaint`` at fit
``auto`` (for such a scratch: model-sized tiles at the photo's resolution) with what the bundled model recommends for
it (:func:`repaint.api.recommend`: for a scratch at most 8 px wide, its thin-hole setting, the mean of 8 refined
draws; ``--steps`` overrides T, to keep a run short; calls per batch scale with it, the shape of the curve does
not; ``--usual`` takes the model's usual sampler instead, as before thin holes had their own). Per length: the
plan (tiles, phases, batches, network calls), wall seconds of the inpaint call, and seconds in the network (hooks
around every UNet call). The slope of seconds against length, by least squares, is the seconds per 100 px; the
residuals say how straight the line is.

    python benchmarks/scratch_length.py --lengths 250,500,1000,2000 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from repaint import api
from repaint.samplers import describe
from repaint.settings import resolve_settings

from photo import synthetic_photo, time_network_calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="250,500,1000,2000", help="scratch lengths in px, comma-separated")
    parser.add_argument("--width", type=int, default=5, help="scratch width in px")
    parser.add_argument("--steps", type=int, default=None, help="override the model's recommended T")
    parser.add_argument("--usual", action="store_true",
                        help="the model's usual sampler, not its recommendation for a thin hole")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scratch_length.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lengths = [int(x) for x in args.lengths.split(",")]

    image = synthetic_photo(3000, 4000)
    inpainter = api.load_inpainter("default", device="cpu")
    network = time_network_calls(inpainter.unet)
    rows = []
    for length in lengths:
        keep = np.ones(image.shape[:2], bool)
        top, left = 1500, 2000 - length // 2
        keep[top:top + args.width, left:left + length] = False
        base = inpainter.recommended if args.usual else api.recommend(inpainter, keep)[0]
        settings = resolve_settings(base, steps=args.steps)
        layout = api.plan(inpainter, keep, "auto", settings)
        network[0] = 0.0
        start = time.perf_counter()
        result = api.inpaint(inpainter, image, keep, settings=settings, seeds=[0])
        seconds = time.perf_counter() - start
        assert np.array_equal(result.samples[0][keep], image[keep])
        rows.append({"length_px": length, "fit": layout.fit, "tiles": len(layout.windows),
                     "phases": len(layout.phases), "batches": layout.batches, "network_calls": layout.calls,
                     "seconds": round(seconds, 2), "seconds_in_network": round(network[0], 2)})
        print(json.dumps(rows[-1]), flush=True)
    x = np.array([r["length_px"] for r in rows], float)
    y = np.array([r["seconds"] for r in rows], float)
    slope, intercept = np.polyfit(x, y, 1)
    record = {
        "device": f"CPU ({platform.processor() or platform.machine()}), {args.threads} thread(s)",
        "load_average_at_end": os.getloadavg(),
        "torch": torch.__version__,
        "photo": "4000x3000 synthetic", "scratch_width_px": args.width, "schedule": describe(settings),
        "rows": rows,
        "seconds_per_100_px": round(100 * slope, 2), "intercept_s": round(intercept, 2),
        "largest_residual_s": round(float(np.abs(y - (slope * x + intercept)).max()), 2),
        "command": "python benchmarks/scratch_length.py --lengths " + args.lengths
                   + (f" --steps {args.steps}" if args.steps else "") + (" --usual" if args.usual else "")
                   + f" --threads {args.threads}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()

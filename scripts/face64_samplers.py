"""Every sampler against RePaint at about equal network calls on the face64 test split (issue 13, item 4).

For each of the paper's six mask settings, the same faces, masks and seeds go through each sampler; the filled
region's PSNR and SSIM are paired per face, and the difference to RePaint gets a 95 % t interval. Writes
``<out>/samplers.json``, ``<out>/samplers.md`` and a picture grid per mask setting (rows: original, masked, then one
row per sampler).

    python scripts/face64_samplers.py --faces 16                      # all six settings
    python scripts/face64_samplers.py --faces 4 --kinds narrow half   # a reduced run
    python scripts/face64_samplers.py --confirm --faces 32            # the confirmation run (docs/fidelity.md)

``--confirm`` runs the pre-registered confirmation instead: the bundled default (RePaint, fast preset, 230 calls)
against ``lanpaint`` at 46 steps (230 calls), on test faces and mask seeds disjoint from the first run's.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from repaint.masks import MASK_KINDS, make_mask
from repaint.metrics import psnr, ssim
from repaint.pipeline import Inpainter
from repaint.settings import FAST, SamplerSettings
from repaint.data import ImageDataset
from repaint.training import save_grid

ROOT = Path(__file__).resolve().parents[1]

# About 250 network evaluations per image each (copaint: 150 forward + 100 backward passes).
SAMPLERS = {
    "repaint T=25 j=5 r=10 (205 calls)": SamplerSettings(steps=25, jump_length=5, jump_n_sample=10),
    "smc T=25 K=10 (250)": SamplerSettings(steps=25, jump_length=1, jump_n_sample=1, sampler="smc",
                                           options={"particles": 10}),
    "lanpaint T=50 (250)": SamplerSettings(steps=50, sampler="lanpaint"),
    "copaint T=50 G=2 (150 + 100 backward)": SamplerSettings(steps=50, sampler="copaint"),
}
# The confirmation run (docs/fidelity.md, "Confirmation"): exactly equal calls, against what users get today.
CONFIRM = {
    "repaint fast preset T=50 j=5 r=10 start=20 (230 calls)": FAST,
    "lanpaint T=46 (230 calls)": SamplerSettings(steps=46, sampler="lanpaint"),
}
CONFIRM_MASK_SEED = 1000   # mask i of a setting is drawn with seed 1000 + i (the first run used seed i)


def _t_interval(diff: torch.Tensor) -> list[float]:
    """95 % t interval of the mean of paired differences (t quantiles for small n from a short table)."""
    n = len(diff)
    table = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 10: 2.23, 15: 2.13, 20: 2.09,
             30: 2.04}
    quantile = table[min((k for k in table if k >= n - 1), default=30)] if n > 1 else math.inf
    half = quantile * float(diff.std()) / math.sqrt(n) if n > 1 else math.inf
    return [float(diff.mean()) - half, float(diff.mean()) + half]


def confirmation_faces(path: str, count: int) -> tuple[torch.Tensor, list[str]]:
    """``count`` test faces evenly spread, none of them among the first run's 16 (asserted)."""
    from face64_evidence import test_faces

    data = ImageDataset(path, flip=False)
    stride = len(data) // count
    indices = [i * stride + stride // 2 for i in range(count)]
    first = set(test_faces(path, 16)[1])
    names = [data.names[i] for i in indices]
    assert not first & set(names), "confirmation faces overlap the first run's"
    return torch.stack([data[i] for i in indices]), names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/utkface64/test.tar"))
    parser.add_argument("--faces", type=int, default=16)
    parser.add_argument("--kinds", nargs="+", default=list(MASK_KINDS), choices=list(MASK_KINDS))
    parser.add_argument("--out", default=None, help="default: docs/face64/samplers (docs/face64/confirm)")
    parser.add_argument("--confirm", action="store_true", help="the pre-registered confirmation run")
    args = parser.parse_args()
    from face64_evidence import test_faces  # same faces as the existing evidence

    samplers = CONFIRM if args.confirm else SAMPLERS
    reference = next(iter(samplers))
    out = Path(args.out or ROOT / "docs/face64" / ("confirm" if args.confirm else "samplers"))
    out.mkdir(parents=True, exist_ok=True)
    inpainter = Inpainter.load(args.model)
    if args.confirm:
        gt, names = confirmation_faces(args.data, args.faces)
    else:
        gt, names = test_faces(args.data, args.faces)
    seeds = list(range(args.faces))
    mask_seeds = [CONFIRM_MASK_SEED + i if args.confirm else i for i in seeds]
    report = {"model": args.model, "faces": names, "mask_seeds": mask_seeds,
              "samplers": {k: v.to_dict() for k, v in samplers.items()}, "kinds": {}}
    for kind in args.kinds:
        masks = torch.stack([make_mask(kind, 64, seed=i) for i in mask_seeds])[:, None]
        hole = 1 - masks[:, 0]
        rows, scores = [gt, masks * gt], {}
        for label, settings in samplers.items():
            started = time.monotonic()
            filled = inpainter(gt, masks, seeds, settings).clamp(-1, 1)
            rows.append(filled)
            scores[label] = {"psnr": psnr(filled, gt, hole), "ssim": ssim(filled, gt, hole),
                             "seconds": time.monotonic() - started}
        save_grid(torch.cat(rows), out / f"samplers_{kind}.png", ncol=args.faces)
        entry = {}
        for label, s in scores.items():
            entry[label] = {"psnr": float(s["psnr"].mean()), "ssim": float(s["ssim"].mean()),
                            "seconds": round(s["seconds"], 1)}
            if label != reference:
                for metric in ("psnr", "ssim"):
                    diff = s[metric] - scores[reference][metric]
                    entry[label][f"{metric}_minus_repaint"] = float(diff.mean())
                    entry[label][f"{metric}_minus_repaint_ci95"] = _t_interval(diff)
        report["kinds"][kind] = entry
        print(kind, json.dumps(entry), flush=True)
        (out / "samplers.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = ["| mask | sampler | PSNR | SSIM | PSNR - RePaint [95 % CI] | SSIM - RePaint [95 % CI] |",
             "|---|---|---:|---:|---:|---:|"]
    for kind, entry in report["kinds"].items():
        for label, e in entry.items():
            d = (f"{e['psnr_minus_repaint']:+.2f} [{e['psnr_minus_repaint_ci95'][0]:+.2f}, "
                 f"{e['psnr_minus_repaint_ci95'][1]:+.2f}] | {e['ssim_minus_repaint']:+.3f} "
                 f"[{e['ssim_minus_repaint_ci95'][0]:+.3f}, {e['ssim_minus_repaint_ci95'][1]:+.3f}]"
                 if label != reference else "reference | reference")
            lines.append(f"| {kind} | {label} | {e['psnr']:.2f} | {e['ssim']:.3f} | {d} |")
    (out / "samplers.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

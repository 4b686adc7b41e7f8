"""Every sampler against RePaint at about equal network calls on the face64 test split (issue 13, item 4).

For each of the paper's six mask settings, the same faces, masks and seeds go through each sampler; the filled
region's PSNR and SSIM are paired per face, and the difference to RePaint gets a 95 % t interval. Writes
``<out>/samplers.json``, ``<out>/samplers.md`` and a picture grid per mask setting (rows: original, masked, then one
row per sampler).

    python scripts/face64_samplers.py --faces 16                      # all six settings
    python scripts/face64_samplers.py --faces 4 --kinds narrow half   # a reduced run
    python scripts/face64_samplers.py --confirm --faces 32            # the confirmation run (docs/fidelity.md)
    python scripts/face64_samplers.py --only "smc T=35" --out docs/face64/smc_scheduled   # one sampler again

``--confirm`` runs the pre-registered confirmation instead: the bundled default (RePaint, fast preset, 230 calls)
against ``lanpaint`` at 46 steps (230 calls), on test faces and mask seeds disjoint from the first run's.
``--confirm-smc`` runs issue 28's: lanpaint T=46 (now the default) against the smc settings chosen on training faces
(scripts/face64_smc_select.py), on test faces used by neither earlier run, mask seeds 2000 + i.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from repaint.masks import MASK_KINDS, make_mask
from repaint.evaluation.metrics import psnr, ssim
from repaint.inpainter import Inpainter
from repaint.settings import FAST, SamplerSettings
from repaint.training.data import ImageDataset
from repaint.training import save_grid

ROOT = Path(__file__).resolve().parents[1]

# About 250 network evaluations per image each (copaint: 150 forward + 100 backward passes).
SAMPLERS = {
    "repaint T=25 j=5 r=10 (205 calls)": SamplerSettings(steps=25, jump_length=5, jump_n_sample=10),
    "smc T=25 K=10 (250)": SamplerSettings(steps=25, jump_length=1, jump_n_sample=1, sampler="smc",
                                           options={"particles": 10, "outside": 10, "lookahead": 2.0,
                                                    "variance": 0.3}),
    # the particle schedule at about 250 calls (the ground-truth stage-4 choice); run with --only "smc T=35"
    "smc T=35 K=10 scheduled (245)": SamplerSettings(steps=35, sampler="smc", options={
        "particles": 10, "outside": 3, "lookahead": 4.0, "variance": 0.5}),
    "lanpaint T=50 (250)": SamplerSettings(steps=50, sampler="lanpaint"),
    "copaint T=50 G=2 (150 + 100 backward)": SamplerSettings(steps=50, sampler="copaint"),
}
# The confirmation run (docs/fidelity.md, "Confirmation"): exactly equal calls, against what users get today.
CONFIRM = {
    "repaint fast preset T=50 j=5 r=10 start=20 (230 calls)": FAST,
    "lanpaint T=46 (230 calls)": SamplerSettings(steps=46, sampler="lanpaint"),
}
CONFIRM_MASK_SEED = 1000   # mask i of a setting is drawn with seed 1000 + i (the first run used seed i)
# Issue 28's confirmation (docs/fidelity.md): the bundled default (lanpaint T=46) against the smc settings chosen on
# training faces, both at 230 calls; test faces used by neither earlier run, mask i drawn with seed 2000 + i.
CONFIRM_SMC = {
    "lanpaint T=46 (230 calls)": SamplerSettings(steps=46, sampler="lanpaint"),
    "smc K=5 T=46 learned variance (230 calls)": SamplerSettings(steps=46, sampler="smc", options={
        "particles": 5, "outside": 5, "lookahead": 4.0, "variance": -2.0}),
}
CONFIRM_SMC_MASK_SEED = 2000


def _t_interval(diff: torch.Tensor) -> list[float]:
    """95 % t interval of the mean of paired differences."""
    from scipy.stats import t

    n = len(diff)
    half = float(t.ppf(0.975, n - 1)) * float(diff.std()) / math.sqrt(n) if n > 1 else math.inf
    return [float(diff.mean()) - half, float(diff.mean()) + half]


def confirmation_faces(path: str, count: int, previous: int = 0) -> tuple[torch.Tensor, list[str]]:
    """``count`` test faces spread evenly over the test split with the first run's 16 taken out, and also the
    ``previous`` faces an earlier confirmation drew this way (issue 28's run: ``previous=32``)."""
    from face64_evidence import test_faces

    data = ImageDataset(path, flip=False)
    first = set(test_faces(path, 16)[1])
    if previous:
        first |= set(confirmation_faces(path, previous)[1])
    pool = [i for i, name in enumerate(data.names) if name not in first]
    indices = [pool[(2 * i + 1) * len(pool) // (2 * count)] for i in range(count)]
    return torch.stack([data[i] for i in indices]), [data.names[i] for i in indices]


def confirmation_verdict(kinds: dict, reference: str) -> dict:
    """The pre-registered rule (docs/fidelity.md): the per-face mean over the six settings of the PSNR difference
    has a 95 % interval above 0, and no setting's interval lies wholly below 0."""
    contender = next(label for label in next(iter(kinds.values())) if label != reference)
    per_kind = [torch.tensor(e[contender]["psnr_per_face"]) - torch.tensor(e[reference]["psnr_per_face"])
                for e in kinds.values()]
    composite = torch.stack(per_kind).mean(0)
    ci = _t_interval(composite)
    worse = [kind for kind, e in kinds.items() if e[contender]["psnr_minus_repaint_ci95"][1] < 0]
    return {"contender": contender, "primary": float(composite.mean()), "primary_ci95": ci, "worse": worse,
            "switch": ci[0] > 0 and not worse}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/utkface64/test.tar"))
    parser.add_argument("--faces", type=int, default=16)
    parser.add_argument("--kinds", nargs="+", default=list(MASK_KINDS), choices=list(MASK_KINDS))
    parser.add_argument("--out", default=None, help="default: docs/face64/samplers (docs/face64/confirm)")
    parser.add_argument("--confirm", action="store_true", help="the pre-registered confirmation run")
    parser.add_argument("--confirm-smc", action="store_true",
                        help="issue 28's pre-registered run: lanpaint (the default) against smc")
    parser.add_argument("--only", nargs="+", default=None, metavar="LABEL",
                        help="run only the samplers whose label starts with one of these (and the reference)")
    args = parser.parse_args()
    from face64_evidence import test_faces  # same faces as the existing evidence

    samplers = CONFIRM_SMC if args.confirm_smc else CONFIRM if args.confirm else SAMPLERS
    if args.only:
        samplers = {label: v for i, (label, v) in enumerate(samplers.items())
                    if i == 0 or any(label.startswith(prefix) for prefix in args.only)}
    reference = next(iter(samplers))
    out = Path(args.out or ROOT / "docs/face64" / ("confirm_smc" if args.confirm_smc else
                                                   "confirm" if args.confirm else "samplers"))
    out.mkdir(parents=True, exist_ok=True)
    inpainter = Inpainter.load(args.model)
    if args.confirm or args.confirm_smc:
        gt, names = confirmation_faces(args.data, args.faces, previous=32 if args.confirm_smc else 0)
    else:
        gt, names = test_faces(args.data, args.faces)
    seeds = list(range(args.faces))
    first_mask = CONFIRM_SMC_MASK_SEED if args.confirm_smc else CONFIRM_MASK_SEED if args.confirm else 0
    mask_seeds = [first_mask + i for i in seeds]
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
                            "seconds": round(s["seconds"], 1), "psnr_per_face": s["psnr"].tolist()}
            if label != reference:
                for metric in ("psnr", "ssim"):
                    diff = s[metric] - scores[reference][metric]
                    entry[label][f"{metric}_minus_repaint"] = float(diff.mean())
                    entry[label][f"{metric}_minus_repaint_ci95"] = _t_interval(diff)
        report["kinds"][kind] = entry
        print(kind, json.dumps(entry), flush=True)
        (out / "samplers.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"| mask | sampler | PSNR | SSIM | PSNR - {reference} [95 % CI] | SSIM - {reference} [95 % CI] |",
             "|---|---|---:|---:|---:|---:|"]
    for kind, entry in report["kinds"].items():
        for label, e in entry.items():
            d = (f"{e['psnr_minus_repaint']:+.2f} [{e['psnr_minus_repaint_ci95'][0]:+.2f}, "
                 f"{e['psnr_minus_repaint_ci95'][1]:+.2f}] | {e['ssim_minus_repaint']:+.3f} "
                 f"[{e['ssim_minus_repaint_ci95'][0]:+.3f}, {e['ssim_minus_repaint_ci95'][1]:+.3f}]"
                 if label != reference else "reference | reference")
            lines.append(f"| {kind} | {label} | {e['psnr']:.2f} | {e['ssim']:.3f} | {d} |")
    if (args.confirm or args.confirm_smc) and set(report["kinds"]) == set(MASK_KINDS):
        report["verdict"] = confirmation_verdict(report["kinds"], reference)
        (out / "samplers.json").write_text(json.dumps(report, indent=1) + "\n")
        v = report["verdict"]
        lines += ["", f"Primary (mean over the six settings of the per-face PSNR difference, n = {args.faces}): "
                  f"{v['primary']:+.2f} dB [{v['primary_ci95'][0]:+.2f}, {v['primary_ci95'][1]:+.2f}]; settings "
                  f"shown worse: {', '.join(v['worse']) or 'none'}; switch: {'yes' if v['switch'] else 'no'}."]
    (out / "samplers.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

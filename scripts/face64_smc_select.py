"""Choose `smc` settings for the bundled face model on TRAINING faces (issue 28; rule in docs/fidelity.md).

Every candidate costs 230 network calls per image (every particle's call counted), as lanpaint T=46 does. The same
training faces, masks and seeds go through each; the filled region's PSNR is recorded per face. Writes
``<out>/select.json`` and a picture grid per mask setting (rows: original, masked, then one per candidate).

    python scripts/face64_smc_select.py --faces 4             # the selection (docs/face64/smc_select)
    python scripts/face64_smc_select.py --faces 4 --explore   # afterwards: the replace proposal (smc_explore)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from repaint.evaluation.metrics import psnr
from repaint.inpainter import Inpainter
from repaint.masks import MASK_KINDS, make_mask
from repaint.samplers.smc import network_calls
from repaint.settings import SamplerSettings
from repaint.training import save_grid
from repaint.training.data import ImageDataset

ROOT = Path(__file__).resolve().parents[1]
SELECT_MASK_SEED = 600   # mask i drawn with seed 600 + i (the diagnosis used 500 + i)


def _smc(steps: int, k: int, **options) -> SamplerSettings:
    """smc with a fixed count of k particles over all steps and the model's own (learned) kernel variance."""
    return SamplerSettings(steps=steps, sampler="smc", options={
        "particles": k, "outside": k, "lookahead": 4.0, "variance": -2.0, **options})


CANDIDATES = {   # 230 calls per image each
    "lanpaint T=46": SamplerSettings(steps=46, sampler="lanpaint"),
    "smc K=10 T=23 learned": _smc(23, 10),
    "smc K=5 T=46 learned": _smc(46, 5),
    "smc K=2 T=115 learned": _smc(115, 2),
    "smc K=1 T=230 learned": _smc(230, 1),
}
# After the selection and the confirmation rule, not part of either (docs/fidelity.md): the replace proposal that the
# diagnosis suggested, on the same training faces; run with --explore.
EXPLORE = {
    "smc K=5 T=46 learned replace": _smc(46, 5, replace=1),
    "smc K=10 T=23 learned replace": _smc(23, 10, replace=1),
}
for _label, _s in {**CANDIDATES, **EXPLORE}.items():
    assert _s.sampler != "smc" or network_calls(_s, _s.steps) == 230, _label


def selection_faces(path: str, count: int) -> tuple[torch.Tensor, list[str]]:
    """``count`` training faces spread over the split, offset from the diagnosis's faces."""
    data = ImageDataset(path, flip=False)
    indices = [i * len(data) // count + 7 for i in range(count)]
    return torch.stack([data[i] for i in indices]), [data.names[i] for i in indices]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/utkface64/train.tar"))
    parser.add_argument("--faces", type=int, default=4)
    parser.add_argument("--kinds", nargs="+", default=["wide", "super_resolve_2x", "half"], choices=list(MASK_KINDS))
    parser.add_argument("--only", nargs="+", default=None, help="candidate labels to run (default: all)")
    parser.add_argument("--explore", action="store_true", help="run EXPLORE instead of CANDIDATES")
    parser.add_argument("--out", default=None, help="default: docs/face64/smc_select (smc_explore)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out or ROOT / "docs/face64" / ("smc_explore" if args.explore else "smc_select"))
    out.mkdir(parents=True, exist_ok=True)
    inpainter = Inpainter.load("default")
    gt, names = selection_faces(args.data, args.faces)
    seeds = list(range(args.faces))
    pool = EXPLORE if args.explore else CANDIDATES
    candidates = {k: v for k, v in pool.items() if not args.only or k in args.only}
    report = {"faces": names, "mask_seeds": [SELECT_MASK_SEED + i for i in seeds],
              "candidates": {k: v.to_dict() for k, v in candidates.items()}, "kinds": {}}
    for kind in args.kinds:
        masks = torch.stack([make_mask(kind, 64, seed=SELECT_MASK_SEED + i) for i in seeds])[:, None]
        rows, entry = [gt, masks * gt], {}
        for label, settings in candidates.items():
            started = time.monotonic()
            filled = inpainter(gt, masks, seeds, settings).clamp(-1, 1)
            rows.append(filled)
            score = psnr(filled, gt, 1 - masks[:, 0])
            entry[label] = {"psnr": float(score.mean()), "psnr_per_face": score.tolist(),
                            "seconds": round(time.monotonic() - started, 1)}
            print(kind, label, json.dumps(entry[label]), flush=True)
        report["kinds"][kind] = entry
        save_grid(torch.cat(rows), out / f"select_{kind}.png", ncol=args.faces)
        (out / "select.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

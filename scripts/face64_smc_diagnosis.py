"""Why `smc` speckles on the bundled face model (issue 28): particles, ESS per step, kernel variance against the
model's learned one, on a few TRAINING faces (never test faces).

    python scripts/face64_smc_diagnosis.py --faces 4 --out docs/face64/smc_diagnosis

For each configuration in CONFIGS it runs ``smc`` through the library unchanged and records, per step: the ESS of
each image's weights before resampling (``samplers.smc._resample`` is wrapped), the kernel variance smc uses, the
variance the network itself predicts (its learned-range output, improved DDPM eq. 15) and the range (max - min) of
each image's log-weights across its particles. Writes ``diagnosis.json``, the fills per configuration
(``fills_KIND.png``: rows original, masked, then one per configuration) and the particles of the first image at
steps 12, 22 and 31 (``particles_KIND_CONFIG.png``, one row per step). ``--plot`` then draws ``ess.png`` (ESS / K per
step), ``ess.md`` (a table) and ``zoom_wide.png`` (the first two faces of ``fills_wide.png``, 4x) from those files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import repaint.samplers.smc as smc_module
from repaint.evaluation.metrics import psnr
from repaint.inpainter import Inpainter, unet_model_fn
from repaint.masks import make_mask
from repaint.settings import SamplerSettings
from repaint.training import save_grid
from repaint.training.data import ImageDataset

ROOT = Path(__file__).resolve().parents[1]
STEPS = 35


def _smc(**options) -> SamplerSettings:
    return SamplerSettings(steps=STEPS, sampler="smc", options={"particles": 10, "outside": 3, **options})


CONFIGS = {   # the face run's choice (docs/fidelity.md, "smc again"), then one change at a time
    "v=0.5 la=4": _smc(lookahead=4.0, variance=0.5),
    "v=-1 la=4": _smc(lookahead=4.0, variance=-1.0),
    "learned la=4": _smc(lookahead=4.0, variance=-2.0),
    "learned la=0": _smc(lookahead=0.0, variance=-2.0),
    # the selection's choice (scripts/face64_smc_select.py); run alone with --only, --out .../drift
    "selected K=5 T=46": SamplerSettings(steps=46, sampler="smc", options={
        "particles": 5, "outside": 5, "lookahead": 4.0, "variance": -2.0}),
    "selected K=5 T=46 replace": SamplerSettings(steps=46, sampler="smc", options={
        "particles": 5, "outside": 5, "lookahead": 4.0, "variance": -2.0, "replace": 1}),
}


def training_faces(path: str, count: int) -> tuple[torch.Tensor, list[str]]:
    """``count`` faces spread evenly over the training split (never the test split)."""
    data = ImageDataset(path, flip=False)
    indices = [(2 * i + 1) * len(data) // (2 * count) for i in range(count)]
    return torch.stack([data[i] for i in indices]), [data.names[i] for i in indices]


class Recorder:
    """Wraps the model (inputs, learned variance) and smc's resampler (ESS) for one run."""

    def __init__(self, model, diffusion, keep_steps, gt, mask):
        self.model, self.diffusion, self.keep_steps = model, diffusion, set(keep_steps)
        self.steps = diffusion.num_timesteps
        self.gt, self.mask = gt, mask.expand_as(gt)
        self.ess, self.spread, self.learned_var, self.particles, self.step = [], [], [], {}, 0
        self.drift = []   # mean over known pixels of (x_t - sqrt(abar_t) y)^2 / (1 - abar_t): 1 under q(x_t | y)
        self._resample = smc_module._resample

    def model_fn(self, x, model_t):
        out = self.model(x, model_t)
        if out.shape[1] == 2 * x.shape[1]:
            t = torch.full((x.shape[0],), self.steps - 1 - self.step, dtype=torch.int64)
            var = self.diffusion.p_mean_variance(out, x, t, False)["variance"]
            self.learned_var.append(float(var.mean()))
        k, t = x.shape[0] // self.gt.shape[0], self.steps - 1 - self.step
        abar = float(self.diffusion.tables64["alphas_cumprod"][t])
        y, known = self.gt.repeat_interleave(k, 0), self.mask.repeat_interleave(k, 0)
        self.drift.append(float((((x - abar ** 0.5 * y) ** 2 / (1 - abar)) * known).sum() / known.sum()))
        if self.step in self.keep_steps:
            self.particles[self.step] = x.clone()
        self.step += 1
        return out

    def resample(self, logw, generators, threshold, count):
        probs = torch.softmax(logw, dim=1)
        self.ess.append((1.0 / (probs * probs).sum(1) / logw.shape[1]).tolist())
        self.spread.append((logw.max(1).values - logw.min(1).values).tolist())
        return self._resample(logw, generators, threshold, count)


@torch.no_grad()
def run(inpainter, gt, masks, seeds, settings, keep_steps):
    diffusion = inpainter.diffusion(settings)
    recorder = Recorder(unet_model_fn(inpainter.network()), diffusion, keep_steps, gt, masks)
    from repaint.samplers.common import make_generators

    smc_module._resample = recorder.resample
    try:
        filled = smc_module.smc(recorder.model_fn, diffusion, gt, masks, settings=settings,
                                generators=make_generators(seeds, gt.device))
    finally:
        smc_module._resample = recorder._resample
    fixed = []
    for t in range(settings.steps - 1, -1, -1):
        v = settings.options["variance"]
        frac = (v + 1) / 2
        fixed.append(float(torch.exp(frac * diffusion.log_betas[t] + (1 - frac)
                                     * diffusion.posterior_log_variance_clipped[t])) if v != -2 else None)
    return filled, recorder, fixed


def plot(out: Path) -> None:
    """ess.png, ess.md and zoom_wide.png from diagnosis.json and fills_wide.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    runs = json.loads((out / "diagnosis.json").read_text())["runs"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    lines = ["| run | PSNR (4 faces) | mean ESS / K, window steps 12-31 | mean ESS / K, other steps | "
             "kernel var / learned var at t = 2, 1 (the last noise added) |", "|---|---:|---:|---:|---|"]
    for label, r in runs.items():
        ess = [sum(e) / len(e) for e in r["ess_over_k"]]
        ax.plot(range(len(ess)), ess, marker=".", label=label)
        ratio = ("learned" if r["kernel_var"][0] is None else
                 " / ".join(f"{k / v:.2f}" for k, v in zip(r["kernel_var"][-3:-1], r["learned_var"][-3:-1])))
        inside, outside = ess[12:32], ess[:12] + ess[32:]
        name, score = label.replace(" | ", ", "), sum(r["psnr"]) / len(r["psnr"])
        lines.append(f"| {name} | {score:.2f} | {sum(inside) / len(inside):.2f} | "
                     f"{sum(outside) / len(outside):.2f} | {ratio} |")
    floor = [1 / 3] * 12 + [1 / 10] * 20 + [1 / 3] * 3
    ax.plot(range(len(floor)), floor, "k--", lw=0.8, label="1 / K (all weight on one particle)")
    ax.set(xlabel="step (0 = noisiest)", ylabel="ESS / K before resampling", ylim=(0, 1.05),
           title="smc on the face model: ESS per step (K = 10 in steps 12-31, 3 elsewhere)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "ess.png", dpi=90)
    (out / "ess.md").write_text("\n".join(lines) + "\n")
    grid = Image.open(out / "fills_wide.png")
    zoom = grid.crop((0, 0, 2 * 66, grid.size[1]))
    zoom.resize((zoom.size[0] * 4, zoom.size[1] * 4), Image.NEAREST).save(out / "zoom_wide.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/utkface64/train.tar"))
    parser.add_argument("--faces", type=int, default=4)
    parser.add_argument("--kinds", nargs="+", default=["wide", "super_resolve_2x"])
    parser.add_argument("--only", nargs="+", default=None, help="configuration labels to run (default: all)")
    parser.add_argument("--out", default=str(ROOT / "docs/face64/smc_diagnosis"))
    parser.add_argument("--plot", action="store_true", help="only draw ess.png, ess.md, zoom_wide.png")
    args = parser.parse_args()
    if args.plot:
        return plot(Path(args.out))
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    inpainter = Inpainter.load("default")
    gt, names = training_faces(args.data, args.faces)
    seeds = list(range(args.faces))
    configs = {k: v for k, v in CONFIGS.items() if not args.only or k in args.only}
    keep = [12, 22, 31]   # inside the particle window (steps 12..31 of 35)
    report = {"faces": names, "configs": {k: v.to_dict() for k, v in configs.items()}, "runs": {}}
    for kind in args.kinds:
        masks = torch.stack([make_mask(kind, 64, seed=500 + i) for i in seeds])[:, None]
        rows = [gt, masks * gt]
        for label, settings in configs.items():
            filled, rec, fixed = run(inpainter, gt, masks, seeds, settings, keep)
            filled = filled.clamp(-1, 1)
            rows.append(filled)
            score = psnr(filled, gt, 1 - masks[:, 0])
            report["runs"][f"{kind} | {label}"] = {
                "psnr": score.tolist(), "ess_over_k": rec.ess, "logw_range": rec.spread, "known_drift": rec.drift,
                "learned_var": rec.learned_var, "kernel_var": fixed}
            first = torch.stack([rec.particles[s].view(args.faces, -1, *gt.shape[1:])[0] for s in keep])
            save_grid(first.flatten(0, 1).clamp(-1, 1), out / f"particles_{kind}_{label.replace(' ', '_')}.png",
                      ncol=first.shape[1])
            print(kind, label, f"psnr {float(score.mean()):.2f}", flush=True)
            (out / "diagnosis.json").write_text(json.dumps(report, indent=1) + "\n")
        save_grid(torch.cat(rows), out / f"fills_{kind}.png", ncol=args.faces)


if __name__ == "__main__":
    main()

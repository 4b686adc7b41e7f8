"""Evidence for the bundled face model: inpainting grids for the paper's six mask settings, PSNR/SSIM of the filled
region, samples from pure noise and the training curve. Writes docs/face64/*.png and docs/face64/metrics.json.

    python scripts/face64_evidence.py          # the bundled model, 16 test faces, the CLI default T=50 j=5 r=5
    python scripts/face64_evidence.py --faces 4 --steps 10 --out /tmp/ev  # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from repaint.training.data import ImageDataset
from repaint.masks import MASK_KINDS, make_mask
from repaint.evaluation.metrics import psnr, ssim
from repaint.inpainter import Inpainter
from repaint.settings import SamplerSettings
from repaint.training import sample, save_grid

ROOT = Path(__file__).resolve().parents[1]
METRIC_KINDS = ("narrow", "every_second_line")


def harmonic_fill(gt: torch.Tensor, mask: torch.Tensor, iterations: int = 300) -> torch.Tensor:
    """A classical baseline: unknown pixels relaxed to the mean of their 3x3 neighbours (Laplace equation)."""
    x = mask * gt
    for _ in range(iterations):
        blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        x = mask * gt + (1 - mask) * blurred
    return x


def test_faces(path: str, count: int) -> tuple[torch.Tensor, list[str]]:
    data = ImageDataset(path, flip=False)
    stride = len(data) // count
    indices = [i * stride for i in range(count)]
    return torch.stack([data[i] for i in indices]), [data.names[i] for i in indices]


def triptych(gt: torch.Tensor, mask: torch.Tensor, filled: torch.Tensor, path: Path) -> None:
    """Rows: original, masked (hole in grey), filled."""
    masked = mask * gt + (1 - mask) * torch.zeros_like(gt)
    save_grid(torch.cat([gt, masked, filled]), path, ncol=gt.shape[0])


def example_strip(inpainter: Inpainter, settings: SamplerSettings, path: Path, samples: int = 4) -> None:
    """examples/face.png masked, ``samples`` fills (seeds 0, 1, ...) and the original, in one row."""
    from repaint.masks import load_mask

    face = ImageDataset(ROOT / "examples", flip=False)
    gt = face[face.names.index(str(ROOT / "examples" / "face.png"))][None]
    mask = load_mask(ROOT / "examples" / "face_mask.png")[None, None]
    filled = inpainter(gt.expand(samples, -1, -1, -1), mask.expand(samples, -1, -1, -1), list(range(samples)), settings)
    save_grid(torch.cat([mask * gt, filled, gt]), path, ncol=samples + 2)


def region_scores(gt: torch.Tensor, out: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    hole = 1 - mask[:, 0]
    out = out.clamp(-1, 1)
    return {"psnr": float(psnr(out, gt, hole).mean()), "ssim": float(ssim(out, gt, hole).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/utkface64/test.tar"))
    parser.add_argument("--faces", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50, help="respaced steps T")
    parser.add_argument("--jump-length", type=int, default=5)
    parser.add_argument("--jump-n-sample", type=int, default=10)
    parser.add_argument("--start-resampling", type=int, default=20)
    parser.add_argument("--sample-steps", type=int, default=100, help="DDPM steps of the pure-noise samples")
    parser.add_argument("--log", default=str(ROOT / "runs/face64/log.jsonl"), help="training log for the curve")
    parser.add_argument("--out", default=str(ROOT / "docs/face64"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)

    inpainter = Inpainter.load(args.model)
    settings = SamplerSettings(steps=args.steps, jump_length=args.jump_length, jump_n_sample=args.jump_n_sample,
                               start_resampling=args.start_resampling)
    gt, names = test_faces(args.data, args.faces)
    seeds = list(range(args.faces))
    report = {"model": args.model, "faces": names, "settings": settings.to_dict(), "kinds": {}}
    for kind in MASK_KINDS:
        masks = torch.stack([make_mask(kind, 64, seed=i) for i in seeds])[:, None]
        started = time.monotonic()
        filled = inpainter(gt, masks, seeds, settings)
        seconds = time.monotonic() - started
        triptych(gt, masks, filled, out / f"inpaint_{kind}.png")
        entry = {"seconds": round(seconds, 1), "fill_fraction": float(1 - masks.mean())}
        if kind in METRIC_KINDS:
            plain = inpainter(gt, masks, seeds, replace(settings, jump_n_sample=1))
            entry["repaint"] = region_scores(gt, filled, masks)
            entry["no_resampling"] = region_scores(gt, plain, masks)
            entry["harmonic_fill_baseline"] = region_scores(gt, harmonic_fill(gt, masks), masks)
        report["kinds"][kind] = entry
        print(kind, json.dumps(entry), flush=True)

    example_strip(inpainter, settings, out / "example.png")
    unet = inpainter.unet.eval()
    noise_samples = sample(lambda x, t: unet(x, t), inpainter.trained, (16, 3, 64, 64), args.sample_steps, seed=0)
    save_grid(noise_samples, out / "samples.png", ncol=8)
    report["samples"] = {"count": 16, "ddpm_steps": args.sample_steps, "seed": 0}
    if Path(args.log).exists():
        report["training_curve"] = plot_curve(Path(args.log), out / "training_loss.png")
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


def plot_curve(log: Path, path: Path) -> dict[str, float]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    steps = np.array([r["step"] for r in rows])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, key, label in ((axes[0], "mse", "L_simple (eps MSE)"), (axes[1], "vb", "L_t (bits/dim)")):
        values = np.array([r[key] for r in rows])
        ax.plot(steps, values, lw=0.6, alpha=0.5)
        k = min(20, len(values))
        ax.plot(steps[k - 1:], np.convolve(values, np.ones(k) / k, mode="valid"), lw=1.5)
        ax.set_yscale("log")
        ax.set_xlabel("step (batch 8)")
        ax.set_title(label)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    last = [r for r in rows if r["step"] > steps[-1] - 1000]
    return {"final_step": int(steps[-1]), "final_loss_mean_last_1000_steps": float(np.mean([r["loss"] for r in last])),
            "final_mse_mean_last_1000_steps": float(np.mean([r["mse"] for r in last])),
            "training_minutes_last_chunk": float(rows[-1]["minutes"])}


if __name__ == "__main__":
    main()

"""Unconditional samples of a model under training, and the PNG grid they are shown in."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..diffusion import Diffusion, DiffusionConfig
from ..models.config import DiffusionSettings

__all__ = ["sample", "save_grid"]


@torch.no_grad()
def sample(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    trained: DiffusionSettings,
    shape: tuple[int, int, int, int],
    steps: int = 50,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Ancestral DDPM sampling from pure noise over ``steps`` respaced steps (DDPM Alg. 2): [B, C, H, W] in [-1, 1]."""
    diffusion = Diffusion(
        DiffusionConfig(trained.steps, trained.noise_schedule, str(steps), trained.learn_sigma), device
    )
    generator = torch.Generator(device).manual_seed(seed)
    x = torch.randn(shape, generator=generator, device=device)
    for i in reversed(range(diffusion.num_timesteps)):
        t = torch.full((shape[0],), i, dtype=torch.int64, device=device)
        out = diffusion.p_mean_variance(model(x, diffusion.model_timesteps(t)).float(), x, t)
        noise = torch.randn(shape, generator=generator, device=device)
        x = out["mean"] + (i > 0) * torch.exp(0.5 * out["log_variance"]) * noise
    return x.clamp(-1, 1)


def save_grid(images: torch.Tensor, path: str | os.PathLike, ncol: int = 8, gap: int = 2) -> Path:
    """Write [N, 3, H, W] images in [-1, 1] as one PNG grid (white gaps); returns the path."""
    n, _, h, w = images.shape
    ncol = min(ncol, n)
    nrow = -(-n // ncol)
    canvas = np.full((nrow * (h + gap) - gap, ncol * (w + gap) - gap, 3), 255, dtype=np.uint8)
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    for i, image in enumerate(pixels.permute(0, 2, 3, 1).numpy()):
        r, c = divmod(i, ncol)
        canvas[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = image
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)
    return path



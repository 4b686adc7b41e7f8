"""A tiny model file and image folder for the evaluation tests (kept out of conftest: only three modules use it)."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from repaint.settings import SamplerSettings
from repaint.models.config import DiffusionSettings, UNetConfig, build_model
from repaint.checkpoints import save_checkpoint

SIZE = 32  # LPIPS's AlexNet needs at least 31 x 31
TINY = UNetConfig(image_size=SIZE, model_channels=32, num_res_blocks=1, attention_resolutions=(8,),
                  channel_mult=(1, 2), learn_sigma=True)
FAST = SamplerSettings(steps=5, jump_length=1, jump_n_sample=1)


def tiny_model(path: Path) -> Path:
    """A seeded random UNet with every weight perturbed (its zero-initialised output layer included)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_model(TINY)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return save_checkpoint(net, TINY, path, diffusion=DiffusionSettings(steps=100))


def image_folder(folder: Path, n: int = 3, size: int = SIZE) -> Path:
    """``n`` smooth random RGB PNGs named img0.png, img1.png, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        low = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(low).resize((size, size), Image.BILINEAR).save(folder / f"img{i}.png")
    return folder

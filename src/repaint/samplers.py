"""The sampler table: every sampler there is, by name, with its cost in network calls.

A sampler is a function ``fn(model, diffusion, gt, mask, *, settings, generators, cond_fn=None, callback=None)``
returning the inpainted batch [B, C, H, W]; ``model(x, model_t)`` is any denoiser (see :mod:`repaint.sampler`),
``settings`` a :class:`repaint.settings.SamplerSettings` whose ``sampler`` field names the entry. ``calls(settings,
num_timesteps)`` is the number of network calls one sample costs, so a front end can say it before sampling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import copaint, lanpaint, smc
from .fast_samplers import ddim_repaint, ddnm
from .sampler import repaint
from .schedule import count_network_calls
from .sdedit import sdedit_repeat, sdedit_settings_schedule
from .settings import SamplerSettings

__all__ = ["Sampler", "SAMPLERS", "get_sampler", "network_calls", "sample_repaint"]

SamplerFn = Callable[..., torch.Tensor]


def sample_repaint(model, diffusion, gt, mask, *, settings, generators, cond_fn=None, callback=None):
    """RePaint with the jump schedule (Lugmayr et al. 2022, Alg. 1 with resampling)."""
    if settings.options:
        raise ValueError(f"sampler 'repaint' has no option(s) {', '.join(sorted(settings.options))}")
    times = settings.jump_schedule(diffusion.num_timesteps).times()
    return repaint(
        model, diffusion, times, gt, mask, generators=generators, cond_fn=cond_fn, callback=callback,
        clip_denoised=settings.clip_denoised, injection=settings.injection, paste_known=settings.paste_known,
    )


def _jump_calls(settings: SamplerSettings, num_timesteps: int) -> int:
    return settings.jump_schedule(num_timesteps).network_calls()


def _sdedit_calls(settings: SamplerSettings, num_timesteps: int) -> int:
    return count_network_calls(sdedit_settings_schedule(settings, num_timesteps))


@dataclass(frozen=True)
class Sampler:
    run: SamplerFn
    calls: Callable[[SamplerSettings, int], int]   # network calls per sample at a respaced length
    summary: str


SAMPLERS: dict[str, Sampler] = {
    "repaint": Sampler(sample_repaint, _jump_calls, "the paper's RePaint: DDPM steps, jump schedule"),
    "ddim_repaint": Sampler(ddim_repaint, _jump_calls, "RePaint's join with DDIM(eta) steps, same jump schedule"),
    "ddnm": Sampler(ddnm, _jump_calls, "DDNM null-space projection with time travel"),
    "sdedit_repeat": Sampler(sdedit_repeat, _sdedit_calls, "Table 4: denoise to T/2, then re-noise and repeat"),
    "smc": Sampler(smc.smc, smc.network_calls, "twisted SMC, K particles per image mid-chain; asymptotically exact"),
    "lanpaint": Sampler(lanpaint.lanpaint, lanpaint.network_calls, "LanPaint: Langevin inner steps, no gradients"),
    "copaint": Sampler(copaint.copaint, copaint.network_calls, "CoPaint: gradient steps on x_t, then DDIM"),
}


def _entry(name: str) -> Sampler:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; available: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def get_sampler(name: str) -> SamplerFn:
    """The sampling function of ``name``; one-line ValueError naming the choices if there is none."""
    return _entry(name).run


def network_calls(settings: SamplerSettings, num_timesteps: int) -> int:
    """Network calls one sample of ``settings`` costs on a diffusion respaced to ``num_timesteps`` steps."""
    return _entry(settings.sampler).calls(settings, num_timesteps)

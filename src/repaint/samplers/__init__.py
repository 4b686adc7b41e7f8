"""The sampler table: every sampler there is, by name, one module each.

A sampler module defines its sampling function and a :class:`~repaint.samplers.common.Sampler` entry (the function,
its cost in network calls, a one-line summary, which settings it reads, its options with their defaults); the table
below names them. A new sampler is one module and one line here. The contract every sampler keeps (the model
callable, the settings, per-image generators, the step callback) is in :mod:`repaint.samplers.common`.

The classical baselines (``biharmonic``, ``telea``, ``ns``) are rows too: their entry carries a ``fill`` over the
full-size photo and costs zero network calls, so ``--sampler telea`` works wherever a sampler name does
(:mod:`repaint.samplers.classical`). ``refine`` starts from one of them (the row's ``prefill``) and denoises from an
intermediate step (:mod:`repaint.samplers.refine`).
"""

from __future__ import annotations

from . import classical, copaint, lanpaint, refine, repaint, sdedit, smc, time_travel
from .common import (
    CondFn, ModelFn, Sampler, SamplerFn, SamplingError, Step, classifier_guidance, make_generators, randn, run_steps,
)

__all__ = [
    "SAMPLERS", "Sampler", "SamplerFn", "ModelFn", "CondFn", "SamplingError", "Step", "get_sampler", "describe",
    "network_calls", "entry", "make_generators", "randn", "classifier_guidance", "run_steps",
]

SAMPLERS: dict[str, Sampler] = {
    "repaint": repaint.SAMPLER,
    "ddim_repaint": time_travel.DDIM_REPAINT,
    "ddnm": time_travel.DDNM,
    "sdedit_repeat": sdedit.SAMPLER,
    "smc": smc.SAMPLER,
    "lanpaint": lanpaint.SAMPLER,
    "copaint": copaint.SAMPLER,
    "refine": refine.SAMPLER,               # a classical fill noised to an intermediate step, then denoised
    "biharmonic": classical.BIHARMONIC,     # classical baselines: no model, the photo at its own resolution
    "telea": classical.TELEA,
    "ns": classical.NS,
}


def entry(name: str) -> Sampler:
    """The table row of ``name``; one-line ValueError naming the choices if there is none."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; available: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def get_sampler(name: str) -> SamplerFn:
    """The sampling function of ``name``."""
    return entry(name).run


def network_calls(settings, num_timesteps: int) -> int:
    """Network calls one sample of ``settings`` costs on a diffusion respaced to ``num_timesteps`` steps."""
    return entry(settings.sampler).calls(settings, num_timesteps)


def describe(settings) -> str:
    """One line: the sampler and the settings it reads (jump fields only for samplers that walk the jump schedule,
    eta only for those that read it), e.g. ``repaint steps=250 jump_length=10 jump_n_sample=10``."""
    row = entry(settings.sampler)
    if row.fill is not None:
        return f"{settings.sampler} (classical fill at the photo's own resolution, no model)"
    parts = [settings.sampler, f"steps={settings.respacing()}"]
    if row.reads_jumps:
        parts += [f"jump_length={settings.jump_length}", f"jump_n_sample={settings.jump_n_sample}"]
        if settings.start_resampling < 100_000_000:
            parts.append(f"start_resampling={settings.start_resampling}")
    if row.reads_eta:
        parts.append(f"eta={settings.eta:g}")
    parts += [f"{k}={v}" for k, v in sorted(settings.options.items())]
    if settings.average > 1:
        parts.append(f"average={settings.average}")
    return " ".join(parts)

"""Refine a classical fill: start the hole from a classical fill noised to an intermediate step, then denoise
(SDEdit, Meng et al. 2022, with RePaint's known-region joining, Lugmayr et al. 2022, Alg. 1).

A thin defect (a scratch, dust, a caption) is mostly filled well by a classical fill; what it lacks is texture. So
instead of the whole chain from pure noise, the chain starts at ``t0 = round(start * T)``:

* ``x0_init``: the classical fill of option ``init`` (``biharmonic``, ``telea`` or ``ns``,
  :mod:`repaint.samplers.classical`) in the hole, the known pixels elsewhere;
* ``x_{t0-1} ~ q(x_{t0-1} | x0_init)`` (DDPM eq. 4), one draw from the image's generator;
* the RePaint loop (:func:`repaint.samplers.repaint.repaint`) from ``t0 - 1`` to ``-1``: the known pixels replaced by
  the ground truth noised to the level of each step, the hole from the model. With ``resample`` r > 1 the walk
  resamples as the paper's jump schedule does (jump length ``min(10, t0 - 1)``, r passes).

``start = 0`` returns the classical fill itself (no network call). Cost: ``t0`` network calls per image without
resampling (:func:`network_calls`).

The classical fill is cheapest and best at the photo's own resolution: :func:`repaint.api.inpaint` runs it once on
the whole photo (the row's ``prefill``) and passes each window's view of the filled photo as ``init``. Called on a
batch without ``init`` (e.g. :class:`repaint.inpainter.Inpainter` directly), the fill runs here on the batch.
"""

from __future__ import annotations

import torch

from ..schedule import JumpSchedule
from .classical import biharmonic_fill, classical_run, ns_fill, telea_fill
from .common import Sampler, as_batch_mask, noise_source
from .repaint import repaint

__all__ = ["DEFAULT_OPTIONS", "FILLS", "SAMPLER", "refine", "network_calls", "start_step", "prefill"]

FILLS = {"biharmonic": biharmonic_fill, "telea": telea_fill, "ns": ns_fill}
DEFAULT_OPTIONS = {"start": 0.2, "init": "biharmonic", "resample": 1}


def _options(settings) -> dict:
    """``settings.options`` over :data:`DEFAULT_OPTIONS`, checked; one-line ValueError for anything else."""
    unknown = sorted(set(settings.options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise ValueError(f"sampler {settings.sampler!r} has no option(s) {', '.join(unknown)}; options: "
                         f"{', '.join(DEFAULT_OPTIONS)}")
    options = {**DEFAULT_OPTIONS, **settings.options}
    start, init, resample = options["start"], options["init"], options["resample"]
    if isinstance(start, bool) or not isinstance(start, (int, float)) or not 0 <= start <= 1:
        raise ValueError(f"option start of sampler 'refine' must be a number in [0, 1] (a fraction of T), got "
                         f"{start!r}")
    if init not in FILLS:
        raise ValueError(f"option init of sampler 'refine' must be one of {', '.join(FILLS)}, got {init!r}")
    if isinstance(resample, bool) or not isinstance(resample, (int, float)) or resample != int(resample) \
            or resample < 1:
        raise ValueError(f"option resample of sampler 'refine' must be a whole number >= 1, got {resample!r}")
    return {"start": float(start), "init": init, "resample": int(resample)}


def start_step(settings, num_timesteps: int) -> int:
    """t0: the number of respaced steps the walk takes, ``round(start * T)`` (0 = the classical fill alone)."""
    return round(_options(settings)["start"] * num_timesteps)


def _times(settings, num_timesteps: int) -> list[int]:
    t0, r = start_step(settings, num_timesteps), _options(settings)["resample"]
    if r > 1 and t0 >= 2:
        return JumpSchedule(t0, jump_length=min(10, t0 - 1), jump_n_sample=r).times()
    return list(range(t0 - 1, -2, -1))


def network_calls(settings, num_timesteps: int) -> int:
    """Network calls per image: the denoising steps of the walk from t0 (t0 without resampling)."""
    times = _times(settings, num_timesteps)
    return sum(1 for a, b in zip(times, times[1:]) if b < a and a >= 0)


def prefill(settings):
    """The classical fill (uint8 [H, W, 3], keep-mask [H, W] -> uint8 [H, W, 3]) that the walk starts from."""
    return FILLS[_options(settings)["init"]]


def refine(model, diffusion, gt, mask, *, settings, generators, cond_fn=None, callback=None, init=None):
    """Inpaint ``gt`` [B, C, H, W] (in [-1, 1]) where ``mask`` (1 = known) is 0, starting from ``init`` [B, C, H, W]
    (its hole pixels are the starting fill; None: the classical fill of option ``init`` of ``gt``, computed here).
    Returns [B, C, H, W]; the known pixels are ``gt``'s when ``settings.paste_known``."""
    options = _options(settings)
    mask = as_batch_mask(mask, gt)
    if init is None:
        init = classical_run(FILLS[options["init"]])(model, diffusion, gt, mask)
    x0 = mask * gt + (1 - mask) * init.to(gt)
    times = _times(settings, diffusion.num_timesteps)
    if len(times) == 1:                   # start = 0: the classical fill itself
        return x0
    noise = noise_source(generators, None, gt.shape[0])
    t_first = torch.full((gt.shape[0],), times[0], dtype=torch.int64, device=gt.device)
    x_start = diffusion.q_sample(x0, t_first, noise(x0))      # x_{t0-1} ~ q(x_{t0-1} | x0_init), DDPM eq. 4
    return repaint(model, diffusion, times, gt, mask, generators=generators, x_T=x_start, cond_fn=cond_fn,
                   callback=callback, clip_denoised=settings.clip_denoised, injection=settings.injection,
                   paste_known=settings.paste_known)


SAMPLER = Sampler(refine, network_calls, "a classical fill noised to start*T and denoised with RePaint joining",
                  options=DEFAULT_OPTIONS, prefill=prefill)

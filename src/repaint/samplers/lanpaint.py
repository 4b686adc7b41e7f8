"""LanPaint-style inpainting: Langevin inner steps at every noise level, no gradient through the network.

LanPaint (Zheng et al. 2025, "LanPaint: training-free diffusion inpainting with exact and fast conditional
inference", arXiv:2502.03491) lets the sampler "think" before each denoising step: it runs a few Langevin iterations
on the whole noisy image x_t so that the unknown pixels come into equilibrium with the known ones, using only the
network's x_0 estimate (the score of the noisy marginal, Tweedie's formula), never its gradient. This module
implements that idea in its overdamped form (the Gamma -> infinity limit of the paper's fast Langevin dynamics):

* score of the noisy marginal, VP form: ``s(x_t) = (sqrt(abar_t) x0_hat(x_t) - x_t) / (1 - abar_t)``;
* the paper's bidirectional guidance (BiG) on the known pixels: their x_0 target is ``(1 + lambda) y - lambda
  x0_hat(x_t)``, i.e. pulled to the known values and pushed away from where the network believes them to be, so that
  a mismatch between the network's view and ``y`` keeps driving the unknown pixels. lambda = 0 makes the known pixels
  relax to ``q(x_t | x_0 = y)`` exactly, the plain conditional Langevin sampler;
* each iteration integrates the linear part of the drift exactly with the x_0 target frozen (an Ornstein-Uhlenbeck
  step of length ``h = step_size`` in units of the noise level's own time scale ``1 - abar_t``):
  ``x <- e^-h x + (1 - e^-h) sqrt(abar_t) target + sqrt((1 - abar_t)(1 - e^-2h)) z``;
* then one ancestral step as in RePaint (Lugmayr et al. 2022, Alg. 1 with eq. 8): the known pixels of x_t are
  replaced by ``q_sample(y, t)`` and the model's p(x_{t-1} | x_t) is sampled.

Cost: ``T * (langevin_steps + 1)`` network calls per image (:func:`network_calls`); jump settings are not used.
Options (``settings.options``): ``langevin_steps`` (default 4), ``step_size`` (h, default 0.5), ``lamb`` (the BiG
lambda, default 1). Draw order per image: x_T; per level, one noise per Langevin iteration, then the join noise and
the step noise (none on the last step).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..diffusion import Diffusion
from .common import Sampler, SamplingError, Step, as_batch_mask, check_options, randn

__all__ = ["DEFAULT_OPTIONS", "SAMPLER", "lanpaint", "network_calls"]

DEFAULT_OPTIONS = {"langevin_steps": 4, "step_size": 0.5, "lamb": 1.0}


def _options(settings) -> dict:
    options = check_options(settings, DEFAULT_OPTIONS)
    steps = options["langevin_steps"]
    if int(steps) != steps or steps < 0:
        raise ValueError(f"option langevin_steps must be a whole number >= 0, got {steps}")
    if options["step_size"] <= 0:
        raise ValueError(f"option step_size must be > 0, got {options['step_size']}")
    if options["lamb"] < 0:
        raise ValueError(f"option lamb must be >= 0, got {options['lamb']}")
    return {"langevin_steps": int(steps), "step_size": float(options["step_size"]), "lamb": float(options["lamb"])}


def network_calls(settings, num_timesteps: int) -> int:
    """Network evaluations per image: (Langevin iterations + 1 denoising call) at each of the T levels."""
    return num_timesteps * (_options(settings)["langevin_steps"] + 1)


def lanpaint(model, diffusion: Diffusion, gt: torch.Tensor, mask: torch.Tensor, *, settings, generators,
             cond_fn: Callable | None = None, callback: Callable[[Step], None] | None = None) -> torch.Tensor:
    """Inpaint ``gt`` [B, C, H, W] (in [-1, 1]) where ``mask`` (1 = known) is 0; returns [B, C, H, W].

    ``cond_fn`` (classifier guidance) shifts the mean of each ancestral step by variance * gradient.
    """
    options = _options(settings)
    n_inner, h, lamb = options["langevin_steps"], options["step_size"], options["lamb"]
    generators = list(generators)
    mask = as_batch_mask(mask, gt)
    abar = torch.from_numpy(diffusion.tables64["alphas_cumprod"])
    steps, channels = diffusion.num_timesteps, gt.shape[1]
    decay = math.exp(-h)
    x = randn(gt, generators)
    for index, t in enumerate(range(steps - 1, -1, -1)):
        ab = float(abar[t])
        t_batch = torch.full((gt.shape[0],), t, dtype=torch.int64, device=gt.device)
        model_t = diffusion.model_timesteps(t_batch)
        for _ in range(n_inner):
            eps = model(x, model_t)[:, :channels]
            x0 = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
            target = mask * ((1 + lamb) * gt - lamb * x0) + (1 - mask) * x0
            noise = randn(x, generators)
            x = decay * x + (1 - decay) * math.sqrt(ab) * target + math.sqrt((1 - ab) * (1 - decay**2)) * noise
        known = diffusion.noise_known(gt, t_batch, randn(x, generators))
        x = mask * known + (1 - mask) * x
        out = diffusion.p_mean_variance(model(x, model_t), x, t_batch, settings.clip_denoised)
        mean = out["mean"]
        if cond_fn is not None:
            mean = mean + out["variance"] * cond_fn(x, model_t)
        x = mean + torch.exp(0.5 * out["log_variance"]) * randn(x, generators) if t > 0 else mean
        if settings.paste_known and t == 0:
            x = mask * gt + (1 - mask) * x
        if callback is not None:
            callback(Step(index, steps, (index + 1) * (n_inner + 1), t, t - 1, "reverse", x, out["pred_xstart"]))
    if not bool(torch.isfinite(x).all()):
        raise SamplingError("the model produced NaN or infinite values; the result was discarded")
    return x


SAMPLER = Sampler(lanpaint, network_calls, "LanPaint: Langevin inner steps, no gradients", options=DEFAULT_OPTIONS)

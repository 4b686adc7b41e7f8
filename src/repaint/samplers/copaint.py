"""CoPaint-style inpainting: the whole image is optimised to agree with the known pixels, then stepped by DDIM.

CoPaint (Zhang, Ji, Zhang, Yu, Jaakkola and Chang 2023, "Towards coherent image inpainting using denoising diffusion
implicit models", ICML) does not paste noised known pixels into x_t (RePaint's eq. 8), which leaves a seam; it keeps
one coherent x_t and, at every level, moves it by gradient descent on

    L(x_t) = || mask * (y - x0_hat(x_t)) ||^2 / (2 xi_t^2)  +  || x_t - x_t^(0) ||^2 / 2

(the paper's Bayesian objective with its one-step approximation x_{0|t} = x0_hat(x_t), Sec. 3.2; x_t^(0) is x_t
before the descent, which keeps it near the prior's sample). Here ``xi_t^2 = coef * (1 - abar_t) / abar_t`` (the
variance of x0_hat's error grows with the noise level), and each descent step is ``x <- x - lr (1 - abar_t) grad``.
Then a DDIM(eta) step (Song et al. 2021, eq. 12) from x0_hat and the eps of the optimised x_t; after the last step
the known pixels are pasted (``paste_known``). The paper's time travel (CoPaint-TT) is not implemented.

The gradient goes through the network (``torch.enable_grad`` inside; the pipeline samples under no_grad).
Cost: per level one forward call plus ``grad_steps`` forward-and-backward passes: :func:`network_calls` counts the
forward calls, ``T * (grad_steps + 1)``; a backward pass costs about two forwards more.
Options: ``grad_steps`` (default 2), ``lr`` (default 1.0), ``coef`` (default 1.0), ``eta`` comes from the settings.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..diffusion import Diffusion
from .common import Sampler, SamplingError, Step, as_batch_mask, check_options, randn

__all__ = ["DEFAULT_OPTIONS", "SAMPLER", "copaint", "network_calls"]

DEFAULT_OPTIONS = {"grad_steps": 2, "lr": 1.0, "coef": 1.0}


def _options(settings) -> dict:
    options = check_options(settings, DEFAULT_OPTIONS)
    if int(options["grad_steps"]) != options["grad_steps"] or options["grad_steps"] < 0:
        raise ValueError(f"option grad_steps must be a whole number >= 0, got {options['grad_steps']}")
    for key in ("lr", "coef"):
        if options[key] <= 0:
            raise ValueError(f"option {key} must be > 0, got {options[key]}")
    return {"grad_steps": int(options["grad_steps"]), "lr": float(options["lr"]), "coef": float(options["coef"])}


def network_calls(settings, num_timesteps: int) -> int:
    """Forward network evaluations per image: (grad_steps + 1) per level (each gradient step adds a backward)."""
    return num_timesteps * (_options(settings)["grad_steps"] + 1)


def _x0(model, x, model_t, ab: float, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    eps = model(x, model_t)[:, :channels]
    return (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab), eps


def copaint(model, diffusion: Diffusion, gt: torch.Tensor, mask: torch.Tensor, *, settings, generators,
            cond_fn: Callable | None = None, callback: Callable[[Step], None] | None = None) -> torch.Tensor:
    """Inpaint ``gt`` [B, C, H, W] (in [-1, 1]) where ``mask`` (1 = known) is 0; returns [B, C, H, W].

    ``cond_fn`` guidance shifts eps by ``-sqrt(1 - abar_t) grad`` as in :mod:`repaint.samplers.time_travel`.
    """
    options = _options(settings)
    if settings.eta < 0:
        raise ValueError(f"eta must be >= 0, got {settings.eta}")
    generators = list(generators)
    mask = as_batch_mask(mask, gt)
    abar = torch.from_numpy(diffusion.tables64["alphas_cumprod"])
    steps, channels = diffusion.num_timesteps, gt.shape[1]
    x = randn(gt, generators)
    for index, t in enumerate(range(steps - 1, -1, -1)):
        ab = float(abar[t])
        ab_prev = 1.0 if t == 0 else float(abar[t - 1])
        model_t = diffusion.model_timesteps(torch.full((gt.shape[0],), t, dtype=torch.int64, device=gt.device))
        xi2 = options["coef"] * (1 - ab) / ab
        start = x.detach()
        for _ in range(options["grad_steps"]):
            with torch.enable_grad():
                x_in = x.detach().requires_grad_(True)
                x0, _ = _x0(model, x_in, model_t, ab, channels)
                loss = (mask * (gt - x0)).pow(2).sum() / (2 * xi2) + (x_in - start).pow(2).sum() / 2
                grad = torch.autograd.grad(loss, x_in)[0]
            x = (x_in - options["lr"] * (1 - ab) * grad).detach()
        x0, eps = _x0(model, x, model_t, ab, channels)
        if cond_fn is not None:
            eps = eps - math.sqrt(1 - ab) * cond_fn(x, model_t)
            x0 = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
        if settings.clip_denoised:
            x0 = x0.clamp(-1, 1)
        eps = (x - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
        sigma2 = settings.eta**2 * (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)
        x = math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - sigma2, 0.0)) * eps
        if t > 0 and sigma2 > 0:
            x = x + math.sqrt(sigma2) * randn(x, generators)
        if settings.paste_known and t == 0:
            x = mask * gt + (1 - mask) * x
        if callback is not None:
            callback(Step(index, steps, (index + 1) * (options["grad_steps"] + 1), t, t - 1, "reverse", x, x0))
    if not bool(torch.isfinite(x).all()):
        raise SamplingError("the model produced NaN or infinite values; the result was discarded")
    return x


SAMPLER = Sampler(copaint, network_calls, "CoPaint: gradient steps on x_t, then DDIM", reads_eta=True,
                  options=DEFAULT_OPTIONS)

"""A sequential Monte Carlo inpainter that needs no gradient: K particles per image, exact as K grows.

The target is the model's own conditional ``p_theta(x_0[unknown] | x_0[known] = y)``, where ``p_theta(x_{0:T}) =
N(x_T; 0, I) prod_t p_theta(x_{t-1} | x_t)`` is the reverse chain on the respaced schedule. Noiseless inpainting lets
the observed coordinates be *twisted* in closed form, the construction of MCGdiff (Cardoso, Janati, Le Corff and
Moulines 2023, "Monte Carlo guided diffusion for Bayesian linear inverse problems", Sec. 3, the noiseless case):

* potentials ``g_t(x_t) = N(x_t[known]; sqrt(abar_t) y, (1 - abar_t) I)``: the forward marginal q(x_t | x_0) (DDPM
  eq. 4) of the observed coordinates, which factorise; ``g_{-1}`` is the point mass ``x_0[known] = y``;
* intermediate targets ``gamma_t(x_{t:T}) = p_theta(x_{t:T}) g_t(x_t)``, so that ``gamma_{-1}`` is the reverse chain
  restricted to ``x_0[known] = y``, i.e. the conditional above;
* the locally optimal proposal ``r(x_{t-1} | x_t) ∝ p_theta(x_{t-1} | x_t) g_{t-1}(x_{t-1})``. The reverse kernel is
  Gaussian ``N(m, s^2)`` per pixel (DDPM eq. 1 with the model's variance), so on the observed pixels the proposal is the
  product of two Gaussians, mean ``(m / s^2 + sqrt(abar_{t-1}) y / v) / (1 / s^2 + 1 / v)`` with ``v = 1 -
  abar_{t-1}``, and on the unknown pixels it is the reverse kernel itself;
* the incremental weight is the proposal's normaliser over the previous potential (Feynman-Kac with optimal proposal):
  ``w_t = N(m[known]; sqrt(abar_{t-1}) y, s^2 + v) / g_t(x_t)``; at the last step ``v = 0``.

Particles are resampled multinomially when the effective sample size falls below ``ess`` * K, and one particle per
image is returned, drawn by its final weight. As K grows the returned image is distributed as the target (standard SMC
consistency, e.g. Del Moral 2004); the only approximations left are the model's (the network and the discretisation).

Cost: every denoising step evaluates the network on K particles per image, so **T * K network calls per image**
(:func:`network_calls`); the time-travel settings (jump_length, jump_n_sample, start_resampling) are not used.

Options (``settings.options``): ``particles`` (K, default 20); ``ess`` (resampling threshold as a fraction of K,
default 0.5); ``lookahead`` (lambda >= 0, default 2: weight of a second, gradient-free potential ``phi_t(x_t) =
N(y; x0_hat(x_t)[known], (1 - abar_t) / lambda)`` built from the network's own x_0 estimate, the reconstruction
likelihood of the Twisted Diffusion Sampler (Wu et al. 2023, eq. 8) used only in the weights, never in the proposal;
phi = 1 after the last step, so the target is unchanged and lambda = 0 is plain MCGdiff-style twisting);
``variance`` (the reverse kernel's variance as improved DDPM's eq. 15 with a fixed v in [-1, 1]: -1 = beta~_t,
+1 = beta_t, -2 = the model's own output; default 0.3). The defaults were chosen with ``steps = 25``
(500 calls per image) on the ground-truth suite; see docs/fidelity.md. Every random draw goes through the image's own generator: per step the K particles' noise, then (if the
image resamples) its K ancestor indices; at the end one index.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .diffusion import Diffusion
from .sampler import SamplingError, Step, _as_batch_mask
from .sampler_options import check_options

__all__ = ["DEFAULT_OPTIONS", "network_calls", "smc"]

# chosen on the selection seeds of benchmarks/groundtruth_suite.py (docs/fidelity.md), with steps=25
DEFAULT_OPTIONS = {"particles": 20, "ess": 0.5, "lookahead": 2.0, "variance": 0.3}


def _options(settings) -> dict:
    options = check_options(settings, DEFAULT_OPTIONS)
    if int(options["particles"]) != options["particles"] or options["particles"] < 1:
        raise ValueError(f"option particles must be a whole number >= 1, got {options['particles']}")
    if not 0 <= options["ess"] <= 1:
        raise ValueError(f"option ess must lie in [0, 1], got {options['ess']}")
    if options["lookahead"] < 0:
        raise ValueError(f"option lookahead must be >= 0, got {options['lookahead']}")
    if not (options["variance"] == -2.0 or -1 <= options["variance"] <= 1):
        raise ValueError(f"option variance must lie in [-1, 1] (or -2: the model's own), got {options['variance']}")
    return {key: float(value) for key, value in options.items()} | {"particles": int(options["particles"])}


def network_calls(settings, num_timesteps: int) -> int:
    """Network evaluations per image: K particles at each of the T respaced steps."""
    return _options(settings)["particles"] * num_timesteps


def _particle_noise(shape: Sequence[int], generators: Sequence[torch.Generator], k: int, like: torch.Tensor):
    """Standard-normal noise [B * K, *shape]; image i's K particles drawn from ``generators[i]``."""
    return torch.cat(
        [torch.randn((k, *shape), generator=g, device=like.device, dtype=like.dtype) for g in generators]
    )


def _resample(logw: torch.Tensor, generators, threshold: float):
    """Ancestor indices [B, K] (identity where the ESS is high enough) and the new log-weights [B, K]."""
    b, k = logw.shape
    probs = torch.softmax(logw, dim=1)
    ess = 1.0 / (probs * probs).sum(1)
    index = torch.arange(k, device=logw.device).expand(b, k).clone()
    for i in torch.nonzero(ess < threshold * k).flatten().tolist():
        index[i] = torch.multinomial(probs[i], k, replacement=True, generator=generators[i]).to(index)
        logw[i] = 0.0
    return index, logw


def _gauss_logpdf(x, mean, var):
    return -0.5 * ((x - mean) ** 2 / var + torch.log(2 * math.pi * var))


def smc(model, diffusion: Diffusion, gt: torch.Tensor, mask: torch.Tensor, *, settings, generators,
        cond_fn: Callable | None = None, callback: Callable[[Step], None] | None = None) -> torch.Tensor:
    """Inpaint ``gt`` [B, C, H, W] (in [-1, 1]) where ``mask`` (1 = known) is 0 by twisted SMC (module docstring).

    Returns [B, C, H, W] with the known pixels equal to ``gt``. ``cond_fn`` (classifier guidance) shifts each reverse
    kernel's mean by variance * gradient, as in :func:`repaint.sampler.repaint`.
    """
    options = _options(settings)
    k, threshold, lookahead = options["particles"], options["ess"], options["lookahead"]
    generators = list(generators)
    if len(generators) != gt.shape[0]:
        raise ValueError(f"need one generator per image: {len(generators)} generators for a batch of {gt.shape[0]}")
    b, shape = gt.shape[0], tuple(gt.shape[1:])
    known = _as_batch_mask(mask, gt).expand(b, *shape).repeat_interleave(k, dim=0)       # [BK, C, H, W]
    y = gt.repeat_interleave(k, dim=0)
    abar = torch.from_numpy(diffusion.tables64["alphas_cumprod"]).to(gt.device)
    steps = diffusion.num_timesteps

    def level(t: int) -> tuple[float, float]:   # (sqrt(abar_t), 1 - abar_t); t = -1 is the clean image
        return (1.0, 0.0) if t < 0 else (float(abar[t].sqrt()), float(1 - abar[t]))

    # x_T: N(0, I) on unknown pixels; on the known ones N(0, 1) * g_T, a Gaussian product (constant weight).
    a, v = level(steps - 1)
    z = _particle_noise(shape, generators, k, gt)
    prec = 1.0 + 1.0 / v
    x = torch.where(known > 0, (a * y / v) / prec + z / math.sqrt(prec), z)
    logw = torch.zeros(b, k, dtype=torch.float64, device=gt.device)
    parent_phi = torch.zeros_like(logw)     # log phi of each particle's parent state (none before the first step)
    for index, t in enumerate(range(steps - 1, -1, -1)):
        t_batch = torch.full((b * k,), t, dtype=torch.int64, device=gt.device)
        model_t = diffusion.model_timesteps(t_batch)
        out = diffusion.p_mean_variance(model(x, model_t), x, t_batch, settings.clip_denoised)
        mean, var = out["mean"], out["variance"].expand_as(x)
        if options["variance"] != -2.0:   # the kernel's own variance, improved-DDPM eq. 15 with a fixed v
            frac = (options["variance"] + 1) / 2
            log_var = frac * diffusion.log_betas[t] + (1 - frac) * diffusion.posterior_log_variance_clipped[t]
            var = torch.full_like(x, float(torch.exp(log_var)))
        if cond_fn is not None:
            mean = mean + var * cond_fn(x, model_t)
        a_prev, v_prev = level(t - 1)
        a_t, v_t = level(t)
        # incremental log-weight: N(m[known]; a' y, s^2 + v') / g_t(x_t), summed over the known entries
        inc = _gauss_logpdf(mean.double(), a_prev * y.double(), var.double() + v_prev)
        inc = inc - _gauss_logpdf(x.double(), a_t * y.double(), torch.full_like(inc, v_t))
        logw = logw + (inc * known).flatten(1).sum(1).view(b, k)
        # look-ahead potential phi_t(x_t) = N(y; x0_hat(x_t)[known], (1 - abar_t) / lambda), 1 after the last step
        phi = torch.zeros_like(logw)
        if t > 0 and lookahead > 0:
            err = ((out["pred_xstart"].double() - y.double()) ** 2 * known).flatten(1).sum(1).view(b, k)
            phi = -0.5 * lookahead * err / v_t
        logw = logw + phi - parent_phi
        # fully adapted: the weight depends on x_t only, so resample before proposing x_{t-1}
        ancestors, logw = _resample(logw, generators, threshold if t > 0 else 0.0)
        flat = (ancestors + k * torch.arange(b, device=gt.device)[:, None]).flatten()
        mean, var, parent_phi = mean[flat], var[flat], phi.flatten()[flat].view(b, k)
        if t > 0:
            z = _particle_noise(shape, generators, k, gt)
            prec = 1.0 / var + 1.0 / v_prev
            observed = (mean / var + a_prev * y / v_prev) / prec + z / prec.sqrt()
            x = torch.where(known > 0, observed, mean + var.sqrt() * z)
            best = logw.argmax(1)
        else:  # last step: no noise (DDPM Alg. 2, line 4), the known pixels are exactly y; one particle per image
            x = torch.where(known > 0, y, mean)
            probs = torch.softmax(logw, dim=1)
            best = torch.stack([torch.multinomial(probs[i], 1, generator=g)[0] for i, g in enumerate(generators)])
        if callback is not None or t == 0:
            current = x.view(b, k, *shape)[torch.arange(b, device=gt.device), best]
        if callback is not None:
            callback(Step(index, steps, (index + 1) * k, t, t - 1, "reverse", current, None))
    if not bool(torch.isfinite(current).all()):
        raise SamplingError("the model produced NaN or infinite values; the result was discarded")
    return current

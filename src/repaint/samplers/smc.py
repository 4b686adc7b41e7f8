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

Each image resamples (systematically: one uniform draw, Douc, Cappe and Moulines 2005) when its effective sample size
falls below ``ess`` * K, and always when the particle count changes; one particle per image is returned, drawn by its
final weight. As K grows the returned image is distributed as the target (standard SMC consistency, e.g. Del Moral
2004); the only approximations left are the model's (the network and the discretisation).

**Particle schedule.** Which component an image's fill belongs to is settled in the middle of the chain: on the
ground-truth suite, between abar of about 0.01 and 0.9, which on a linear schedule is the part of the chain from 1/3
to 0.9 of the way down. Before that the particles are nearly pure noise and after it they only refine. So the
particles are concentrated there: ``particles`` (K) on the steps whose position i / T (i = 0 the noisiest) lies in
[``window_start``, ``window_end``), ``outside`` elsewhere. Changing the count between steps is an ordinary
resampling to a different number of particles, so the target is unchanged.

Cost: every step evaluates the network once per particle, so the network calls per image are the particle counts
summed over the T respaced steps (:func:`network_calls`); with the defaults and ``steps = 40``: 14 x 3 + 22 x 20 +
4 x 3 = 494. The time-travel settings (jump_length, jump_n_sample, start_resampling) are not used.

Options (``settings.options``): ``particles`` (K in the window, default 20); ``outside`` (default 3; set it equal to K,
or the window to [0, 1], for a fixed count); ``window_start`` / ``window_end`` (default 1/3 and 0.9); ``ess``
(resampling threshold as a fraction of K, default 0.5); ``lookahead`` (lambda >= 0, default 8: weight of a second,
gradient-free potential ``phi_t(x_t) = N(y; x0_hat(x_t)[known], (1 - abar_t) / lambda)`` built from the network's own
x_0 estimate, the reconstruction likelihood of the Twisted Diffusion Sampler (Wu et al. 2023, eq. 8) used only in the
weights, never in the proposal; phi = 1 after the last step, so the target is unchanged and lambda = 0 is plain
MCGdiff-style twisting); ``variance`` (the reverse kernel's variance as improved DDPM's eq. 15 with a fixed v in
[-1, 1]: -1 = beta~_t, +1 = beta_t, -2 = the model's own output; default 0.5). The defaults were chosen with
``steps = 40`` (494 calls per image) on the ground-truth suite's selection problems; see docs/fidelity.md.
``replace`` (0 or 1, default 0): with 1 the known pixels of x_{t-1} are drawn from the potential alone, ``N(sqrt(
abar_{t-1}) y, 1 - abar_{t-1})`` (the draw RePaint makes), instead of the locally optimal product, and the
incremental weight becomes ``N(x_{t-1}[known]; m, s^2) / g_t(x_t)``, computed once x_{t-1} is drawn; the last step
is unchanged. Still exact as K grows; the network then sees the known pixels at their marginal noise level (the
product puts them at a third to a half of it on the face model), which on faces gained little (docs/fidelity.md,
issue 28). Every
random draw goes through the image's own generator: per step its particles' noise, then (if it resamples) one
uniform; at the end one index.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ..diffusion import Diffusion
from .common import Sampler, SamplingError, Step, as_batch_mask, check_options

__all__ = ["DEFAULT_OPTIONS", "SAMPLER", "network_calls", "particle_counts", "smc"]

# chosen in stages 3 and 5 on the selection problems of benchmarks/groundtruth_suite.py (docs/fidelity.md), with
# steps=40
DEFAULT_OPTIONS = {"particles": 20, "outside": 3, "window_start": 1 / 3, "window_end": 0.9, "ess": 0.5,
                   "lookahead": 8.0, "variance": 0.5, "replace": 0}


def _options(settings) -> dict:
    options = check_options(settings, DEFAULT_OPTIONS)
    for key in ("particles", "outside"):
        if int(options[key]) != options[key] or options[key] < 1:
            raise ValueError(f"option {key} must be a whole number >= 1, got {options[key]}")
    if not 0 <= options["window_start"] <= options["window_end"] <= 1:
        raise ValueError("options window_start and window_end must satisfy 0 <= window_start <= window_end <= 1, "
                         f"got {options['window_start']} and {options['window_end']}")
    if not 0 <= options["ess"] <= 1:
        raise ValueError(f"option ess must lie in [0, 1], got {options['ess']}")
    if options["lookahead"] < 0:
        raise ValueError(f"option lookahead must be >= 0, got {options['lookahead']}")
    if not (options["variance"] == -2.0 or -1 <= options["variance"] <= 1):
        raise ValueError(f"option variance must lie in [-1, 1] (or -2: the model's own), got {options['variance']}")
    if options["replace"] not in (0, 1):
        raise ValueError(f"option replace must be 0 or 1, got {options['replace']}")
    return {key: float(value) for key, value in options.items()} | {
        "particles": int(options["particles"]), "outside": int(options["outside"])}


def particle_counts(settings, num_timesteps: int) -> list[int]:
    """Particles per image at each of the T steps, noisiest first: ``particles`` on the steps whose position i / T
    lies in [window_start, window_end), ``min(outside, particles)`` on the others."""
    o = _options(settings)
    low = min(o["outside"], o["particles"])
    return [o["particles"] if o["window_start"] <= i / num_timesteps < o["window_end"] else low
            for i in range(num_timesteps)]


def network_calls(settings, num_timesteps: int) -> int:
    """Network evaluations per image: the particle count summed over the T respaced steps."""
    return sum(particle_counts(settings, num_timesteps))


def _particle_noise(shape: Sequence[int], generators: Sequence[torch.Generator], k: int, like: torch.Tensor):
    """Standard-normal noise [B * K, *shape]; image i's K particles drawn from ``generators[i]``."""
    return torch.cat(
        [torch.randn((k, *shape), generator=g, device=like.device, dtype=like.dtype) for g in generators]
    )


def _resample(logw: torch.Tensor, generators, threshold: float, count: int):
    """Ancestor indices [B, count] and the new log-weights [B, count]. An image keeps its particles (identity) while
    its ESS is at least ``threshold`` * K and the count does not change; otherwise it resamples systematically (one
    uniform draw from its generator; Douc, Cappe and Moulines 2005) and its weights reset to equal."""
    b, k = logw.shape
    probs = torch.softmax(logw, dim=1)
    ess = 1.0 / (probs * probs).sum(1)
    if count == k:
        index, new = torch.arange(k, device=logw.device).expand(b, k).clone(), logw.clone()
        redraw = torch.nonzero(ess < threshold * k).flatten().tolist()
    else:
        index = torch.empty(b, count, dtype=torch.int64, device=logw.device)
        new = torch.zeros(b, count, dtype=logw.dtype, device=logw.device)
        redraw = range(b)
    cumulative = probs.cumsum(1)
    cumulative[:, -1] = 1.0
    grid = torch.arange(count, device=logw.device, dtype=logw.dtype)
    for i in redraw:
        u = torch.rand((), generator=generators[i], dtype=torch.float64).to(logw.device, logw.dtype)
        index[i] = torch.searchsorted(cumulative[i], (u + grid) / count).clamp(max=k - 1)
        new[i] = 0.0
    return index, new


def _gauss_logpdf(x, mean, var):
    return -0.5 * ((x - mean) ** 2 / var + torch.log(2 * math.pi * var))


def smc(model, diffusion: Diffusion, gt: torch.Tensor, mask: torch.Tensor, *, settings, generators,
        cond_fn: Callable | None = None, callback: Callable[[Step], None] | None = None) -> torch.Tensor:
    """Inpaint ``gt`` [B, C, H, W] (in [-1, 1]) where ``mask`` (1 = known) is 0 by twisted SMC (module docstring).

    Returns [B, C, H, W] with the known pixels equal to ``gt``. ``cond_fn`` (classifier guidance) shifts each reverse
    kernel's mean by variance * gradient, as in :func:`repaint.samplers.repaint.repaint`.
    """
    options = _options(settings)
    threshold, lookahead, replace = options["ess"], options["lookahead"], options["replace"] == 1
    generators = list(generators)
    if len(generators) != gt.shape[0]:
        raise ValueError(f"need one generator per image: {len(generators)} generators for a batch of {gt.shape[0]}")
    b, shape = gt.shape[0], tuple(gt.shape[1:])
    batch_mask = as_batch_mask(mask, gt).expand(b, *shape)
    abar = torch.from_numpy(diffusion.tables64["alphas_cumprod"]).to(gt.device)
    steps = diffusion.num_timesteps
    counts = particle_counts(settings, steps) + [1]

    def level(t: int) -> tuple[float, float]:   # (sqrt(abar_t), 1 - abar_t); t = -1 is the clean image
        return (1.0, 0.0) if t < 0 else (float(abar[t].sqrt()), float(1 - abar[t]))

    def per_particle(k: int) -> tuple[torch.Tensor, torch.Tensor]:   # mask and gt repeated for k particles
        return batch_mask.repeat_interleave(k, dim=0), gt.repeat_interleave(k, dim=0)

    # x_T: N(0, I) on unknown pixels; on the known ones N(0, 1) * g_T, a Gaussian product (constant weight).
    k = counts[0]
    known, y = per_particle(k)
    a, v = level(steps - 1)
    z = _particle_noise(shape, generators, k, gt)
    prec = 1.0 + 1.0 / v
    x = torch.where(known > 0, (a * y / v) / prec + z / math.sqrt(prec), z)
    logw = torch.zeros(b, k, dtype=torch.float64, device=gt.device)
    parent_phi = torch.zeros_like(logw)     # log phi of each particle's parent state (none before the first step)
    calls = 0
    for index, t in enumerate(range(steps - 1, -1, -1)):
        t_batch = torch.full((b * k,), t, dtype=torch.int64, device=gt.device)
        model_t = diffusion.model_timesteps(t_batch)
        out = diffusion.p_mean_variance(model(x, model_t), x, t_batch, settings.clip_denoised)
        calls += k
        mean, var = out["mean"], out["variance"].expand_as(x)
        if options["variance"] != -2.0:   # the kernel's own variance, improved-DDPM eq. 15 with a fixed v
            frac = (options["variance"] + 1) / 2
            log_var = frac * diffusion.log_betas[t] + (1 - frac) * diffusion.posterior_log_variance_clipped[t]
            var = torch.full_like(x, float(torch.exp(log_var)))
        if cond_fn is not None:
            mean = mean + var * cond_fn(x, model_t)
        a_prev, v_prev = level(t - 1)
        a_t, v_t = level(t)
        # incremental log-weight: N(m[known]; a' y, s^2 + v') / g_t(x_t), summed over the known entries (with
        # replace, added once x_{t-1} is drawn, below; the last step's is the same either way)
        if not replace or t == 0:
            inc = _gauss_logpdf(mean.double(), a_prev * y.double(), var.double() + v_prev)
            inc = inc - _gauss_logpdf(x.double(), a_t * y.double(), torch.full_like(inc, v_t))
            logw = logw + (inc * known).flatten(1).sum(1).view(b, k)
        # look-ahead potential phi_t(x_t) = N(y; x0_hat(x_t)[known], (1 - abar_t) / lambda), 1 after the last step
        phi = torch.zeros_like(logw)
        if t > 0 and lookahead > 0:
            err = ((out["pred_xstart"].double() - y.double()) ** 2 * known).flatten(1).sum(1).view(b, k)
            phi = -0.5 * lookahead * err / v_t
        logw = logw + phi - parent_phi
        if t == 0:   # the returned image: one particle per image, drawn by its final weight
            probs = torch.softmax(logw, dim=1)
            pick = torch.stack([torch.multinomial(probs[i], 1, generator=g)[0] for i, g in enumerate(generators)])
            current = torch.where(known > 0, y, mean).view(b, k, *shape)[torch.arange(b, device=gt.device), pick]
        else:   # fully adapted: the weight depends on x_t only, so resample before proposing x_{t-1}
            ancestors, logw = _resample(logw, generators, threshold, counts[index + 1])
            flat = (ancestors + k * torch.arange(b, device=gt.device)[:, None]).flatten()
            mean, var, parent_phi, parent = mean[flat], var[flat], phi.flatten()[flat].view(b, -1), x[flat]
            k = counts[index + 1]
            known, y = per_particle(k)
            z = _particle_noise(shape, generators, k, gt)
            if replace:   # known pixels from q(x_{t-1} | y); weight N(x_{t-1}[known]; m, s^2) / g_t(x_t)
                observed = a_prev * y + math.sqrt(v_prev) * z
                inc = _gauss_logpdf(observed.double(), mean.double(), var.double())
                inc = inc - _gauss_logpdf(parent.double(), a_t * y.double(), torch.full_like(inc, v_t))
                logw = logw + (inc * known).flatten(1).sum(1).view(b, k)
            else:
                prec = 1.0 / var + 1.0 / v_prev
                observed = (mean / var + a_prev * y / v_prev) / prec + z / prec.sqrt()
            x = torch.where(known > 0, observed, mean + var.sqrt() * z)
            if callback is not None:
                current = x.view(b, k, *shape)[torch.arange(b, device=gt.device), logw.argmax(1)]
        if callback is not None:
            callback(Step(index, steps, calls, t, t - 1, "reverse", current, None))
    if not bool(torch.isfinite(current).all()):
        raise SamplingError("the model produced NaN or infinite values; the result was discarded")
    return current


SAMPLER = Sampler(smc, network_calls, "twisted SMC, K particles per image mid-chain; asymptotically exact",
                  options=DEFAULT_OPTIONS)

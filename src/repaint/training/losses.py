"""The improved-DDPM hybrid objective as pure functions: the simple noise loss plus the variational bound terms that
train a learned variance. Equations cite Ho et al. 2020 (DDPM) and Nichol & Dhariwal 2021 (improved DDPM, "IDDPM")."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch

from ..diffusion import Diffusion

__all__ = ["normal_kl", "approx_standard_normal_cdf", "discretized_gaussian_log_likelihood", "vlb_terms", "hybrid_loss"]

LOG2 = math.log(2.0)


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over all but the batch dimension: [B, ...] -> [B]."""
    return x.mean(dim=tuple(range(1, x.ndim)))


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) per element, in nats (broadcasting).

    = 1/2 (-1 + logvar2 - logvar1 + e^(logvar1 - logvar2) + (mean1 - mean2)^2 e^(-logvar2)).
    """
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Phi(x) by the tanh approximation 1/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (as in DDPM's decoder)."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor
) -> torch.Tensor:
    """log p(x) per element, in nats, for 8-bit data x in [-1, 1] under N(means, e^(2 log_scales)) (DDPM eq. 13).

    Each of the 256 values owns the bin x +- 1/255; the end bins extend to -inf and +inf so the 256 probabilities
    sum to one.
    """
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def vlb_terms(
    diffusion: Diffusion, model_output: torch.Tensor, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """The variational bound term L_t per image, in bits per dimension: [B].

    L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for t > 0 (DDPM eq. 5), and the decoder
    L_0 = -log p(x_0 | x_1) under the discretised Gaussian for t = 0. ``model_output`` is the raw [eps, v] output;
    pass the eps half detached to train only the variance with this term (IDDPM section 3.1, "stop-gradient").
    """
    true_mean = diffusion.posterior_mean(x_start, x_t, t)
    true_log_var = diffusion._at(diffusion.posterior_log_variance_clipped, t)
    out = diffusion.p_mean_variance(model_output, x_t, t, clip_denoised=False)
    kl = _mean_flat(normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"])) / LOG2
    nll = -_mean_flat(discretized_gaussian_log_likelihood(x_start, out["mean"], 0.5 * out["log_variance"])) / LOG2
    return torch.where(t == 0, nll, kl)


def hybrid_loss(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    diffusion: Diffusion,
    x_start: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    vlb_weight: float = 0.001,
    autocast: Callable[[], Any] | None = None,
) -> dict[str, torch.Tensor]:
    """L_hybrid = L_simple + lambda L_vlb per image (IDDPM eq. 16), with ``t`` drawn uniformly.

    L_simple = ||eps - eps_theta(x_t, t)||^2 (DDPM eq. 14, mean over pixels). With uniform t, T * L_t is an unbiased
    estimate of L_vlb = sum_t L_t, so the per-sample term is ``vlb_weight * T * L_t`` (with lambda = 0.001 and
    T = 1000 this is L_t itself, as in the reference). Models without a learned variance get L_simple only.
    ``model(x_t, t)`` takes original-process timesteps; returns {"loss", "mse", "vb"}, each [B] float32.
    """
    x_t = diffusion.q_sample(x_start, t, noise)
    with autocast() if autocast is not None else nullcontext():
        output = model(x_t, diffusion.model_timesteps(t))
    output = output.float()
    channels = x_start.shape[1]
    eps = output[:, :channels]
    mse = _mean_flat((noise - eps) ** 2)
    if not diffusion.config.learn_sigma:
        return {"loss": mse, "mse": mse, "vb": torch.zeros_like(mse)}
    frozen = torch.cat([eps.detach(), output[:, channels:]], dim=1)
    vb = vlb_terms(diffusion, frozen, x_start, x_t, t)
    return {"loss": mse + vlb_weight * diffusion.num_timesteps * vb, "mse": mse, "vb": vb}



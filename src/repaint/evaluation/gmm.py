"""Gaussian mixtures as ground truth: an exact denoiser and the exact inpainting conditional.

When the data distribution is a Gaussian mixture ``p(x0) = sum_k w_k N(x0; mu_k, Sigma_k)``, everything a diffusion
inpainter approximates is closed form:

* the optimal denoiser. With ``x_t = a x0 + s eps`` (``a = sqrt(abar)``, ``s = sqrt(1 - abar)``, DDPM eq. 4),
  ``x_t | k ~ N(a mu_k, a^2 Sigma_k + s^2 I)`` and ``E[x0 | x_t, k] = mu_k + a Sigma_k (a^2 Sigma_k + s^2 I)^-1
  (x_t - a mu_k)``; ``E[x0 | x_t]`` averages these with the responsibilities ``p(k | x_t)``. With
  ``Sigma_k = U_k diag(lambda_k) U_k^T`` computed once, every noise level costs only diagonal work.
* the target of inpainting, ``p(x_unknown | x_known = y)``: again a mixture, whose weights are
  ``w_k N(y; mu_k[known], Sigma_k[known, known])`` renormalised and whose components are the Gaussian conditionals
  (Schur complements).

Images are [C, H, W] flattened in C-major order to vectors of length ``D = C * H * W``. Internally float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..diffusion import Diffusion, beta_schedule

__all__ = [
    "GaussianMixture", "ConditionalMixture", "image_mixture", "mean_pattern", "stationary_covariance",
    "InpaintingProblem", "disharmony_problem", "sliced_wasserstein", "fidelity_metrics", "validate",
]

_LOG_2PI = math.log(2 * math.pi)


def _gaussian_logpdf(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, cov) for x [N, d], one Gaussian; via Cholesky."""
    chol = torch.linalg.cholesky(cov)
    z = torch.linalg.solve_triangular(chol, (x - mean).T, upper=False)  # [d, N]
    logdet = 2 * torch.log(torch.diagonal(chol)).sum()
    return -0.5 * ((z * z).sum(0) + logdet + x.shape[1] * _LOG_2PI)


def _sample_mixture(weights, means, chols, n, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n draws [n, d] float64 and their component labels [n] from a mixture given by Cholesky factors."""
    labels = torch.multinomial(weights, n, replacement=True, generator=generator)
    z = torch.randn(n, means.shape[1], generator=generator, dtype=torch.float64)
    x = means[labels] + torch.einsum("nij,nj->ni", chols[labels], z)
    return x, labels


def _responsibilities(x, weights, means, covs) -> torch.Tensor:
    """p(k | x) [N, K] for x [N, d] under a full-covariance mixture."""
    logp = torch.stack([_gaussian_logpdf(x, m, c) for m, c in zip(means, covs)], dim=1) + torch.log(weights)
    return torch.softmax(logp, dim=1)


class GaussianMixture:
    """``sum_k weights[k] N(means[k], covs[k])`` over images of ``shape`` (C, H, W).

    Args:
        weights: [K], positive, normalised here.
        means: [K, D] with D = C * H * W.
        covs: [K, D, D], symmetric positive definite.
        shape: the image shape (C, H, W) the vectors are reshaped to.
    """

    def __init__(self, weights, means, covs, shape: Sequence[int]):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.weights = self.weights / self.weights.sum()
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.covs = torch.as_tensor(covs, dtype=torch.float64)
        self.shape = tuple(int(n) for n in shape)
        k, d = self.means.shape
        if self.weights.shape != (k,) or self.covs.shape != (k, d, d) or math.prod(self.shape) != d:
            raise ValueError(
                f"inconsistent mixture: weights {tuple(self.weights.shape)}, means {tuple(self.means.shape)}, "
                f"covs {tuple(self.covs.shape)}, image shape {self.shape}"
            )
        self.covs = 0.5 * (self.covs + self.covs.transpose(1, 2))
        self.eigvals, self.eigvecs = torch.linalg.eigh(self.covs)  # Sigma_k = U diag(lambda) U^T, cached once
        if bool((self.eigvals <= 0).any()):
            raise ValueError("mixture covariances must be positive definite")
        self.chols = torch.linalg.cholesky(self.covs)

    @property
    def num_components(self) -> int:
        return self.weights.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None, return_labels: bool = False):
        """n images [n, C, H, W] float32 (and their component labels [n] with ``return_labels``)."""
        x, labels = _sample_mixture(self.weights, self.means, self.chols, n, generator)
        images = x.to(torch.float32).view(n, *self.shape)
        return (images, labels) if return_labels else images

    def responsibilities(self, images: torch.Tensor) -> torch.Tensor:
        """p(k | x0) [N, K] for clean images [N, C, H, W]."""
        return _responsibilities(images.reshape(len(images), -1).double(), self.weights, self.means, self.covs)

    def posterior_mean(self, x_t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
        """E[x0 | x_t] [N, D] (float64) for x_t [N, D] = sqrt(abar) x0 + sqrt(1 - abar) eps, abar [N] per row."""
        a = alpha_bar.sqrt()[:, None]                                  # [N, 1]
        s2 = (1 - alpha_bar)[:, None]                                  # [N, 1]
        logits, cond_means = [], []
        for k in range(self.num_components):
            lam, u = self.eigvals[k], self.eigvecs[k]
            r = (x_t - a * self.means[k]) @ u                          # residual in the eigenbasis, [N, D]
            var = a * a * lam + s2                                     # eigenvalues of a^2 Sigma + s^2 I
            logits.append(
                torch.log(self.weights[k]) - 0.5 * ((r * r / var).sum(1) + torch.log(var).sum(1) + self.dim * _LOG_2PI)
            )
            cond_means.append(self.means[k] + (r * (a * lam / var)) @ u.T)
        resp = torch.softmax(torch.stack(logits, dim=1), dim=1)        # p(k | x_t), [N, K]
        return torch.einsum("nk,knd->nd", resp, torch.stack(cond_means))

    def denoiser(self, diffusion: Diffusion, v: float = -1.0):
        """The exact eps-prediction model ``model(x, model_t) -> output`` for ``diffusion``'s sampler.

        ``model_t`` indexes the *original* process, so abar is looked up in the un-respaced tables built from
        ``diffusion.config`` (steps, noise_schedule). Output is eps = (x_t - a E[x0|x_t]) / s, [B, C, H, W]; for a
        learned-sigma diffusion the learned-range value ``v`` is appended as C more channels. v = -1 selects the
        posterior variance beta~_t (exact in the limit where x0 | x_t is deterministic, and DDIM's eta = 1 variance),
        v = +1 the upper bound beta_t.
        """
        config = diffusion.config
        betas = beta_schedule(config.noise_schedule, config.steps, config.beta_start, config.beta_end)
        alphas_cumprod = torch.from_numpy(np.cumprod(1.0 - betas))
        learn_sigma = config.learn_sigma

        def model(x: torch.Tensor, model_t: torch.Tensor) -> torch.Tensor:
            ab = alphas_cumprod[model_t.cpu()].to(x.device)
            x_t = x.reshape(len(x), -1).double()
            x0 = self.posterior_mean(x_t, ab)
            eps = (x_t - ab.sqrt()[:, None] * x0) / (1 - ab).sqrt()[:, None]
            eps = eps.to(x.dtype).view_as(x)
            return torch.cat([eps, torch.full_like(eps, v)], dim=1) if learn_sigma else eps

        return model

    def conditional(self, mask: torch.Tensor, known_values: torch.Tensor) -> "ConditionalMixture":
        """The exact p(x_unknown | x_known = known_values).

        Args:
            mask: [H, W], [1, H, W] or [C, H, W] (a leading batch dimension of 1 is allowed), 1 = known pixel.
            known_values: a full image [C, H, W] (or [1, C, H, W]) whose pixels under the mask are the knowns.
        """
        known = _mask_vector(mask, self.shape)
        y = torch.as_tensor(known_values, dtype=torch.float64).reshape(-1)[known]
        unknown = ~known
        weights, means, covs = [], [], []
        for k in range(self.num_components):
            mu, cov = self.means[k], self.covs[k]
            c_kk, c_uk, c_uu = cov[known][:, known], cov[unknown][:, known], cov[unknown][:, unknown]
            if known.any():
                gain = torch.linalg.solve(c_kk, c_uk.T).T                    # Sigma_uk Sigma_kk^-1
                loglik = _gaussian_logpdf(y[None], mu[known], c_kk)[0]
                means.append(mu[unknown] + gain @ (y - mu[known]))
                covs.append(c_uu - gain @ c_uk.T)                             # Schur complement
            else:
                loglik = torch.zeros((), dtype=torch.float64)
                means.append(mu[unknown])
                covs.append(c_uu)
            weights.append(torch.log(self.weights[k]) + loglik)
        weights = torch.softmax(torch.stack(weights), dim=0)
        return ConditionalMixture(weights, torch.stack(means), torch.stack(covs), known, y, self.shape)


def _mask_vector(mask, shape) -> torch.Tensor:
    """A 0/1 mask broadcast over the image shape and flattened to a bool vector [D] (True = known)."""
    mask = torch.as_tensor(mask)
    while mask.dim() > 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.dim() == 2:
        mask = mask[None]
    if mask.dim() != 3 or tuple(mask.shape[1:]) != tuple(shape[1:]) or mask.shape[0] not in (1, shape[0]):
        raise ValueError(f"a mask of shape {tuple(mask.shape)} does not fit images of shape {tuple(shape)}")
    return (mask.expand(*shape) > 0.5).reshape(-1)


@dataclass
class ConditionalMixture:
    """p(x_unknown | x_known = known_values): a mixture over the unknown entries (``~known``, C-major order)."""

    weights: torch.Tensor      # [K], sums to 1
    means: torch.Tensor        # [K, U]
    covs: torch.Tensor         # [K, U, U]
    known: torch.Tensor        # [D] bool, True = known entry
    known_values: torch.Tensor  # [D - U]
    shape: tuple

    def __post_init__(self) -> None:
        eye = torch.eye(self.means.shape[1], dtype=torch.float64)
        self.covs = 0.5 * (self.covs + self.covs.transpose(1, 2))
        self.chols = torch.linalg.cholesky(self.covs + 1e-12 * eye)

    @property
    def mean(self) -> torch.Tensor:
        """E[x_unknown | y], [U]."""
        return self.weights @ self.means

    def sample_unknown(self, n: int, generator: torch.Generator | None = None, return_labels: bool = False):
        """n draws of the unknown entries [n, U] (float64), with their component labels if asked."""
        x, labels = _sample_mixture(self.weights, self.means, self.chols, n, generator)
        return (x, labels) if return_labels else x

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n completed images [n, C, H, W] float32: the known entries, the unknown ones drawn exactly."""
        return self.fill(self.sample_unknown(n, generator))

    def fill(self, unknown_values: torch.Tensor) -> torch.Tensor:
        """Images [n, C, H, W] (float32) with the known entries and the given unknown ones [n, U]."""
        out = torch.empty(len(unknown_values), self.known.numel(), dtype=torch.float64)
        out[:, self.known] = self.known_values
        out[:, ~self.known] = unknown_values.double()
        return out.to(torch.float32).view(-1, *self.shape)

    def unknown_of(self, images: torch.Tensor) -> torch.Tensor:
        """The unknown entries [n, U] (float64) of images [n, C, H, W]."""
        return images.reshape(len(images), -1).double()[:, ~self.known]

    def responsibilities(self, unknown_values: torch.Tensor) -> torch.Tensor:
        """p(k | x_unknown, y) [n, K]: which component each fill belongs to, under the exact conditional."""
        return _responsibilities(unknown_values.double(), self.weights, self.means, self.covs)


def mean_pattern(kind: str, size: int) -> torch.Tensor:
    """A [size, size] mean pattern with values in [-1, 1]: "gradient" (left to right), "stripes" (vertical, period
    4 pixels), "checker" (2x2 blocks) or "blob" (a centred bump minus its mean)."""
    coords = torch.linspace(-1, 1, size, dtype=torch.float64)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    idx = torch.arange(size, dtype=torch.float64)
    if kind == "gradient":
        return xx.clone()
    if kind == "stripes":
        return torch.cos(math.pi * idx / 2)[None, :].expand(size, size).clone()
    if kind == "checker":
        blocks = (idx // 2) % 2 * 2 - 1
        return blocks[:, None] * blocks[None, :]
    if kind == "blob":
        bump = torch.exp(-(xx**2 + yy**2) / 0.3)
        bump = bump - bump.mean()
        return bump / bump.abs().max()
    raise ValueError(f"unknown pattern {kind!r}; expected gradient, stripes, checker or blob")


def stationary_covariance(size: int, lengthscale: float, variance: float, nugget: float) -> torch.Tensor:
    """Squared-exponential covariance over pixel distance on a [size, size] grid plus ``nugget`` on the diagonal,
    [size^2, size^2]: ``variance * exp(-|p - q|^2 / (2 lengthscale^2)) + nugget * [p == q]``."""
    idx = torch.arange(size, dtype=torch.float64)
    yy, xx = torch.meshgrid(idx, idx, indexing="ij")
    points = torch.stack([yy.reshape(-1), xx.reshape(-1)], dim=1)
    dist2 = torch.cdist(points, points) ** 2
    return variance * torch.exp(-dist2 / (2 * lengthscale**2)) + nugget * torch.eye(size * size, dtype=torch.float64)


def image_mixture(
    size: int = 8,
    kinds: Sequence[str] = ("gradient",),
    amplitude: float = 0.5,        # mean pattern scale: components have means +-amplitude * pattern
    lengthscale: float = 2.0,      # correlation length of the stationary covariance, in pixels
    std: float = 0.2,              # per-pixel standard deviation of the correlated part
    nugget: float = 0.01,          # independent per-pixel variance (keeps covariances well conditioned)
    weights: Sequence[float] | None = None,
) -> GaussianMixture:
    """An image-like mixture of 1-channel ``size`` x ``size`` images: for every pattern kind two components with
    opposite means ``+-amplitude * pattern`` and a shared stationary covariance. With the defaults pixel values lie
    mostly in [-1, 1] (|mean| <= 0.5, std ~0.22). Equal weights unless given."""
    means = []
    for kind in kinds:
        pattern = mean_pattern(kind, size).reshape(-1)
        means += [amplitude * pattern, -amplitude * pattern]
    cov = stationary_covariance(size, lengthscale, std**2, nugget)
    k = len(means)
    weights = torch.full((k,), 1.0 / k) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    return GaussianMixture(weights, torch.stack(means), cov.expand(k, -1, -1).clone(), (1, size, size))


# --------------------------------------------------------------------------------------------------------------------
# Fidelity of a sampler against the exact conditional
# (the ground truth of benchmarks/fidelity.py and `repaint validate`)


@dataclass
class InpaintingProblem:
    """One inpainting task with a known answer: a mixture, a mask [1, H, W] (1 = known), an image whose known pixels
    are the evidence, and the exact conditional they imply."""

    mixture: GaussianMixture
    mask: torch.Tensor
    known_image: torch.Tensor
    conditional: ConditionalMixture


def disharmony_problem(size: int = 8, evidence: float = 1.0) -> InpaintingProblem:
    """The failure case of issue 5: a +-gradient mixture (:func:`image_mixture`) and 4 known pixels (2 at the middle
    of the left edge, 2 at the right edge) set to ``evidence`` times the mean of component 0. At the default the
    known pixels rule out the opposite component (exact conditional weight of component 0 is 1 - 6e-11); with a
    small ``evidence`` the conditional is a genuine mixture."""
    mixture = image_mixture(size)
    mask = torch.zeros(1, size, size)
    mid = size // 2
    mask[0, mid - 1 : mid + 1, 0] = 1
    mask[0, mid - 1 : mid + 1, -1] = 1
    known = (evidence * mixture.means[0].view(1, size, size)).to(torch.float32)
    return InpaintingProblem(mixture, mask, known, mixture.conditional(mask, known))


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, directions: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between equal-size point sets a, b [n, d]: sqrt of the mean over random unit
    directions of the squared 1-D W2 (sorted projections)."""
    if a.shape != b.shape:
        raise ValueError(f"sliced Wasserstein needs equal-size sets, got {tuple(a.shape)} and {tuple(b.shape)}")
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(a.shape[1], directions, generator=g, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    pa, _ = torch.sort(a.double() @ dirs, dim=0)
    pb, _ = torch.sort(b.double() @ dirs, dim=0)
    return float(((pa - pb) ** 2).mean().sqrt())


def fidelity_metrics(fills: torch.Tensor, conditional: ConditionalMixture, seed: int = 0) -> dict[str, float]:
    """How far inpainted images [n, C, H, W] are from the exact conditional.

    ``component_tv``: total variation between the exact weights and the share of fills assigned (by largest
    responsibility under the exact conditional) to each component. ``mean_error``: RMS over unknown pixels of the
    fills' mean minus the exact conditional mean. ``sliced_w2``: :func:`sliced_wasserstein` to n exact samples.
    ``weights``: the assigned shares.
    """
    unknown = conditional.unknown_of(fills)
    n, k = len(unknown), conditional.weights.numel()
    labels = conditional.responsibilities(unknown).argmax(1)
    shares = torch.bincount(labels, minlength=k).double() / n
    exact = conditional.sample_unknown(n, torch.Generator().manual_seed(seed + 1))
    return {
        "component_tv": float(0.5 * (shares - conditional.weights).abs().sum()),
        "mean_error": float(((unknown.mean(0) - conditional.mean) ** 2).mean().sqrt()),
        "sliced_w2": sliced_wasserstein(unknown, exact, seed=seed),
        "weights": [float(w) for w in shares],
    }


def sample_problem(settings, problem: InpaintingProblem, n: int, seed: int, *, learn_sigma: bool = True,
                   noise_schedule: str = "linear", steps: int = 1000) -> tuple[torch.Tensor, int, float]:
    """Inpaint ``problem`` n times (seeds ``seed .. seed + n - 1``) with the sampler of ``settings`` over the exact
    denoiser; returns (fills, network evaluations per image, seconds). A particle sampler evaluates several times per
    image and network call, so evaluations are counted per image, not per call."""
    import time

    from ..diffusion import DiffusionConfig
    from ..samplers import get_sampler
    from ..samplers.common import make_generators

    diffusion = Diffusion(DiffusionConfig(steps, noise_schedule, settings.respacing(), learn_sigma))
    exact = problem.mixture.denoiser(diffusion)
    evaluations = 0

    def model(x, model_t):
        nonlocal evaluations
        evaluations += len(x)
        return exact(x, model_t)

    gt = problem.known_image.expand(n, *problem.mixture.shape)
    mask = problem.mask.expand(n, 1, *problem.mixture.shape[1:])
    start = time.perf_counter()
    fills = get_sampler(settings.sampler)(
        model, diffusion, gt, mask, settings=settings, generators=make_generators(range(seed, seed + n))
    )
    return fills, evaluations // n, time.perf_counter() - start


def validate(settings, n: int = 1000, seed: int = 0, problem: InpaintingProblem | None = None,
             learn_sigma: bool = True, noise_schedule: str = "linear", steps: int = 1000) -> dict:
    """Run the sampler of ``settings`` (a :class:`repaint.settings.SamplerSettings`) with the exact denoiser on
    ``problem`` (default :func:`disharmony_problem`) for n images (seeds ``seed .. seed + n - 1``); returns
    :func:`fidelity_metrics` plus ``calls`` (network evaluations per image, counted) and ``seconds``."""
    problem = problem or disharmony_problem()
    fills, calls, seconds = sample_problem(settings, problem, n, seed, learn_sigma=learn_sigma,
                                           noise_schedule=noise_schedule, steps=steps)
    return {**fidelity_metrics(fills, problem.conditional, seed), "calls": calls, "seconds": seconds}

"""Noise tables and the Gaussian maths of a (respaced) DDPM, as the reference RePaint/guided-diffusion computes them.

Conventions. ``t`` indexes the *respaced* process (0 .. T-1); the network is handed ``timestep_map[t]``, the index into
the original process (e.g. 0, 4, 8, ..., 999 for 250 of 1000 steps). Tables are computed in float64 with NumPy and
stored on the device already cast to float32: the reference gathers the float64 entry at t and then casts, which gives
the same numbers. Images are float32 NCHW in [-1, 1].

Equations refer to Ho et al. 2020 (DDPM) and Nichol & Dhariwal 2021 (improved DDPM).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

__all__ = [
    "DiffusionConfig",
    "Diffusion",
    "beta_schedule",
    "space_timesteps",
    "respace_betas",
    "NOISE_SCHEDULES",
    "FIXED_VARIANCES",
]

NOISE_SCHEDULES = ("linear", "cosine", "scaled_linear")
FIXED_VARIANCES = ("large", "small")


@dataclass(frozen=True)
class DiffusionConfig:
    """How the noise ladder is built. The released RePaint/guided-diffusion checkpoints all use the defaults."""

    steps: int = 1000                 # length of the original (training) process
    noise_schedule: str = "linear"    # one of NOISE_SCHEDULES (see beta_schedule)
    timestep_respacing: str = ""      # "" (all steps), "250", "10,10,10" or "ddim50"
    learn_sigma: bool = True          # network predicts [eps, v] (learned-range variance) instead of eps alone
    beta_start: float | None = None   # first beta of "linear" / "scaled_linear"; None = DDPM's 1e-4 * 1000 / steps
    beta_end: float | None = None     # last beta of "linear" / "scaled_linear"; None = DDPM's 0.02 * 1000 / steps
    fixed_variance: str = "large"     # without learn_sigma: "large" (sigma^2 = beta) or "small" (beta~, DDPM eq. 7)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"diffusion steps must be >= 1, got {self.steps}")
        if self.noise_schedule not in NOISE_SCHEDULES:
            raise ValueError(f"noise_schedule must be one of {NOISE_SCHEDULES}, got {self.noise_schedule!r}")
        if self.fixed_variance not in FIXED_VARIANCES:
            raise ValueError(f"fixed_variance must be one of {FIXED_VARIANCES}, got {self.fixed_variance!r}")
        beta_schedule(self.noise_schedule, self.steps, self.beta_start, self.beta_end)  # validates the range

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DiffusionConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown diffusion setting(s): {', '.join(unknown)}")
        return cls(**data)


def beta_schedule(name: str, steps: int, beta_start: float | None = None, beta_end: float | None = None) -> np.ndarray:
    """Base betas in float64.

    "linear": DDPM's betas evenly spaced from ``beta_start`` to ``beta_end`` (default 1e-4 .. 0.02 scaled by
    1000/steps, Ho et al. 2020 Sec. 4); "scaled_linear": the square roots evenly spaced instead (latent diffusion's
    schedule, diffusers' "scaled_linear"); "cosine": improved DDPM eq. 17 with betas capped at 0.999 (diffusers'
    "squaredcos_cap_v2"), which ignores ``beta_start`` / ``beta_end``.
    """
    if name in ("linear", "scaled_linear"):
        scale = 1000 / steps
        start = scale * 0.0001 if beta_start is None else beta_start
        end = scale * 0.02 if beta_end is None else beta_end
        if not 0 < start <= end < 1:
            raise ValueError(f"{name} betas need 0 < beta_start <= beta_end < 1, got {start} .. {end}")
        if name == "linear":
            return np.linspace(start, end, steps, dtype=np.float64)
        return np.linspace(start**0.5, end**0.5, steps, dtype=np.float64) ** 2
    if name == "cosine":
        def alpha_bar(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        return np.array(
            [min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999) for i in range(steps)],
            dtype=np.float64,
        )
    raise ValueError(f"unknown noise schedule {name!r}; expected one of {NOISE_SCHEDULES}")


def space_timesteps(steps: int, respacing: str) -> list[int]:
    """The original-process indices kept by a respacing string (sorted).

    "" keeps every step. "a,b,c" splits the process into len(sections) nearly equal parts (the first ``steps % n``
    one step longer) and keeps ``a``, ``b``, ``c`` evenly strided indices in them; the stride is a float advanced by
    repeated addition and rounded half to even, exactly as the reference does. "ddimN" keeps ``range(0, steps, s)``
    for the smallest integer stride s that gives N steps.
    """
    if respacing in ("", None):
        return list(range(steps))
    if respacing.startswith("ddim"):
        wanted = _parse_int(respacing[4:], respacing)
        for stride in range(1, steps):
            if len(range(0, steps, stride)) == wanted:
                return list(range(0, steps, stride))
        raise ValueError(f"respacing {respacing!r}: no integer stride gives exactly {wanted} of {steps} steps")

    counts = [_parse_int(part, respacing) for part in respacing.split(",")]
    base, extra = divmod(steps, len(counts))
    kept: set[int] = set()
    start = 0
    for i, count in enumerate(counts):
        size = base + (1 if i < extra else 0)
        if not 1 <= count <= size:
            raise ValueError(
                f"respacing {respacing!r}: section {i} has {size} steps, cannot keep {count} of them"
            )
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            kept.add(start + round(position))
            position += stride
        start += size
    return sorted(kept)


def _parse_int(text: str, respacing: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(
            f"bad timestep respacing {respacing!r}: expected e.g. '250', '10,10,10' or 'ddim50'"
        ) from None


def respace_betas(base_betas: np.ndarray, kept: list[int]) -> np.ndarray:
    """Betas of the process that visits only ``kept`` indices, preserving alphā at each kept index."""
    alphas_cumprod = np.cumprod(1.0 - base_betas)
    betas, last = [], 1.0
    for i in kept:
        betas.append(1 - alphas_cumprod[i] / last)
        last = alphas_cumprod[i]
    return np.array(betas, dtype=np.float64)


def _float64_tables(betas: np.ndarray) -> dict[str, np.ndarray]:
    """Every quantity of DDPM eq. 4, 6, 7 and improved-DDPM eq. 15 the sampler needs, in float64."""
    alphas = 1.0 - betas
    ac = np.cumprod(alphas)
    ac_prev = np.append(1.0, ac[:-1])
    posterior_variance = betas * (1.0 - ac_prev) / (1.0 - ac)  # beta~_t, DDPM eq. 7
    return {
        "betas": betas,
        "alphas_cumprod": ac,
        "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": np.sqrt(ac),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1),
        "posterior_variance": posterior_variance,
        # beta~_0 is 0, so index 0 borrows the log of beta~_1 (as the reference does)
        "posterior_log_variance_clipped": np.log(np.append(posterior_variance[1], posterior_variance[1:])),
        "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
        "log_betas": np.log(betas),
        # FIXED_LARGE variance (DDPM's sigma^2 = beta), with beta~_1 at t = 0 for a better likelihood
        "fixed_large_variance": np.append(posterior_variance[1], betas[1:]),
        "fixed_large_log_variance": np.log(np.append(posterior_variance[1], betas[1:])),
    }


def _sqrt32(values: torch.Tensor) -> torch.Tensor:
    """Correctly rounded float32 square root (via float64; some CPU kernels are off by one ulp)."""
    return torch.sqrt(values.double()).float()


class Diffusion:
    """A respaced Gaussian diffusion: float32 tables on one device, and the per-step maths.

    Build with ``Diffusion(DiffusionConfig(timestep_respacing="250"))``. ``t`` arguments are int64 tensors [B] of
    respaced indices; results broadcast over [B, C, H, W].
    """

    def __init__(self, config: DiffusionConfig = DiffusionConfig(), device: torch.device | str = "cpu"):
        self.config = config
        base = beta_schedule(config.noise_schedule, config.steps, config.beta_start, config.beta_end)
        kept = space_timesteps(config.steps, config.timestep_respacing)
        self.tables64 = _float64_tables(respace_betas(base, kept))
        self.num_timesteps = len(kept)
        self.device = torch.device(device)
        self.timestep_map = torch.tensor(kept, dtype=torch.int64, device=self.device)
        for name, values in self.tables64.items():
            setattr(self, name, torch.from_numpy(values).to(torch.float32).to(self.device))
        # Injection and undo take sqrt of the float32 values (reference behaviour), not the float64 sqrt tables.
        self.inject_gt_scale = _sqrt32(self.alphas_cumprod)
        self.inject_noise_scale = _sqrt32(1 - self.alphas_cumprod)
        self.undo_keep_scale = _sqrt32(1 - self.betas)
        self.undo_noise_scale = _sqrt32(self.betas)

    def to(self, device: torch.device | str) -> "Diffusion":
        """This diffusion with its tables on ``device`` (self if already there)."""
        device = torch.device(device)
        return self if device == self.device else Diffusion(self.config, device)

    def __repr__(self) -> str:
        return f"Diffusion({self.config}, T={self.num_timesteps})"

    @staticmethod
    def _at(table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``table[t]`` shaped [B, 1, 1, 1] for broadcasting over images."""
        return table[t].view(-1, 1, 1, 1)

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """What the network is given for respaced ``t``: the original-process index (int64, not rescaled)."""
        return self.timestep_map[t]

    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x_0) (DDPM eq. 4) with the given standard-normal ``noise``."""
        return self._at(self.sqrt_alphas_cumprod, t) * x_start + self._at(self.sqrt_one_minus_alphas_cumprod, t) * noise

    def noise_known(self, gt: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The known image noised to the level of ``t`` as RePaint's injection does it (float32 square roots)."""
        return self._at(self.inject_gt_scale, t) * gt + self._at(self.inject_noise_scale, t) * noise

    def undo(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """One re-noising step into state ``t``: x_t ~ N(sqrt(1 - beta_t) x_{t-1}, beta_t I) (RePaint Alg. 1, l. 10)."""
        return self._at(self.undo_keep_scale, t) * x + self._at(self.undo_noise_scale, t) * noise

    def predict_xstart(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_0 from x_t and predicted noise (DDPM eq. 4 solved for x_0)."""
        return self._at(self.sqrt_recip_alphas_cumprod, t) * x_t - self._at(self.sqrt_recipm1_alphas_cumprod, t) * eps

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, x_start: torch.Tensor) -> torch.Tensor:
        """Noise implied by x_t and an estimate of x_0 (inverse of :meth:`predict_xstart`)."""
        return (self._at(self.sqrt_recip_alphas_cumprod, t) * x_t - x_start) / self._at(
            self.sqrt_recipm1_alphas_cumprod, t
        )

    def posterior_mean(self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Mean of q(x_{t-1} | x_t, x_0) (DDPM eq. 7)."""
        return self._at(self.posterior_mean_coef1, t) * x_start + self._at(self.posterior_mean_coef2, t) * x_t

    def p_mean_variance(
        self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, clip_denoised: bool = True
    ) -> dict[str, torch.Tensor]:
        """Mean, variance, log-variance of p(x_{t-1} | x_t) and the predicted x_0, from the raw network output.

        ``model_output`` is [B, 2C, H, W] (eps, then the learned-range value v in [-1, 1], improved DDPM eq. 15) when
        the diffusion learns sigma, [B, C, H, W] (eps only) otherwise; the fixed variance is then beta_t ("large") or
        the posterior's beta~_t ("small", DDPM eq. 7; index 0 borrows beta~_1's log as the reference does, and no
        noise is added at t = 0 anyway).
        """
        channels = x_t.shape[1]
        if self.config.learn_sigma:
            if model_output.shape[1] != 2 * channels:
                raise ValueError(
                    f"model output has {model_output.shape[1]} channels; a learned-sigma model must give "
                    f"{2 * channels} (eps and variance) for a {channels}-channel image"
                )
            eps, v = model_output.split(channels, dim=1)
            frac = (v + 1) / 2
            log_variance = frac * self._at(self.log_betas, t) + (1 - frac) * self._at(
                self.posterior_log_variance_clipped, t
            )
            variance = torch.exp(log_variance)
        else:
            if model_output.shape[1] != channels:
                raise ValueError(
                    f"model output has {model_output.shape[1]} channels; a fixed-variance model must give {channels}"
                )
            eps = model_output
            if self.config.fixed_variance == "small":
                variance = self._at(self.posterior_variance, t).expand_as(x_t)
                log_variance = self._at(self.posterior_log_variance_clipped, t).expand_as(x_t)
            else:
                variance = self._at(self.fixed_large_variance, t).expand_as(x_t)
                log_variance = self._at(self.fixed_large_log_variance, t).expand_as(x_t)
        pred_xstart = self.predict_xstart(x_t, t, eps)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean = self.posterior_mean(pred_xstart, x_t, t)
        return {"mean": mean, "variance": variance, "log_variance": log_variance, "pred_xstart": pred_xstart}

"""What every sampler shares: the model contract, the step record, seeded noise, guidance, the table entry.

A *model* is any callable ``model(x, model_t) -> output``: ``x`` float [B, C, H, W] in the network's input range,
``model_t`` int64 [B] original-process timesteps; ``output`` is [B, 2C, H, W] (eps and the learned-range variance
value) for a learned-sigma diffusion, [B, C, H, W] (eps) otherwise. Class labels and other conditioning are bound
into the callable (see :func:`repaint.inpainter.unet_model_fn`), so a user can bring any denoiser.

A *sampler* is a function ``run(model, diffusion, gt, mask, *, settings, generators, cond_fn=None, callback=None)``
returning the inpainted batch [B, C, H, W], described by a :class:`Sampler` entry of the table in
:mod:`repaint.samplers`.
"""

from __future__ import annotations

import math

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = [
    "ModelFn", "CondFn", "NoiseFn", "SamplerFn", "Sampler", "SamplingError", "Step", "make_generators", "randn",
    "classifier_guidance", "run_steps", "as_batch_mask", "noise_source", "check_options",
]

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
CondFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NoiseFn = Callable[[torch.Tensor], torch.Tensor]
SamplerFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Sampler:
    """One row of the sampler table."""

    run: SamplerFn                                  # the sampling function (signature in the module docstring)
    calls: Callable[..., int]                       # (settings, respaced T) -> network calls per sample
    summary: str                                    # one line for --help and the web app
    reads_jumps: bool = False                       # walks the jump schedule (jump_length, jump_n_sample, ...)
    reads_eta: bool = False                         # reads settings.eta
    options: Mapping[str, float] = field(default_factory=dict)  # settings.options it takes, with their defaults
    # a classical fill (uint8 [H, W, 3], keep-mask bool [H, W]) -> uint8 [H, W, 3]: no model; repaint.api gives it
    # the whole photo at its own resolution (fit "native") and counts no network call (repaint.samplers.classical)
    fill: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    # a sampler that starts from a classical fill: settings -> that fill; repaint.api runs it once on the whole photo
    # at its own resolution and passes each window's view of the filled photo as ``init`` (repaint.samplers.refine)
    prefill: Callable[..., Callable[[np.ndarray, np.ndarray], np.ndarray]] | None = None


class SamplingError(RuntimeError):
    """The sampler could not produce a valid image (e.g. the model returned NaN)."""


@dataclass
class Step:
    """One transition of the walk, as yielded by :func:`repaint_iter`.

    ``kind`` is "reverse" (a denoising step at ``t_last``: one network call) or "forward" (re-noising into ``t_cur``).
    ``x`` is the running image after the transition, ``pred_xstart`` the latest x_0 estimate (None before the first
    network call). ``index`` counts transitions from 0 to ``total - 1``; ``calls`` counts network calls so far.
    """

    index: int
    total: int
    calls: int
    t_last: int
    t_cur: int
    kind: str
    x: torch.Tensor
    pred_xstart: torch.Tensor | None


def make_generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One seeded generator per image, on ``device``."""
    return [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]


def randn(like: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Standard-normal noise shaped like ``like``; image i drawn from ``generators[i]``.

    Each image's stream depends only on its own generator, so a result does not change with the batch it runs in.
    """
    if len(generators) != like.shape[0]:
        raise ValueError(f"need one generator per image: {len(generators)} generators for a batch of {like.shape[0]}")
    return torch.cat(
        [torch.randn((1, *like.shape[1:]), generator=g, device=like.device, dtype=like.dtype) for g in generators]
    )


def classifier_guidance(classifier: Callable, y: torch.Tensor, scale: float = 1.0) -> CondFn:
    """Gradient of ``scale * log p(y | x_t)`` under a noisy-image classifier (Dhariwal & Nichol 2021, Alg. 1).

    ``classifier(x, model_t) -> logits`` [B, K]. The sampler adds ``variance * gradient`` to the posterior mean.
    """

    def cond_fn(x: torch.Tensor, model_t: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            log_probs = torch.log_softmax(classifier(x_in, model_t), dim=-1)
            chosen = log_probs[torch.arange(len(y), device=y.device), y]
            return torch.autograd.grad(chosen.sum(), x_in)[0] * scale

    return cond_fn


def run_steps(
    steps: Iterator[Step], callback: Callable[[Step], None] | None = None, check_finite: bool = True
) -> torch.Tensor:
    """Drive any step iterator to its end, calling ``callback`` per step; the final image, checked for NaN/inf."""
    step = None
    for step in steps:
        if callback is not None:
            callback(step)
    if check_finite and not bool(torch.isfinite(step.x).all()):
        raise SamplingError("the model produced NaN or infinite values; the result was discarded")
    return step.x


def as_batch_mask(mask: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mask as float [B, 1 or C, H, W] on gt's device; values must already be 0/1."""
    mask = mask.to(device=gt.device, dtype=gt.dtype)
    if mask.dim() == 2:
        mask = mask[None, None]
    elif mask.dim() == 3:
        mask = mask[:, None]
    if mask.dim() != 4 or mask.shape[-2:] != gt.shape[-2:] or mask.shape[1] not in (1, gt.shape[1]):
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit images of shape {tuple(gt.shape)}")
    if mask.shape[0] not in (1, gt.shape[0]):
        raise ValueError(f"{mask.shape[0]} masks for a batch of {gt.shape[0]} images")
    return mask.expand(gt.shape[0], -1, -1, -1)


def noise_source(generators, noise_fn, batch) -> NoiseFn:
    if noise_fn is not None:
        return noise_fn
    if generators is None:
        raise ValueError("pass one torch.Generator per image (generators=...) or a noise_fn")
    generators = list(generators)
    if len(generators) != batch:
        raise ValueError(f"need one generator per image: {len(generators)} generators for a batch of {batch}")
    return lambda like: randn(like, generators)


def check_options(settings, defaults: Mapping[str, float]) -> dict:
    """``settings.options`` merged over ``defaults``; an unknown key or a non-number is a one-line ValueError."""
    unknown = sorted(set(settings.options) - set(defaults))
    if unknown:
        known = f"; options: {', '.join(defaults)}" if defaults else " (it takes none)"
        raise ValueError(f"sampler {settings.sampler!r} has no option(s) {', '.join(unknown)}{known}")
    merged = {**defaults, **settings.options}
    for key, value in merged.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"option {key} of sampler {settings.sampler!r} must be a finite number, got {value!r}")
    return merged

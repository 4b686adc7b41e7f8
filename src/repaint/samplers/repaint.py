"""The RePaint sampling loop (Lugmayr et al. 2022, Alg. 1), as a function over any model callable.

The model is any callable of the contract in :mod:`repaint.samplers.common`.

Two ways to join the known region:

* ``"reference"`` (default), exactly as the reference implementation: before every network call but the very first,
  the known pixels of the *input* ``x_t`` are replaced by the ground truth noised to the level of ``t`` (fresh noise);
  the network sees the merged image, and all pixels of the posterior sample come from the model.
* ``"paper"``, the paper's literal Alg. 1 / eq. 8: the network sees ``x_t``; the unknown pixels of ``x_{t-1}`` are the
  model's sample, the known pixels the ground truth noised to the level of ``t - 1`` (exactly the ground truth at the
  end).

Re-noising steps (schedule going up) are single DDPM forward steps with the respaced beta (Alg. 1, line 10).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from ..diffusion import Diffusion
from ..schedule import transitions
from .common import CondFn, ModelFn, NoiseFn, Sampler, Step, as_batch_mask, noise_source, run_steps

__all__ = ["INJECTION_MODES", "SAMPLER", "repaint", "repaint_iter", "sample"]

INJECTION_MODES = ("reference", "paper")


def repaint_iter(
    model: ModelFn,
    diffusion: Diffusion,
    times: Sequence[int],
    gt: torch.Tensor,
    mask: torch.Tensor,
    *,
    generators: Sequence[torch.Generator] | None = None,
    noise_fn: NoiseFn | None = None,
    x_T: torch.Tensor | None = None,
    cond_fn: CondFn | None = None,
    clip_denoised: bool = True,
    injection: str = "reference",
    paste_known: bool = True,
) -> Iterator[Step]:
    """Run RePaint step by step, yielding a :class:`Step` after every transition of ``times``.

    Args:
        model: the denoiser callable (see the module docstring).
        diffusion: the respaced diffusion the model is sampled with (T = ``diffusion.num_timesteps``).
        times: a jump schedule (:func:`repaint.schedule.jump_schedule`), starting at most at T - 1 and ending at -1.
        gt: [B, C, H, W] known image in [-1, 1]; only its pixels under ``mask == 1`` are used.
        mask: [B, 1 or C, H, W] (or [H, W] / [B, H, W]), 1 = known pixel, 0 = to fill.
        generators: one seeded ``torch.Generator`` per image (on the image's device); every random draw uses them.
        noise_fn: instead of ``generators``, a function returning standard-normal noise shaped like its argument.
        x_T: the starting noise (drawn from the generators when None).
        cond_fn: ``cond_fn(x, model_t) -> gradient`` for guidance (see :func:`classifier_guidance`).
        clip_denoised: clamp the x_0 estimate to [-1, 1] (the reference does).
        injection: "reference" or "paper" (see the module docstring).
        paste_known: after the last step, copy the exact known pixels into the result. The reference does not;
            turn it off to reproduce the reference's output exactly.

    The draw order per image matches the reference: x_T; per denoising step the sampling noise, then the noise of
    the injected ground truth; per re-noising step one noise.
    """
    if injection not in INJECTION_MODES:
        raise ValueError(f"injection must be one of {INJECTION_MODES}, got {injection!r}")
    pairs = transitions(list(times))
    if not pairs or pairs[-1][1] != -1:
        raise ValueError("a schedule must end at t = -1")
    if not 0 <= pairs[0][0] < diffusion.num_timesteps:
        raise ValueError(f"schedule starts at t={pairs[0][0]} but the diffusion has {diffusion.num_timesteps} steps")
    if max(max(pair) for pair in pairs) >= diffusion.num_timesteps:
        raise ValueError(f"schedule goes above t={diffusion.num_timesteps - 1}, the diffusion's last step")
    mask = as_batch_mask(mask, gt)
    noise = noise_source(generators, noise_fn, gt.shape[0])

    x = noise(gt) if x_T is None else x_T.to(gt)
    pred_xstart = None
    calls = 0
    batch = gt.shape[0]
    for index, (t_last, t_cur) in enumerate(pairs):
        t = torch.full((batch,), t_last, dtype=torch.int64, device=gt.device)
        if t_cur < t_last:
            x, pred_xstart = _denoise_step(
                model, diffusion, x, t_last, t, gt, mask, noise, cond_fn, clip_denoised, injection,
                inject=pred_xstart is not None,
            )
            calls += 1
            kind = "reverse"
        else:
            x = diffusion.undo(x, t + 1, noise(x))
            kind = "forward"
        if paste_known and index == len(pairs) - 1:
            x = mask * gt + (1 - mask) * x
        yield Step(index, len(pairs), calls, t_last, t_cur, kind, x, pred_xstart)


def repaint(
    model: ModelFn,
    diffusion: Diffusion,
    times: Sequence[int],
    gt: torch.Tensor,
    mask: torch.Tensor,
    *,
    callback: Callable[[Step], None] | None = None,
    check_finite: bool = True,
    **kwargs,
) -> torch.Tensor:
    """Inpaint ``gt`` where ``mask == 0``; returns the final image [B, C, H, W]. Arguments as :func:`repaint_iter`.

    ``callback(step)`` is called after every transition. With ``check_finite`` a result containing NaN or inf raises
    :class:`SamplingError` (one host synchronisation, at the end).
    """
    return run_steps(repaint_iter(model, diffusion, times, gt, mask, **kwargs), callback, check_finite)


def _denoise_step(model, diffusion, x, t_host, t, gt, mask, noise, cond_fn, clip_denoised, injection, inject):
    """One reverse step at ``t`` (``t_host`` on the host, ``t`` a [B] tensor) with known-region joining.

    Returns (x_{t-1}, pred_x0).
    """
    sample_noise = noise(x)
    if inject and injection == "reference":
        x = mask * diffusion.noise_known(gt, t, noise(x)) + (1 - mask) * x
    model_t = diffusion.model_timesteps(t)
    out = diffusion.p_mean_variance(model(x, model_t), x, t, clip_denoised)
    mean = out["mean"]
    if cond_fn is not None:
        mean = mean + out["variance"] * cond_fn(x, model_t)
    if t_host != 0:  # no noise is added on the last step (DDPM Alg. 2, line 4)
        sample = mean + torch.exp(0.5 * out["log_variance"]) * sample_noise
    else:
        sample = mean
    if injection == "paper":
        known = gt if t_host == 0 else diffusion.noise_known(gt, t - 1, noise(x))
        sample = mask * known + (1 - mask) * sample
    return sample, out["pred_xstart"]


def sample(model, diffusion, gt, mask, *, settings, generators, cond_fn=None, callback=None):
    """RePaint with the jump schedule (Lugmayr et al. 2022, Alg. 1 with resampling)."""
    if settings.options:
        raise ValueError(f"sampler 'repaint' has no option(s) {', '.join(sorted(settings.options))}")
    times = settings.jump_schedule(diffusion.num_timesteps).times()
    return repaint(
        model, diffusion, times, gt, mask, generators=generators, cond_fn=cond_fn, callback=callback,
        clip_denoised=settings.clip_denoised, injection=settings.injection, paste_known=settings.paste_known,
    )


def _calls(settings, num_timesteps: int) -> int:
    return settings.jump_schedule(num_timesteps).network_calls()


SAMPLER = Sampler(sample, _calls, "the paper's RePaint: DDPM steps, jump schedule", reads_jumps=True)

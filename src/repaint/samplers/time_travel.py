"""Samplers beyond the paper: DDIM-RePaint and DDNM (listed by name in :data:`repaint.samplers.SAMPLERS`).

Both walk the same jump schedule as RePaint (:mod:`repaint.schedule`, ``start_resampling`` included) on a respaced
diffusion, with two differences from :func:`repaint.samplers.repaint.repaint`:

* a denoising step ``t -> t - 1`` is a DDIM step (Song et al. 2021, eq. 12) with stochasticity ``eta`` between the
  respaced levels ``abar_t`` and ``abar_{t-1}``: ``x_{t-1} = sqrt(abar_{t-1}) x0 + sqrt(1 - abar_{t-1} - sigma^2) eps
  + sigma z`` with ``sigma = eta sqrt((1 - abar_{t-1}) / (1 - abar_t)) sqrt(1 - abar_t / abar_{t-1})``. eta = 1 is the
  DDPM posterior q(x_{t-1} | x_t, x0) (variance beta~_t), eta = 0 deterministic DDIM. The network's variance output
  (learned sigma) is not used.
* a time-travel jump ``t -> t + j`` is one draw from the forward marginal ``q(x_{t+j} | x_t) = N(sqrt(abar_{t+j} /
  abar_t) x_t, (1 - abar_{t+j} / abar_t) I)`` (DDPM eq. 4 applied between two levels) instead of j single steps; the
  two have the same distribution. The callback sees one "forward" step per jump.

They differ in how the known pixels ``y = mask * gt`` enter:

* ``ddim_repaint``: RePaint's join (Lugmayr et al. 2022, eq. 8): before every network call the known pixels of x_t are
  replaced by ``q_sample(gt, t)`` with fresh noise; the x0 estimate is used as the network gives it.
* ``ddnm``: DDNM's range-null-space decomposition (Wang et al. 2023, eq. 11 and Alg. 1 with time travel, Sec. 3.3):
  x_t is left as it is and the x0 estimate is corrected, ``x0_hat = A^+ y + (I - A^+ A) x0|t``, which for inpainting
  (A = A^+ = diag(mask)) is ``mask * gt + (1 - mask) * x0|t``; the step then uses eps re-derived from x_t and x0_hat,
  so at eta = 1 it samples q(x_{t-1} | x_t, x0_hat) exactly as DDNM eq. 12.

Every random draw goes through the per-image generators (:func:`repaint.samplers.common.randn`); per denoising step
the draw order is the join noise (ddim_repaint only), then the step noise (not on the last step); one draw per jump.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from ..diffusion import Diffusion
from ..schedule import transitions
from .common import ModelFn, Sampler, Step, as_batch_mask, check_options, randn, run_steps

__all__ = ["DDIM_REPAINT", "DDNM", "ddim_repaint", "ddnm", "time_travel_iter", "grouped_moves", "JOINS"]

JOINS = ("repaint", "ddnm")


def grouped_moves(times: Sequence[int]) -> list[tuple[int, int]]:
    """The schedule's transitions with every run of consecutive upward steps merged into one jump ``(t, t + j)``."""
    moves: list[tuple[int, int]] = []
    for t_last, t_cur in transitions(list(times)):
        if t_cur > t_last and moves and moves[-1][1] > moves[-1][0] and moves[-1][1] == t_last:
            moves[-1] = (moves[-1][0], t_cur)
        else:
            moves.append((t_last, t_cur))
    return moves


def _level(table: torch.Tensor, t: int) -> torch.Tensor:
    """abar of state ``t`` (1 for t = -1, the clean image) as a float64 scalar."""
    return torch.ones((), dtype=torch.float64) if t < 0 else table[t]


def time_travel_iter(
    model: ModelFn,
    diffusion: Diffusion,
    times: Sequence[int],
    gt: torch.Tensor,
    mask: torch.Tensor,
    *,
    generators: Sequence[torch.Generator],
    join: str = "repaint",
    eta: float = 1.0,
    x_T: torch.Tensor | None = None,
    cond_fn: Callable | None = None,
    clip_denoised: bool = True,
    paste_known: bool = True,
) -> Iterator[Step]:
    """Walk ``times`` with DDIM(eta) steps down and forward-marginal jumps up, yielding a :class:`Step` per move.

    Args as :func:`repaint.samplers.repaint.repaint_iter`; ``join`` is "repaint" or "ddnm" (module docstring).
    ``gt`` [B, C, H, W] in [-1, 1], ``mask`` 1 = known. ``cond_fn(x, model_t)`` guidance shifts eps by
    ``-sqrt(1 - abar_t) grad`` (Dhariwal & Nichol 2021, Alg. 2).
    Steps are numbered over the grouped moves (:func:`grouped_moves`).
    """
    if join not in JOINS:
        raise ValueError(f"join must be one of {JOINS}, got {join!r}")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    moves = grouped_moves(times)
    if not moves or moves[-1][1] != -1 or max(max(m) for m in moves) >= diffusion.num_timesteps:
        raise ValueError(f"a schedule must end at t = -1 and stay below t = {diffusion.num_timesteps}")
    mask = as_batch_mask(mask, gt)
    generators = list(generators)
    abar = torch.from_numpy(diffusion.tables64["alphas_cumprod"])
    x = randn(gt, generators) if x_T is None else x_T.to(gt)
    pred_xstart, calls = None, 0
    for index, (t_last, t_cur) in enumerate(moves):
        if t_cur < t_last:
            x, pred_xstart = _ddim_step(
                model, diffusion, x, t_last, abar, gt, mask, generators, join, eta, cond_fn, clip_denoised
            )
            calls += 1
        else:
            ratio = _level(abar, t_cur) / _level(abar, t_last)   # abar_{t+j} / abar_t
            x = float(ratio.sqrt()) * x + float((1 - ratio).sqrt()) * randn(x, generators)
        if paste_known and index == len(moves) - 1:
            x = mask * gt + (1 - mask) * x
        kind = "reverse" if t_cur < t_last else "forward"
        yield Step(index, len(moves), calls, t_last, t_cur, kind, x, pred_xstart)


def _ddim_step(model, diffusion, x, t, abar, gt, mask, generators, join, eta, cond_fn, clip_denoised):
    """One DDIM(eta) step from state t to t - 1 with the known region joined; returns (x_{t-1}, x0 estimate)."""
    ab_t, ab_prev = _level(abar, t), _level(abar, t - 1)
    signal, noise = float(ab_t.sqrt()), float((1 - ab_t).sqrt())  # x_t = signal * x0 + noise * eps
    t_batch = torch.full((x.shape[0],), t, dtype=torch.int64, device=x.device)
    if join == "repaint":  # eq. 8: known pixels of x_t from the forward process
        known = signal * gt + noise * randn(x, generators)
        x = mask * known + (1 - mask) * x
    model_t = diffusion.model_timesteps(t_batch)
    eps = model(x, model_t)[:, : x.shape[1]]
    if cond_fn is not None:
        eps = eps - noise * cond_fn(x, model_t)
    x0 = (x - noise * eps) / signal
    if clip_denoised:
        x0 = x0.clamp(-1, 1)
    if join == "ddnm":  # range-null-space: A^+ y + (I - A^+ A) x0|t
        x0 = mask * gt + (1 - mask) * x0
    eps = (x - signal * x0) / noise
    sigma2 = eta**2 * (1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)
    x_prev = float(ab_prev.sqrt()) * x0 + float((1 - ab_prev - sigma2).clamp(min=0).sqrt()) * eps
    if t > 0 and sigma2 > 0:
        x_prev = x_prev + float(sigma2.sqrt()) * randn(x, generators)
    return x_prev, x0


def _make_sampler(join: str, doc: str):
    def sampler(model, diffusion, gt, mask, *, settings, generators, cond_fn=None, callback=None):
        check_options(settings, {})
        times = settings.jump_schedule(diffusion.num_timesteps).times()
        steps = time_travel_iter(
            model, diffusion, times, gt, mask, generators=generators, join=join, eta=settings.eta,
            cond_fn=cond_fn, clip_denoised=settings.clip_denoised, paste_known=settings.paste_known,
        )
        return run_steps(steps, callback)

    sampler.__name__ = sampler.__qualname__ = join if join == "ddnm" else "ddim_repaint"
    sampler.__doc__ = doc
    return sampler


ddim_repaint = _make_sampler("repaint", "RePaint's known-region join with DDIM(eta) steps and jump time travel.")
ddnm = _make_sampler("ddnm", "DDNM: null-space projection of the x0 estimate, DDIM(eta) steps and time travel.")


def _calls(settings, num_timesteps: int) -> int:
    return settings.jump_schedule(num_timesteps).network_calls()


DDIM_REPAINT = Sampler(ddim_repaint, _calls, "RePaint's join with DDIM(eta) steps, same jump schedule",
                       reads_jumps=True, reads_eta=True)
DDNM = Sampler(ddnm, _calls, "DDNM null-space projection with time travel", reads_jumps=True, reads_eta=True)

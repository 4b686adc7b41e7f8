"""Table 4's alternative to resampling, SDEdit-style: denoise T -> T/2 once, then repeatedly re-noise to T/2 and
denoise again. It is one more jump schedule for the RePaint loop (sampler ``"sdedit_repeat"``)."""

from __future__ import annotations

from ..schedule import count_network_calls
from .common import Sampler
from .repaint import repaint

__all__ = ["SAMPLER", "sdedit_schedule", "sdedit_settings_schedule", "sdedit_repeat"]


def sdedit_schedule(t_T: int, repeats: int, restart: int | None = None) -> list[int]:
    """Timesteps ``[t_T - 1, ..., restart]``, then ``repeats`` passes ``restart - 1 ... 0``, separated by single
    re-noising steps ``1 ... restart``, then ``-1``.

    Re-noising by the chain of single forward steps q(x_t | x_{t-1}) is distributed exactly as one jump
    q(x_restart | x_0) (the forward process is Markov), so this is the "go back to T/2 and denoise again" alternative.
    Network calls: ``t_T - restart`` + ``repeats * restart``. ``restart`` defaults to ``t_T // 2``.
    """
    restart = t_T // 2 if restart is None else restart
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if not 1 <= restart < t_T:
        raise ValueError(f"restart must be in 1..{t_T - 1}, got {restart}")
    times = list(range(t_T - 1, restart - 1, -1))
    for rep in range(repeats):
        times += range(restart - 1, -1, -1)
        if rep < repeats - 1:
            times += range(1, restart + 1)
    return times + [-1]


def sdedit_settings_schedule(settings, t_T: int) -> list[int]:
    """The schedule of ``settings.options`` ({"repeats": k, "restart": t or None}) at ``t_T`` respaced steps."""
    unknown = sorted(set(settings.options) - {"repeats", "restart"})
    if unknown:
        raise ValueError(f"sampler 'sdedit_repeat' has no option(s) {', '.join(unknown)}; options: repeats, restart")
    return sdedit_schedule(t_T, int(settings.options.get("repeats", 1)), settings.options.get("restart"))


def sdedit_repeat(model, diffusion, gt, mask, *, settings, generators, cond_fn=None, callback=None):
    """The Table 4 alternative: the RePaint loop over :func:`sdedit_schedule`."""
    times = sdedit_settings_schedule(settings, diffusion.num_timesteps)
    return repaint(
        model, diffusion, times, gt, mask, generators=generators, cond_fn=cond_fn, callback=callback,
        clip_denoised=settings.clip_denoised, injection=settings.injection, paste_known=settings.paste_known,
    )


def _calls(settings, num_timesteps: int) -> int:
    return count_network_calls(sdedit_settings_schedule(settings, num_timesteps))


SAMPLER = Sampler(sdedit_repeat, _calls, "Table 4: denoise to T/2, then re-noise and repeat",
                  options={"repeats": 1, "restart": None})

"""One inpainting run for the web front ends: form values -> settings -> :func:`repaint.api.inpaint`.

The page and the HTTP API both come through :meth:`Runner.run`, so they share the checks, the schedule rule
(:func:`repaint.settings.resolve_settings`), the run gate and the cost limit. Everything about how a photo is fitted
to the model and how the hole is filled is the library's.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..api import (
    FIT_STRATEGIES, Cancelled, Estimate, InpaintResult, Plan, Progress, Window, estimate_plan, inpaint, model_note,
    plan, recommend,
)
from ..samplers import SAMPLERS
from ..settings import SCHEDULES, SamplerSettings, resolve_settings
from .limits import Limits, RunGate, check_pixels
from .models import ModelMenu

__all__ = ["FIT_CHOICES", "SAMPLER_CHOICES", "SCHEDULE_CHOICES", "RunOptions", "RunOutput", "Runner", "photo_stem",
           "preview"]

# "recommended" is the model's own sampler and schedule (the bundled face model's: lanpaint, 46 steps); the presets
# and "custom" (the paper's schedule with the T, j, r given: resampling at every t, so T=250, j=10, r=10 is 2,410
# calls on any model) are RePaint's. An explicit sampler overrides the schedule's.
SCHEDULE_CHOICES = ("recommended", *SCHEDULES, "custom")
SAMPLER_CHOICES = ("recommended", *SAMPLERS)
FIT_CHOICES = FIT_STRATEGIES   # how a photo meets the model: the library's --fit
PREVIEW_EVERY_S = 0.5    # the live x0 preview is composed at most this often
PREVIEW_SIDE = 1024      # and sent at most this large (a window of a resized large photo is the whole photo)


@dataclass(frozen=True)
class RunOptions:
    """What a client may choose. Models are menu names; schedule fields apply only to the "custom" schedule."""

    model: str = "default"
    sampler: str = "recommended"
    schedule: str = "recommended"
    steps: int | None = None          # T
    jump_length: int | None = None    # j
    jump_n_sample: int | None = None  # r
    seed: int = 0
    n_samples: int = 1
    class_label: int | None = None
    fit: str = "auto"                 # the library's fit strategy (auto tiles a hole that one window cannot hold)

    @property
    def seeds(self) -> list[int]:
        return [self.seed + k for k in range(self.n_samples)]


@dataclass
class RunOutput:
    result: InpaintResult
    settings: SamplerSettings
    plan: Plan
    calls: int                                            # network calls made
    seconds: float
    about: str = ""                                       # what the model was trained on, at what size
    note: str | None = None                               # the model does not know such photos (api.model_note)

    @property
    def planned(self) -> int:
        return self.plan.calls


def photo_stem(filename: str | None, fallback: str = "photo") -> str:
    """A safe stem for the files made from an upload: ``holiday photo (2).JPG`` -> ``holiday_photo_2``."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", (filename or "").rsplit("/", 1)[-1].rsplit(".", 1)[0]).strip("._-")
    return stem[:64] or fallback


def preview(photo: np.ndarray, keep: np.ndarray, window: Window, pred_xstart) -> np.ndarray:
    """The part of the photo that ``window`` covers, at the photo's resolution, with its hole showing the current x0
    estimate (first sample, [3, s, s] in [-1, 1]) scaled to the window: what the run would paste there if it stopped
    now. uint8 [h, w, 3], the window clipped to the photo and at most :data:`PREVIEW_SIDE` pixels on its long side."""
    x = ((pred_xstart.detach().float().clamp(-1, 1).cpu() + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    patch = np.asarray(Image.fromarray(x).resize((window.width, window.height), Image.BICUBIC))
    top, left, bottom, right = window.box()
    t, lft, b, r = max(top, 0), max(left, 0), min(bottom, photo.shape[0]), min(right, photo.shape[1])
    out = photo[t:b, lft:r].copy()
    hole = ~keep[t:b, lft:r]
    out[hole] = patch[t - top:b - top, lft - left:r - left][hole]
    if max(out.shape[:2]) > PREVIEW_SIDE:
        k = PREVIEW_SIDE / max(out.shape[:2])
        size = (max(1, round(out.shape[1] * k)), max(1, round(out.shape[0] * k)))
        out = np.asarray(Image.fromarray(out).resize(size, Image.BILINEAR))
    return out


class Runner:
    """Checks a request against the limits, waits for the device (:class:`RunGate`), runs it."""

    def __init__(self, menu: ModelMenu, limits: Limits) -> None:
        self.menu, self.limits = menu, limits
        self.gate = RunGate(limits.max_queue)
        self.stopping = threading.Event()   # set when the server shuts down: every run stops at its next call

    def _stopped(self, cancel: threading.Event | None) -> str | None:
        if self.stopping.is_set():
            return "stopped: the server is shutting down"
        if cancel is not None and cancel.is_set():
            return "cancelled"
        return None

    def check(self, image: np.ndarray, keep: np.ndarray, opts: RunOptions) -> None:
        """Cheap checks before a request waits for the device; ValueError with a one-line message."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"the photo must be an RGB image, got an array of shape {image.shape}")
        check_pixels(image.shape[1], image.shape[0], self.limits, "the photo")
        if keep.shape != image.shape[:2]:
            raise ValueError(f"the mask is {keep.shape[1]}x{keep.shape[0]} but the photo is "
                             f"{image.shape[1]}x{image.shape[0]}; they must be the same size")
        if bool(keep.all()):
            raise ValueError("the mask marks nothing to fill: paint over the region to fill (or upload a mask "
                             "where black = fill)")
        if opts.model not in self.menu.entries:
            raise ValueError(f"unknown model; this server offers: {', '.join(self.menu.entries)}")
        if opts.sampler not in SAMPLER_CHOICES:
            raise ValueError(f"unknown sampler; choose from {', '.join(SAMPLER_CHOICES)}")
        if opts.schedule not in SCHEDULE_CHOICES:
            raise ValueError(f"unknown schedule; choose from {', '.join(SCHEDULE_CHOICES)}")
        if opts.fit not in FIT_CHOICES:
            raise ValueError(f"unknown fit; choose from {', '.join(FIT_CHOICES)}")
        if not 1 <= opts.n_samples <= self.limits.max_samples:
            raise ValueError(f"number of samples must be 1..{self.limits.max_samples}, got {opts.n_samples}")

    def settings(self, recommended: SamplerSettings, opts: RunOptions) -> SamplerSettings:
        custom = opts.schedule == "custom"   # the paper's schedule with the T, j, r typed in, nothing hidden
        named = opts.schedule if opts.schedule in SCHEDULES else ("paper" if custom else None)
        return resolve_settings(
            recommended, schedule=named, sampler=None if opts.sampler == "recommended" else opts.sampler,
            steps=opts.steps if custom else None, jump_length=opts.jump_length if custom else None,
            jump_n_sample=opts.jump_n_sample if custom else None,
        )

    def about(self, model: str) -> str:
        """What a menu model was trained on, at what size (the line the CLI prints as "trained on:")."""
        from ..inpainter import model_description

        if model not in self.menu.entries:
            raise ValueError(f"unknown model {model!r}; this server offers: {', '.join(self.menu.entries)}")
        loaded = self.menu.loaded(model)
        return loaded.description if loaded is not None else model_description(self.menu.entries[model])

    def note(self, image_shape, opts: RunOptions) -> str | None:
        """The line shown with a run when the model does not know such photos (:func:`repaint.api.model_note`)."""
        inpainter = self.menu.get(opts.model)
        return model_note(inpainter, image_shape, self.settings(inpainter.recommended, opts))

    def cost(self, opts: RunOptions) -> str:
        """What the chosen sampler and schedule cost, before anything runs: the settings in words and the network
        calls of one window and sample, counted by the sampler's own rule (what the run will report)."""
        from ..inpainter import recommended_settings
        from ..samplers import describe, network_calls

        if opts.model not in self.menu.entries:
            raise ValueError(f"unknown model; this server offers: {', '.join(self.menu.entries)}")
        loaded = self.menu.loaded(opts.model)
        recommended = loaded.recommended if loaded is not None else recommended_settings(self.menu.entries[opts.model])
        settings = self.settings(recommended, opts)
        steps = loaded.diffusion(settings).num_timesteps if loaded is not None else settings.steps
        if loaded is None and settings.timestep_respacing:
            return describe(settings)
        return f"{describe(settings)}: {network_calls(settings, steps):,} network calls per window and sample"

    def base(self, inpainter, keep: np.ndarray, opts: RunOptions) -> tuple[SamplerSettings, str | None]:
        """The settings the form's choices apply to, and why when they are not the model's usual ones: the model's
        recommendation for this keep-mask (:func:`repaint.api.recommend`: a thin hole in a photo may get its own) when
        the form leaves both the sampler and the schedule at "recommended", else the model's usual recommendation."""
        if opts.sampler == "recommended" and opts.schedule == "recommended":
            return recommend(inpainter, keep)
        return inpainter.recommended, None

    def plan(self, keep: np.ndarray, opts: RunOptions) -> tuple[Plan, SamplerSettings]:
        """What :meth:`run` would do with this keep-mask (loads the model if it is not loaded yet)."""
        return self._plan(keep, opts)[:2]

    def _plan(self, keep: np.ndarray, opts: RunOptions) -> tuple[Plan, SamplerSettings, str | None]:
        inpainter = self.menu.get(opts.model)
        base, why = self.base(inpainter, keep, opts)
        settings = self.settings(base, opts)
        return plan(inpainter, keep, opts.fit, settings, n_samples=opts.n_samples), settings, why

    def estimate(self, chosen: Plan, opts: RunOptions) -> Estimate | None:
        """The time and memory ``chosen`` will cost (:func:`repaint.cost.estimate_plan`). The network is timed only
        while no run holds the device (a run beside it would slow both and spoil the measurement): None while one
        runs and this batch size has not been timed before."""
        inpainter = self.menu.get(opts.model)
        with self.gate.idle() as free:
            return estimate_plan(inpainter, chosen, measure=free)

    def describe_plan(self, keep: np.ndarray, opts: RunOptions) -> str:
        """The plan in words, before Inpaint: how the photo is fitted, the windows, the network calls, and the
        estimated time and memory."""
        from ..samplers import describe

        chosen, settings, why = self._plan(keep, opts)
        side = self.menu.get(opts.model).image_size
        h, w = keep.shape
        fit = {"none": f"the photo is the model's size ({side}x{side})",
               "crop": f"{len(chosen.windows)} window(s) of {side}x{side} around the hole, at full resolution",
               "tile": f"{len(chosen.windows)} tile(s) of {side}x{side} over the hole at the photo's resolution, in "
                       f"{len(chosen.phases)} phase(s)",
               "resize": f"the whole {w}x{h} photo scaled to {side}x{side} (the fill is scaled back)",
               "native": f"a classical fill of the whole {w}x{h} photo at its own resolution, no model"}[chosen.fit]
        guess = self.estimate(chosen, opts)
        words = (f"Plan: {fit}; {chosen.calls:,} network calls for {opts.n_samples} sample(s) "
                 f"({describe(settings)}). Estimate: "
                 + (guess.describe() if guess is not None else "once the run in progress ends (the device is busy)"))
        if chosen.calls > self.limits.max_calls:
            words += f". Over this server's limit of {self.limits.max_calls:,} calls: choose a shorter schedule"
        if why is not None:   # a thin hole got the model's thin-defect setting
            words += f". {why[:1].upper()}{why[1:]}"
        return words

    def run(
        self,
        image: np.ndarray,
        keep: np.ndarray,
        opts: RunOptions,
        *,
        on_progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
        on_preview: Callable[[np.ndarray], None] | None = None,
    ) -> RunOutput:
        """Inpaint ``image`` (uint8 [H, W, 3]) where ``keep`` (bool [H, W]) is False.

        ``on_preview`` gets the photo with the current x0 estimate in the hole (:func:`preview`), at most every
        :data:`PREVIEW_EVERY_S` seconds. Raises ValueError (bad request), :class:`~repaint.web.limits.Busy` (queue
        full), :class:`repaint.api.Cancelled` (``cancel`` or :attr:`stopping` was set) or RuntimeError (the run
        failed).
        """
        self.check(image, keep, opts)
        with self.gate.slot():
            if (why := self._stopped(cancel)) is not None:
                raise Cancelled(f"{why} before it started")
            inpainter = self.menu.get(opts.model)
            chosen, settings = self.plan(keep, opts)   # the run below makes exactly these windows and calls
            if chosen.calls > self.limits.max_calls:   # the device is held here: the estimate is always measured
                raise ValueError(f"this run needs {chosen.calls:,} network calls, over the server's limit of "
                                 f"{self.limits.max_calls:,}: {estimate_plan(inpainter, chosen).describe()}; "
                                 "choose a shorter schedule or fewer samples")
            calls, shown = 0, 0.0

            def callback(progress: Progress) -> None:
                nonlocal calls, shown
                calls = progress.calls
                if (why := self._stopped(cancel)) is not None:
                    raise Cancelled(why)
                if on_progress is not None:
                    on_progress(progress.calls, progress.total)
                if on_preview is not None and progress.pred_xstart is not None \
                        and time.monotonic() - shown >= PREVIEW_EVERY_S:
                    on_preview(preview(image, keep, chosen.windows[progress.window], progress.pred_xstart[0]))
                    shown = time.monotonic()

            start = time.perf_counter()
            labels = None if opts.class_label is None else [opts.class_label] * opts.n_samples
            result = inpaint(inpainter, image, keep, settings=settings, seeds=opts.seeds, labels=labels,
                             fit=opts.fit, callback=callback)
            return RunOutput(result, settings, chosen, calls, time.perf_counter() - start, inpainter.description,
                             model_note(inpainter, image.shape, settings))

"""One inpainting run for the web front ends: form values -> settings -> :func:`repaint.api.inpaint`.

The page and the HTTP API both come through :meth:`Runner.run`, so they share the checks, the schedule rule
(:func:`repaint.settings.resolve_settings`), the run gate and the cost limit. Everything about how a photo is fitted
to the model and how the hole is filled is the library's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..api import Cancelled, InpaintResult, Progress, inpaint, planned_calls
from ..samplers import SAMPLERS
from ..settings import SCHEDULES, SamplerSettings, resolve_settings
from .limits import Limits, RunGate, check_pixels
from .models import ModelMenu

__all__ = ["SAMPLER_CHOICES", "SCHEDULE_CHOICES", "RunOptions", "RunOutput", "Runner", "write_animation"]

# "recommended" is the model's own sampler and schedule (the bundled face model's: lanpaint, 46 steps); the presets
# and "custom" (the paper's schedule with the T, j, r given: resampling at every t, so T=250, j=10, r=10 is 2,410
# calls on any model) are RePaint's. An explicit sampler overrides the schedule's.
SCHEDULE_CHOICES = ("recommended", *SCHEDULES, "custom")
SAMPLER_CHOICES = ("recommended", *SAMPLERS)
FRAMES_PER_RUN = 48      # x0 estimates kept for the animation
ANIMATION_SIDE = 256     # small models' frames are enlarged (nearest neighbour) to at least this many pixels


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

    @property
    def seeds(self) -> list[int]:
        return [self.seed + k for k in range(self.n_samples)]


@dataclass
class RunOutput:
    result: InpaintResult
    settings: SamplerSettings
    planned: int                                          # network calls planned
    calls: int                                            # network calls made
    seconds: float
    frames: list[np.ndarray] = field(default_factory=list)  # uint8 [h, w, 3]: x0 estimates, samples side by side


def _frame(pred_xstart) -> np.ndarray:
    """[B, 3, s, s] in [-1, 1] -> uint8 [s*k, B'*s*k, 3], at most four samples side by side, enlarged k times."""
    x = pred_xstart[:4].detach().float().clamp(-1, 1).cpu()
    x = ((x + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    tiled = np.concatenate(list(x), axis=1)
    k = max(1, ANIMATION_SIDE // x.shape[1])
    return tiled.repeat(k, axis=0).repeat(k, axis=1) if k > 1 else tiled


def write_animation(frames: list[np.ndarray], path: Path, ms_per_frame: int = 80) -> Path:
    """An animated GIF of the frames (the last one held for a second)."""
    images = [Image.fromarray(f) for f in frames]
    durations = [ms_per_frame] * (len(images) - 1) + [1000]
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0, optimize=False)
    return path


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

    def run(
        self,
        image: np.ndarray,
        keep: np.ndarray,
        opts: RunOptions,
        *,
        on_progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
        animate: bool = False,
    ) -> RunOutput:
        """Inpaint ``image`` (uint8 [H, W, 3]) where ``keep`` (bool [H, W]) is False.

        Raises ValueError (bad request), :class:`~repaint.web.limits.Busy` (queue full), :class:`repaint.api.Cancelled`
        (``cancel`` was set) or RuntimeError (the run failed).
        """
        self.check(image, keep, opts)
        with self.gate.slot():
            if (why := self._stopped(cancel)) is not None:
                raise Cancelled(f"{why} before it started")
            inpainter = self.menu.get(opts.model)
            settings = self.settings(inpainter.recommended, opts)
            planned = planned_calls(inpainter, settings, keep, n_samples=opts.n_samples)
            if planned > self.limits.max_calls:
                raise ValueError(f"this run needs {planned:,} network calls, over the server's limit of "
                                 f"{self.limits.max_calls:,}; choose a shorter schedule or fewer samples")
            frames: list[np.ndarray] = []
            every = max(1, planned // FRAMES_PER_RUN)
            calls = 0

            def callback(progress: Progress) -> None:
                nonlocal calls
                before, calls = calls, progress.calls
                if (why := self._stopped(cancel)) is not None:
                    raise Cancelled(why)
                if on_progress is not None:
                    on_progress(progress.calls, progress.total)
                if animate and progress.pred_xstart is not None and calls // every > before // every:
                    frames.append(_frame(progress.pred_xstart))

            start = time.perf_counter()
            labels = None if opts.class_label is None else [opts.class_label] * opts.n_samples
            result = inpaint(inpainter, image, keep, settings=settings, seeds=opts.seeds, labels=labels,
                             callback=callback)
            return RunOutput(result, settings, planned, calls, time.perf_counter() - start, frames)

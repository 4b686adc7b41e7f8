"""The library entry point: photos of any size and their masks in, full-size inpainted photos out.

Every front end (``repaint inpaint``, ``repaint eval``, the web app) calls :func:`inpaint` or :func:`inpaint_stream`,
so the rules below hold everywhere:

* **Fit strategies** (``fit=``): how a photo meets the model's square size, and the windows cut for it
  (:mod:`repaint.windows`). Only the hole's pixels are written into a copy of the photo: every pixel outside the
  hole is the original byte, bit for bit (the one exception: ``paste_known=False`` at fit ``none`` returns the
  model's raw output, as the reference does).
* **Classical fills** (samplers ``biharmonic``, ``telea``, ``ns``: table rows with a ``fill``, no model) take the
  same path: their plan is fit ``"native"`` (the whole photo at its own resolution, zero network calls), the fill
  runs on the full-size photo, and its hole pixels are pasted like a model's. Front ends need no case of their own.
* **Samplers that start from a classical fill** (``refine``: a table row with a ``prefill``) get the photo filled
  classically once, at its own resolution; every window or tile is cut from the filled photo and its view passed
  to the sampler as the starting fill (``init``). Only hole pixels are written, and where a window was scaled only
  the model's change is scaled back (:func:`repaint.windows.paste` with ``base``), so the fill keeps its detail.
* **Masks** are boolean arrays of the photo's size, True = keep (white in mask files), False = fill. A mask of
  another size is an error in every mode.
* **Batch size**: where none is given, :func:`plan` runs as many (window, sample) jobs per network call as the
  photo has, up to 8 and up to what the free memory holds (:func:`repaint.cost.choose_batch`).
* **Cost before it is spent**: :func:`plan` counts the windows and network calls, and
  :func:`~repaint.cost.estimate_plan` turns a plan into seconds and peak memory from a short timed call of the
  network on this machine (:mod:`repaint.cost`).
* **Seeds**: sample ``k`` of a photo uses ``seeds[k]`` for every window (each window and seed its own
  ``torch.Generator``), so a result does not depend on the batch it ran in.
* **Averaging** (``settings.average`` K > 1): sample ``s`` is the pixel mean of K independent draws, with the seeds
  ``s*K`` to ``s*K + K - 1`` (:func:`draw_seeds`), each a whole run of the sampler (tiles included), so it costs K
  times the calls and :func:`plan` counts them. The mean of draws estimates the posterior mean: closer to the
  original by PSNR than any one draw, and smoother. Outside the hole every draw is the original, so the mean is too.

Images here are ``numpy`` uint8 arrays [H, W, 3] (what files and browsers hold); tensors appear only at model size.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .cost import BatchChoice, Estimate, choose_batch, estimate_plan
from .files import png_writer, write_group
from .images import ImageError, OutputDirs, read_rgb, to_uint8
from .masks import THIN_WIDTH, MaskError, read_keep_mask
from .inpainter import Inpainter
from .samplers import describe, entry, network_calls
from .samplers.common import Step
from .settings import SamplerSettings
from .windows import FIT_STRATEGIES, Plan, Window, native_plan, native_view, paste, plan_windows, window_view

__all__ = [
    "sample_filename",
    "draw_seeds",
    "recommend",
    "FIT_STRATEGIES",
    "Window",
    "Plan",
    "Progress",
    "Cancelled",
    "InpaintRequest",
    "InpaintResult",
    "load_inpainter",
    "read_image",
    "read_mask",
    "plan",
    "planned_calls",
    "Estimate",
    "estimate_plan",
    "BatchChoice",
    "choose_batch",
    "model_note",
    "inpaint",
    "inpaint_stream",
    "write_result",
    "result_paths",
]

MAX_SEED = 2**63 - 1
MAX_SAMPLES = 999   # samples per photo, in every front end (evaluation seeds leave room for 1,000 per image)


class Cancelled(Exception):
    """Raised by a progress callback to stop a run; :func:`inpaint` lets it through and nothing is written."""


@dataclass
class Progress:
    """Where a run stands, passed to the callback after every network call."""

    calls: int                       # network calls done so far in this run
    total: int | None                # planned network calls of the run (None when streaming an open-ended source)
    window: int                      # index of the window being sampled in its photo
    windows: int                     # windows of that photo
    seeds: list[int]                 # seeds of the batch being sampled
    pred_xstart: torch.Tensor | None  # [B, 3, s, s] current x0 estimate at model size, in [-1, 1]
    rows: list[tuple[str, int, int]] = field(default_factory=list)  # (photo name, window, seed) of each batch row


@dataclass
class InpaintRequest:
    """One photo to inpaint: uint8 [H, W, 3], its keep-mask (bool [H, W], True = keep), a name and the seeds."""

    image: np.ndarray
    mask: np.ndarray
    seeds: Sequence[int] = (0,)
    name: str = "image"
    labels: Sequence[int] | None = None   # class label per seed (class-conditional models / guidance)
    tag: object = None                    # anything the caller wants back with the result


@dataclass
class InpaintResult:
    """A finished photo: ``samples[seed]`` uint8 [H, W, 3] at full size, the original bytes outside the hole."""

    name: str
    image: np.ndarray
    mask: np.ndarray
    samples: dict[int, np.ndarray]
    windows: list[Window]
    fit: str
    # model-size views of each window, for evaluation: gt [3, s, s] and keep-mask [1, s, s] in [-1, 1] / {0, 1}
    window_gt: list[torch.Tensor] = field(default_factory=list)
    window_mask: list[torch.Tensor] = field(default_factory=list)
    window_samples: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    tag: object = None


# ---------------------------------------------------------------------------------------------------------------
# Inputs.
# ---------------------------------------------------------------------------------------------------------------

def load_inpainter(model: str | os.PathLike = "default", *, classifier: str | None = None, device: str = "auto",
                   preset: str | None = None, accel=None, unet_config: dict | None = None) -> Inpainter:
    """Load a model by name (``repaint models``; fetched on first use unless REPAINT_OFFLINE / HF_HUB_OFFLINE),
    ``hf:ORG/NAME[@REVISION]``, file path, diffusers folder or "default" (the bundled face model) onto
    ``device`` ("auto" = CUDA when available); ``unet_config`` sets architecture fields a checkpoint does not
    determine (see :meth:`repaint.inpainter.Inpainter.load`)."""
    from .accel import Accel, resolve_device

    return Inpainter.load(str(model), classifier=classifier, device=resolve_device(device), preset=preset,
                          accel=accel or Accel(), unet_config=unet_config)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as uint8 [H, W, 3] (RGB; alpha dropped and other modes converted with a warning)."""
    return read_rgb(path)


def read_mask(path: str | os.PathLike, invert: bool = False) -> np.ndarray:
    """A mask file as bool [H, W], True = keep (white); ``invert`` for masks that mark holes white."""
    return read_keep_mask(path, invert=invert)


def _as_image(image) -> np.ndarray:
    if not isinstance(image, np.ndarray):  # a PIL image
        image = np.asarray(image.convert("RGB"))
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"an image must be uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
    return image


def _as_mask(mask, image: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(mask, np.ndarray):  # a PIL image: white = keep
        mask = np.asarray(mask.convert("L")) >= 128
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise MaskError(f"the mask of {name} must be [H, W], got {list(mask.shape)}")
    if mask.dtype != np.bool_:
        mask = mask >= (128 if mask.dtype == np.uint8 and mask.max() > 1 else 0.5)
    if mask.shape != image.shape[:2]:
        raise MaskError(f"the mask of {name} is {mask.shape[1]}x{mask.shape[0]} but the image is "
                        f"{image.shape[1]}x{image.shape[0]}; a mask must have its image's size")
    if mask.all():
        raise MaskError(f"the mask of {name} has no pixel to fill (all white = keep); black marks the region to "
                        "fill (invert the mask if it uses white for holes)")
    if not mask.any():
        warnings.warn(f"the mask of {name} is all black: nothing of the image is kept, this is unconditional "
                      "generation", stacklevel=3)
    return mask


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("at least one seed is needed")
    if len(seeds) > MAX_SAMPLES:
        raise ValueError(f"{len(seeds):,} samples asked for; at most {MAX_SAMPLES} per photo")
    bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad:
        raise ValueError(f"seed {bad[0]} is out of range 0..{MAX_SEED}")
    if len(set(seeds)) != len(seeds):
        raise ValueError("seeds must differ from each other")
    return seeds


# ---------------------------------------------------------------------------------------------------------------
# Running.
# ---------------------------------------------------------------------------------------------------------------

@dataclass(eq=False)
class _Photo:
    request: InpaintRequest
    draws: list[int]        # the seeds of the sampling runs: the request's seeds, or K per seed when averaging
    fit: str
    windows: list[Window]
    gts: list[torch.Tensor]
    masks: list[torch.Tensor]
    samples: dict[int, list[torch.Tensor | None]]
    pending: int
    phases: tuple[tuple[int, ...], ...] = ()   # fit "tile": run phase by phase (_run_tiled), never queued
    filled: torch.Tensor | None = None         # a classical fill's result, shared by every seed (_run_fill)
    start: np.ndarray | None = None            # the photo classically filled first (a row with a prefill), uint8


@dataclass
class _Job:
    photo: _Photo
    window: int
    k: int            # index into the photo's draws


def _prefill(settings: SamplerSettings):
    """The classical fill a sampler starts from (its row's ``prefill``), or None."""
    row = entry(settings.sampler)
    return None if row.prefill is None else row.prefill(settings)


def draw_seeds(seed: int, average: int = 1) -> list[int]:
    """The seeds of the draws averaged into sample ``seed``: ``seed*K`` to ``seed*K + K - 1`` (``[seed]`` itself
    when K = 1), so the draws of two samples never share a seed."""
    if seed * average + average - 1 > MAX_SEED:
        raise ValueError(f"seed {seed} is out of range 0..{(MAX_SEED + 1) // average - 1} when averaging {average} "
                         "draws")
    return [seed * average + k for k in range(average)]


def _prepare(request: InpaintRequest, size: int, fit: str, native: bool = False, prefill=None,
             average: int = 1) -> _Photo:
    image = _as_image(request.image)
    mask = _as_mask(request.mask, image, request.name)
    request.image, request.mask = image, mask
    seeds = _check_seeds(request.seeds)
    request.seeds = seeds
    if request.labels is not None and len(request.labels) != len(seeds):
        raise ValueError(f"{len(request.labels)} class labels for {len(seeds)} seeds of {request.name}")
    draws = seeds if native else [d for s in seeds for d in draw_seeds(s, average)]   # a classical fill draws nothing
    layout = native_plan(mask, fit) if native else plan_windows(mask, size, fit)
    concrete, windows = layout.fit, list(layout.windows)
    start = None if prefill is None else prefill(image, mask)   # known pixels untouched: a fill writes the hole only
    if layout.phases:   # tile views depend on the phases before them: made as the phases run
        return _Photo(request, draws, concrete, windows, [], [], {}, 0, layout.phases, start=start)
    source = image if start is None else start
    views = [native_view(image, mask)] if native else [window_view(source, mask, w, size) for w in windows]
    return _Photo(request, draws, concrete, windows, [g for g, _ in views], [m for _, m in views],
                  {d: [None] * len(windows) for d in draws}, len(windows) * len(draws), start=start)


def _label_of(photo: _Photo, k: int) -> int | None:
    """The class label of draw ``k`` of ``photo``: its sample's label."""
    labels = photo.request.labels
    return None if labels is None else labels[k * len(labels) // len(photo.draws)]


def _average(photo: _Photo, samples: dict) -> dict:
    """Per-draw results (images or lists of window tensors) -> per-sample results, the mean of each sample's draws
    (uint8 images rounded to the nearest byte; tensors in float)."""
    seeds = photo.request.seeds
    if len(photo.draws) == len(seeds):
        return samples
    per = len(photo.draws) // len(seeds)
    out = {}
    for i, seed in enumerate(seeds):
        group = [samples[d] for d in photo.draws[i * per:(i + 1) * per]]
        if isinstance(group[0], np.ndarray):
            out[seed] = np.rint(np.mean(np.stack(group).astype(np.float64), axis=0)).astype(np.uint8)
        else:
            out[seed] = [torch.stack(views).mean(0) for views in zip(*group)]
    return out


def plan(inpainter: Inpainter, mask: np.ndarray, fit: str = "auto", settings: SamplerSettings | None = None, *,
         n_samples: int = 1, batch_size: int | None = None) -> Plan:
    """What :func:`inpaint` will do with a keep-mask on this model, before anything is sampled: the concrete fit, the
    windows and (given ``settings``) the network calls. ``batch_size`` None: as many jobs as the photo has, up to
    what :func:`~repaint.cost.choose_batch` allows here. A classical fill's plan is fit "native", zero calls."""
    if settings is not None and entry(settings.sampler).fill is not None:
        return native_plan(mask, fit, n_samples=n_samples, batch_size=batch_size)
    per_batch = 0 if settings is None else network_calls(settings, inpainter.diffusion(settings).num_timesteps)
    draws = n_samples * (1 if settings is None else settings.average)   # averaging: K sampling runs per sample
    return plan_windows(mask, inpainter.image_size, fit, n_samples=draws, batch_size=batch_size,
                        calls_per_batch=per_batch, max_batch=choose_batch(inpainter, batch_size).batch)


def recommend(inpainter: Inpainter, mask: np.ndarray) -> tuple[SamplerSettings, str | None]:
    """The settings a photo with this keep-mask gets when the user names no sampler or schedule
    (:meth:`Inpainter.recommended_for`), and the line every front end shows when they are not the model's usual ones
    (a thin hole), else None."""
    chosen = inpainter.recommended_for(mask)
    if chosen == inpainter.recommended:
        return chosen, None
    return chosen, (f"thin hole (every part at most {THIN_WIDTH} px wide): {describe(chosen)}, the model's choice for "
                    "thin defects in photos (docs/real-photos.md)")


def model_note(inpainter: Inpainter, image_shape: Sequence[int], settings: SamplerSettings | None = None) -> str | None:
    """The line every front end shows with a photo's plan when the model does not know such photos (the bundled
    64x64 face model on anything but a 64x64 input, :meth:`Inpainter.note_for`); None when it does, or when a
    classical fill runs without the model."""
    if settings is not None and entry(settings.sampler).fill is not None:
        return None
    return inpainter.note_for(int(image_shape[0]), int(image_shape[1]))


def planned_calls(inpainter: Inpainter, settings: SamplerSettings, mask: np.ndarray, *, fit: str = "auto",
                  n_samples: int = 1, batch_size: int | None = None) -> int:
    """Network calls :func:`inpaint` makes for one photo (:func:`plan`'s count)."""
    return plan(inpainter, mask, fit, settings, n_samples=n_samples, batch_size=batch_size).calls


def inpaint_stream(
    inpainter: Inpainter,
    requests: Iterable[InpaintRequest],
    settings: SamplerSettings,
    *,
    fit: str = "auto",
    batch_size: int = 8,
    classifier_scale: float = 1.0,
    callback: Callable[[Progress], None] | None = None,
    total: int | None = None,
    on_error: Callable[[InpaintRequest, Exception], None] | None = None,
) -> Iterator[InpaintResult]:
    """Inpaint photos as they come, batching (window, seed) jobs across photos, and yield each photo as soon as all
    its samples exist. At most about ``batch_size`` jobs' photos are held at once, so memory does not grow with the
    number of photos.

    ``on_error(request, err)``: called for a request whose image or mask is unusable (a ValueError); without it the
    error is raised. ``total``: planned network calls, passed on to ``callback`` in :class:`Progress`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    size = inpainter.image_size
    fill = entry(settings.sampler).fill
    queue: list[_Job] = []
    done_calls = 0
    source = iter(requests)
    exhausted = False
    while True:
        while not exhausted and len(queue) < batch_size:
            request = next(source, None)
            if request is None:
                exhausted = True
                break
            try:
                photo = request if isinstance(request, _Photo) else _prepare(request, size, fit, fill is not None,
                                                                              _prefill(settings), settings.average)
            except ValueError as err:
                if on_error is None:
                    raise
                on_error(request, err)
                continue
            if photo.phases:
                result, done_calls = _run_tiled(inpainter, photo, settings, batch_size, classifier_scale, callback,
                                                done_calls, total)
                yield result
                continue
            queue += [_Job(photo, w, k) for w in range(len(photo.windows)) for k in range(len(photo.draws))]
        if not queue:
            return
        batch, queue = queue[:batch_size], queue[batch_size:]
        if fill is not None:
            _run_fill(batch, fill)
        else:
            done_calls = _run_batch(inpainter, batch, settings, classifier_scale, callback, done_calls, total)
        for photo in dict.fromkeys(job.photo for job in batch):
            if photo.pending == 0:
                yield _finish(photo, raw=not settings.paste_known)


def _sample(inpainter, gts, masks, rows, labels, windows, settings, classifier_scale, callback, done_calls, total):
    """One network batch: ``rows`` are (photo name, window, seed) of the stacked views ``gts`` / ``masks``;
    ``windows`` is the window count of the first row's photo. Returns the samples (on the CPU) and the run's calls
    after them, reporting :class:`Progress` after every call. A sampler with a ``prefill`` gets views of the
    classically filled photo, and those views are its starting fill (``init``)."""
    seeds = [seed for _, _, seed in rows]
    calls = done_calls

    def on_step(step: Step) -> None:   # step.calls counts the sampler's calls so far (several per step for some)
        nonlocal calls
        if step.kind == "reverse":
            calls = done_calls + step.calls
            if callback is not None:
                callback(Progress(calls, total, rows[0][1], windows, seeds, step.pred_xstart, rows))

    images = torch.stack(gts)
    extra = {"init": images} if entry(settings.sampler).prefill is not None else {}
    out = inpainter(images, torch.stack(masks), seeds, settings, labels=labels, classifier_scale=classifier_scale,
                    callback=on_step, **extra).cpu()
    return out, calls


def _run_batch(inpainter, batch: list[_Job], settings, classifier_scale, callback, done_calls, total) -> int:
    rows = [(job.photo.request.name, job.window, job.photo.draws[job.k]) for job in batch]
    labels = None
    if any(job.photo.request.labels is not None for job in batch):
        labels = [_label_of(job.photo, job.k) for job in batch]
    out, calls = _sample(inpainter, [job.photo.gts[job.window] for job in batch],
                         [job.photo.masks[job.window] for job in batch], rows, labels, len(batch[0].photo.windows),
                         settings, classifier_scale, callback, done_calls, total)
    for b, job in enumerate(batch):
        job.photo.samples[job.photo.draws[job.k]][job.window] = out[b]
        job.photo.pending -= 1
    return calls


def _run_tiled(inpainter, photo: _Photo, settings, batch_size, classifier_scale, callback, done_calls, total):
    """Fit "tile": each phase's tiles (no two overlapping) in batches; a tile's view is the photo as filled so far,
    with the pixels of earlier tiles known. Returns the finished result and the run's call count."""
    request, size = photo.request, inpainter.image_size
    seeds = list(photo.draws)
    work = {seed: (request.image if photo.start is None else photo.start).copy() for seed in seeds}
    known = {seed: request.mask.copy() for seed in seeds}
    calls = done_calls
    for phase in photo.phases:
        jobs = [(w, k) for w in phase for k in range(len(seeds))]
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            views = [window_view(work[seeds[k]], known[seeds[k]], photo.windows[w], size) for w, k in chunk]
            rows = [(request.name, w, seeds[k]) for w, k in chunk]
            labels = None if request.labels is None else [_label_of(photo, k) for _, k in chunk]
            out, calls = _sample(inpainter, [g for g, _ in views], [m for _, m in views], rows, labels,
                                 len(photo.windows), settings, classifier_scale, callback, calls, total)
            for (w, k), sample in zip(chunk, out):
                tile, seed = photo.windows[w], seeds[k]
                paste(work[seed], known[seed], tile, sample)          # writes only pixels still unknown
                known[seed][tile.top:tile.top + tile.height, tile.left:tile.left + tile.width] = True
    result = InpaintResult(request.name, request.image, request.mask, _average(photo, work), photo.windows, photo.fit,
                           tag=request.tag)
    return result, calls


def _run_fill(batch: list[_Job], fill) -> None:
    """A classical fill of each job's whole photo, computed once per photo (it draws no noise: every seed gets it)."""
    for job in batch:
        photo = job.photo
        if photo.filled is None:
            photo.filled = native_view(fill(photo.request.image, photo.request.mask), photo.request.mask)[0]
        photo.samples[photo.draws[job.k]][job.window] = photo.filled
        photo.pending -= 1


def _finish(photo: _Photo, raw: bool) -> InpaintResult:
    """The full-size samples. ``raw`` (``paste_known=False``) at fit "none" keeps the model's whole output, known
    region included, as the reference writes it; otherwise only hole pixels are pasted into the photo."""
    request = photo.request
    samples = {}
    for seed, per_window in photo.samples.items():
        if raw and photo.fit == "none":
            samples[seed] = to_uint8(per_window[0])
            continue
        target = (request.image if photo.start is None else photo.start).copy()
        for w, sample, base in zip(photo.windows, per_window, photo.gts):
            paste(target, request.mask, w, sample, None if photo.start is None else base)
        samples[seed] = target
    return InpaintResult(request.name, request.image, request.mask, _average(photo, samples), photo.windows,
                         photo.fit, photo.gts, photo.masks, _average(photo, photo.samples), request.tag)


def inpaint(
    inpainter: Inpainter,
    image,
    mask,
    *,
    settings: SamplerSettings,
    seeds: Sequence[int] = (0,),
    fit: str = "auto",
    labels: Sequence[int] | None = None,
    classifier_scale: float = 1.0,
    batch_size: int | None = None,
    callback: Callable[[Progress], None] | None = None,
    name: str = "image",
) -> InpaintResult:
    """Inpaint one photo (uint8 [H, W, 3] or a PIL image) where ``mask`` (bool [H, W], True = keep) is False.

    Returns the full-size samples, one per seed (module docstring for the fit strategies). ``callback`` gets a
    :class:`Progress` after every network call; raising :class:`Cancelled` there stops the run.
    """
    photo = _prepare(InpaintRequest(image, mask, seeds, name, labels), inpainter.image_size, fit,
                     entry(settings.sampler).fill is not None, _prefill(settings), settings.average)
    layout = plan(inpainter, photo.request.mask, fit, settings, n_samples=len(photo.request.seeds),
                  batch_size=batch_size)
    results = list(inpaint_stream(inpainter, [photo], settings, fit=fit, batch_size=layout.batch_size,
                                  classifier_scale=classifier_scale, callback=callback, total=layout.calls))
    return results[0]


# ---------------------------------------------------------------------------------------------------------------
# Writing.
# ---------------------------------------------------------------------------------------------------------------

def sample_filename(name: str, seed: int) -> str:
    """The file name of one sample of the photo ``name``: ``NAME_sSEED.png``, as every front end writes it."""
    return f"{name}_s{seed}.png"


def result_paths(dirs: OutputDirs | str | os.PathLike, name: str, seeds: Sequence[int]) -> dict[str, list[Path]]:
    """The files :func:`write_result` writes for photo ``name`` and ``seeds``, by folder key."""
    dirs = dirs if isinstance(dirs, OutputDirs) else OutputDirs.under(dirs)
    return {"inpainted": [dirs.inpainted / sample_filename(name, seed) for seed in seeds],
            "gt_masked": [dirs.gt_masked / f"{name}.png"], "gt_keep_mask": [dirs.gt_keep_mask / f"{name}.png"],
            "gt": [dirs.gt / f"{name}.png"]}


def write_result(result: InpaintResult, dirs: OutputDirs | str | os.PathLike, name: str | None = None,
                 source: str | os.PathLike | None = None) -> list[Path]:
    """Write a result in the reference's layout, all files or none (each atomic, the group removed on failure):
    ``inpainted/NAME_sSEED.png`` (full size), ``gt_masked/NAME.png`` (hole black), ``gt_keep_mask/NAME.png``
    (white = keep), ``gt/NAME.png`` (the input). ``source``: the file the image was read from; an 8-bit RGB PNG
    is copied byte for byte into ``gt/`` (same pixels, no re-encoding of a large photo)."""
    paths = result_paths(dirs, name or result.name, list(result.samples))
    masked = np.where(result.mask[..., None], result.image, 0).astype(np.uint8)
    files = {path: png_writer(sample) for path, sample in zip(paths["inpainted"], result.samples.values())}
    files[paths["gt_masked"][0]] = png_writer(masked)
    files[paths["gt_keep_mask"][0]] = png_writer((result.mask * 255).astype(np.uint8))
    files[paths["gt"][0]] = _copy_writer(source) if _is_rgb_png(source) else png_writer(result.image)
    return write_group(files)


def _is_rgb_png(path: str | os.PathLike | None) -> bool:
    from PIL import Image

    if path is None:
        return False
    try:
        with Image.open(path) as img:
            return img.format == "PNG" and img.mode == "RGB"
    except OSError:
        return False


def _copy_writer(path: str | os.PathLike):
    def write(f) -> None:
        with open(path, "rb") as src:
            shutil.copyfileobj(src, f, 1 << 20)

    return write

"""The library entry point: photos of any size and their masks in, full-size inpainted photos out.

Every front end (``repaint inpaint``, ``repaint eval``, the web app) calls :func:`inpaint` or :func:`inpaint_stream`,
so the rules below hold everywhere:

* **Fit strategies** (``fit=``) bring a photo to the model's square size ``s`` and back:

  - ``"crop"``: each connected hole region gets a square context window around its bounding box with a margin
    (half the box's longer side, at least ``s / 4``, less where the photo's short side is smaller), never smaller
    than ``s`` (small holes are inpainted at the model's own resolution), shifted inward to stay inside the photo.
    Regions whose windows overlap are merged and get one window. A window larger than ``s`` is downscaled to ``s``,
    inpainted, and scaled back up.
  - ``"resize"``: the whole photo is scaled to ``s`` x ``s`` and the result back to the photo's size.
  - ``"none"``: the photo must already be ``s`` x ``s``.
  - ``"auto"``: ``none`` at the model's size, ``crop`` when both sides are at least ``s``, ``resize`` otherwise.

  Only the hole's pixels are written into a copy of the photo: every pixel outside the hole is the original byte,
  bit for bit (the one exception: ``paste_known=False`` at fit ``none`` returns the model's raw output, as the
  reference does). Every hole pixel inside a window is unknown to the model there, whichever region it belongs to.
  A window that sticks out of a photo smaller than it (in ``crop``, a hole larger than the photo's short side)
  treats the outside as unknown too; it is never pasted.
* **Masks** are boolean arrays of the photo's size, True = keep (white in mask files), False = fill. A mask of
  another size is an error in every mode.
* **Seeds**: sample ``k`` of a photo uses ``seeds[k]`` for every window (each window and seed its own
  ``torch.Generator``), so a result does not depend on the batch it ran in.

Images here are ``numpy`` uint8 arrays [H, W, 3] (what files and browsers hold); tensors appear only at model size.
"""

from __future__ import annotations

import math
import os
import shutil
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .files import png_writer, write_group
from .images import ImageError, OutputDirs, read_rgb, to_uint8
from .masks import MaskError, read_keep_mask
from .inpainter import Inpainter
from .samplers import network_calls
from .samplers.common import Step
from .settings import SamplerSettings

__all__ = [
    "FIT_STRATEGIES",
    "Window",
    "Progress",
    "Cancelled",
    "InpaintRequest",
    "InpaintResult",
    "load_inpainter",
    "read_image",
    "read_mask",
    "plan",
    "planned_calls",
    "inpaint",
    "inpaint_stream",
    "write_result",
]

FIT_STRATEGIES = ("auto", "crop", "resize", "none")
MAX_SEED = 2**63 - 1


class Cancelled(Exception):
    """Raised by a progress callback to stop a run; :func:`inpaint` lets it through and nothing is written."""


@dataclass(frozen=True)
class Window:
    """The region of the photo that one model-sized sample covers: a square in ``crop``, the whole photo in
    ``resize`` and ``none``.

    In ``crop``, ``top``/``left`` may be negative and the square may reach past the photo (only when the photo is
    smaller than the window along that side); those pixels are unknown to the model and never pasted.
    """

    top: int
    left: int
    height: int
    width: int

    def box(self) -> tuple[int, int, int, int]:
        return self.top, self.left, self.top + self.height, self.left + self.width


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
    """Load a model by preset name, file path, diffusers folder or "default" (the bundled face model) onto
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
    bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad:
        raise ValueError(f"seed {bad[0]} is out of range 0..{MAX_SEED}")
    if len(set(seeds)) != len(seeds):
        raise ValueError("seeds must differ from each other")
    return seeds


# ---------------------------------------------------------------------------------------------------------------
# Windows.
# ---------------------------------------------------------------------------------------------------------------

def resolve_fit(fit: str, height: int, width: int, size: int) -> str:
    """The concrete strategy for a photo of ``height`` x ``width`` and a model of side ``size``."""
    if fit not in FIT_STRATEGIES:
        raise ValueError(f"fit must be one of {', '.join(FIT_STRATEGIES)}, got {fit!r}")
    if fit == "auto":
        if (height, width) == (size, size):
            return "none"
        return "crop" if min(height, width) >= size else "resize"
    if fit == "none" and (height, width) != (size, size):
        raise ImageError(f"the image is {width}x{height} but the model works at {size}x{size}; use fit 'crop' "
                         "(a window around each hole) or 'resize' (the whole image), or 'auto'")
    return fit


def _square_around(box: tuple[int, int, int, int], size: int, height: int, width: int) -> Window:
    """The square window of a hole's bounding box ``(y0, x0, y1, x1)``: margin, at least the model's size, inside
    the photo where the photo is large enough."""
    y0, x0, y1, x1 = box
    longer = max(y1 - y0, x1 - x0)
    side = max(size, longer + 2 * max(longer // 2, math.ceil(size / 4)))
    side = min(side, max(longer, size, min(height, width)))   # no wider margin than the photo has

    def place(lo: int, hi: int, extent: int) -> int:
        start = (lo + hi - side) // 2
        if side >= extent:                      # the photo is narrower than the window: centre it on the photo
            return (extent - side) // 2
        return min(max(start, 0), extent - side)

    return Window(place(y0, y1, height), place(x0, x1, width), side, side)


def _overlap(a: Window, b: Window) -> bool:
    ay0, ax0, ay1, ax1 = a.box()
    by0, bx0, by1, bx1 = b.box()
    return ay0 < by1 and by0 < ay1 and ax0 < bx1 and bx0 < ax1


def crop_windows(hole: np.ndarray, size: int) -> list[Window]:
    """Square windows over the hole regions of ``hole`` (bool [H, W], True = fill), merged until none overlap."""
    from scipy import ndimage

    height, width = hole.shape
    labels, count = ndimage.label(hole, structure=np.ones((3, 3), dtype=bool))
    boxes = [(s[0].start, s[1].start, s[0].stop, s[1].stop) for s in ndimage.find_objects(labels)]
    while True:
        windows = [_square_around(b, size, height, width) for b in boxes]
        groups = _overlap_groups(windows)
        if len(groups) == len(boxes):
            return sorted(windows, key=lambda w: (w.top, w.left))
        boxes = [(min(boxes[i][0] for i in g), min(boxes[i][1] for i in g),
                  max(boxes[i][2] for i in g), max(boxes[i][3] for i in g)) for g in groups]


def _overlap_groups(windows: list[Window]) -> list[list[int]]:
    """Indices of ``windows`` grouped by connected overlap (vectorised: thousands of thin holes are common)."""
    from scipy.sparse.csgraph import connected_components

    box = np.array([w.box() for w in windows], dtype=np.int64)
    y0, x0, y1, x1 = (box[:, i] for i in range(4))
    touching = (y0[:, None] < y1[None]) & (y0[None] < y1[:, None]) & (x0[:, None] < x1[None]) & (x0[None] < x1[:, None])
    count, label = connected_components(touching, directed=False)
    groups: list[list[int]] = [[] for _ in range(count)]
    for i, g in enumerate(label):
        groups[g].append(i)
    return groups


def windows_for(mask: np.ndarray, size: int, fit: str) -> list[Window]:
    """The windows of a keep-mask under a concrete strategy ("none", "resize" or "crop")."""
    height, width = mask.shape
    if fit in ("none", "resize"):
        return [Window(0, 0, height, width)]
    return crop_windows(~mask, size)


# ---------------------------------------------------------------------------------------------------------------
# Model-size views of a window and the way back.
# ---------------------------------------------------------------------------------------------------------------

def _cut(array: np.ndarray, w: Window, fill) -> np.ndarray:
    """``array[w]`` with the part outside the photo set to ``fill``."""
    height, width = array.shape[:2]
    out = np.full((w.height, w.width) + array.shape[2:], fill, dtype=array.dtype)
    y0, x0, y1, x1 = max(w.top, 0), max(w.left, 0), min(w.top + w.height, height), min(w.left + w.width, width)
    out[y0 - w.top:y1 - w.top, x0 - w.left:x1 - w.left] = array[y0:y1, x0:x1]
    return out


def _scale(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Bicubic, antialiased when shrinking; [C, H, W] float."""
    if tuple(x.shape[-2:]) == hw:
        return x
    shrink = hw[0] < x.shape[-2] or hw[1] < x.shape[-1]
    return F.interpolate(x[None], size=hw, mode="bicubic", antialias=shrink, align_corners=False)[0].clamp(-1, 1)


def window_view(image: np.ndarray, mask: np.ndarray, w: Window, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's view of window ``w``: gt [3, s, s] in [-1, 1] and keep-mask [1, s, s] in {0, 1}.

    A model pixel is known only if every photo pixel under it is known, so a hole never shrinks when scaled down.
    """
    pixels = torch.from_numpy(_cut(image, w, 0)).permute(2, 0, 1).float() / 127.5 - 1
    keep = torch.from_numpy(_cut(mask, w, False)).float()[None]
    gt = _scale(pixels, (size, size))
    if keep.shape[-2:] != (size, size):
        keep = (F.adaptive_avg_pool2d(keep[None], (size, size))[0] > 1 - 1e-6).float()
    return gt, keep


def paste(target: np.ndarray, mask: np.ndarray, w: Window, sample: torch.Tensor) -> None:
    """Write the hole pixels of window ``w`` from the model-size ``sample`` [3, s, s] into ``target`` (in place)."""
    height, width = mask.shape
    full = _scale(sample.detach().float().cpu(), (w.height, w.width))
    fill = ((full + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    y0, x0, y1, x1 = max(w.top, 0), max(w.left, 0), min(w.top + w.height, height), min(w.left + w.width, width)
    region = fill[y0 - w.top:y1 - w.top, x0 - w.left:x1 - w.left]
    hole = ~mask[y0:y1, x0:x1]
    target[y0:y1, x0:x1][hole] = region[hole]


# ---------------------------------------------------------------------------------------------------------------
# Running.
# ---------------------------------------------------------------------------------------------------------------

@dataclass(eq=False)
class _Photo:
    request: InpaintRequest
    fit: str
    windows: list[Window]
    gts: list[torch.Tensor]
    masks: list[torch.Tensor]
    samples: dict[int, list[torch.Tensor | None]]
    pending: int


@dataclass
class _Job:
    photo: _Photo
    window: int
    k: int            # index into the photo's seeds


def _prepare(request: InpaintRequest, size: int, fit: str) -> _Photo:
    image = _as_image(request.image)
    mask = _as_mask(request.mask, image, request.name)
    request.image, request.mask = image, mask
    seeds = _check_seeds(request.seeds)
    request.seeds = seeds
    if request.labels is not None and len(request.labels) != len(seeds):
        raise ValueError(f"{len(request.labels)} class labels for {len(seeds)} seeds of {request.name}")
    concrete = resolve_fit(fit, *mask.shape, size)
    windows = windows_for(mask, size, concrete)
    views = [window_view(image, mask, w, size) for w in windows]
    return _Photo(request, concrete, windows, [g for g, _ in views], [m for _, m in views],
                  {s: [None] * len(windows) for s in seeds}, len(windows) * len(seeds))


def plan(inpainter: Inpainter, mask: np.ndarray, fit: str = "auto") -> tuple[str, list[Window]]:
    """The concrete strategy and the windows a keep-mask gets with this model (nothing is sampled)."""
    concrete = resolve_fit(fit, *mask.shape, inpainter.image_size)
    return concrete, windows_for(mask, inpainter.image_size, concrete)


def planned_calls(inpainter: Inpainter, settings: SamplerSettings, mask: np.ndarray, *, fit: str = "auto",
                  n_samples: int = 1, batch_size: int | None = None) -> int:
    """Network calls :func:`inpaint` makes for one photo: per batch of (window, seed) jobs, the sampler's count."""
    _, windows = plan(inpainter, mask, fit)
    jobs = len(windows) * n_samples
    batch = batch_size or min(jobs, 8)
    per_batch = network_calls(settings, inpainter.diffusion(settings).num_timesteps)
    return per_batch * math.ceil(jobs / batch)


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
                photo = request if isinstance(request, _Photo) else _prepare(request, size, fit)
            except ValueError as err:
                if on_error is None:
                    raise
                on_error(request, err)
                continue
            queue += [_Job(photo, w, k) for w in range(len(photo.windows)) for k in range(len(photo.request.seeds))]
        if not queue:
            return
        batch, queue = queue[:batch_size], queue[batch_size:]
        done_calls = _run_batch(inpainter, batch, settings, classifier_scale, callback, done_calls, total)
        for photo in dict.fromkeys(job.photo for job in batch):
            if photo.pending == 0:
                yield _finish(photo, raw=not settings.paste_known)


def _run_batch(inpainter, batch: list[_Job], settings, classifier_scale, callback, done_calls, total) -> int:
    seeds = [job.photo.request.seeds[job.k] for job in batch]
    labels = None
    if any(job.photo.request.labels is not None for job in batch):
        labels = [job.photo.request.labels[job.k] for job in batch]
    calls = done_calls

    def on_step(step: Step) -> None:   # step.calls counts the sampler's calls so far (several per step for some)
        nonlocal calls
        if step.kind == "reverse":
            calls = done_calls + step.calls
            if callback is not None:
                first = batch[0]
                rows = [(job.photo.request.name, job.window, seed) for job, seed in zip(batch, seeds)]
                callback(Progress(calls, total, first.window, len(first.photo.windows), seeds, step.pred_xstart,
                                  rows))

    out = inpainter(torch.stack([job.photo.gts[job.window] for job in batch]),
                    torch.stack([job.photo.masks[job.window] for job in batch]), seeds, settings,
                    labels=labels, classifier_scale=classifier_scale, callback=on_step).cpu()
    for b, job in enumerate(batch):
        job.photo.samples[job.photo.request.seeds[job.k]][job.window] = out[b]
        job.photo.pending -= 1
    return calls


def _finish(photo: _Photo, raw: bool) -> InpaintResult:
    """The full-size samples. ``raw`` (``paste_known=False``) at fit "none" keeps the model's whole output, known
    region included, as the reference writes it; otherwise only hole pixels are pasted into the photo."""
    request = photo.request
    samples = {}
    for seed, per_window in photo.samples.items():
        if raw and photo.fit == "none":
            samples[seed] = to_uint8(per_window[0])
            continue
        target = request.image.copy()
        for w, sample in zip(photo.windows, per_window):
            paste(target, request.mask, w, sample)
        samples[seed] = target
    return InpaintResult(request.name, request.image, request.mask, samples, photo.windows, photo.fit,
                         photo.gts, photo.masks, photo.samples, request.tag)


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
    photo = _prepare(InpaintRequest(image, mask, seeds, name, labels), inpainter.image_size, fit)
    jobs = len(photo.windows) * len(photo.request.seeds)
    batch = batch_size or min(jobs, 8)
    total = network_calls(settings, inpainter.diffusion(settings).num_timesteps) * math.ceil(jobs / batch)
    results = list(inpaint_stream(inpainter, [photo], settings, fit=fit, batch_size=batch,
                                  classifier_scale=classifier_scale, callback=callback, total=total))
    return results[0]


# ---------------------------------------------------------------------------------------------------------------
# Writing.
# ---------------------------------------------------------------------------------------------------------------

def write_result(result: InpaintResult, dirs: OutputDirs | str | os.PathLike, name: str | None = None,
                 source: str | os.PathLike | None = None) -> list[Path]:
    """Write a result in the reference's layout, all files or none (each atomic, the group removed on failure):
    ``inpainted/NAME_sSEED.png`` (full size), ``gt_masked/NAME.png`` (hole black), ``gt_keep_mask/NAME.png``
    (white = keep), ``gt/NAME.png`` (the input). ``source``: the file the image was read from; an 8-bit RGB PNG
    is copied byte for byte into ``gt/`` (same pixels, no re-encoding of a large photo)."""
    dirs = dirs if isinstance(dirs, OutputDirs) else OutputDirs.under(dirs)
    name = name or result.name
    masked = np.where(result.mask[..., None], result.image, 0).astype(np.uint8)
    files = {dirs.inpainted / f"{name}_s{seed}.png": png_writer(sample) for seed, sample in result.samples.items()}
    files[dirs.gt_masked / f"{name}.png"] = png_writer(masked)
    files[dirs.gt_keep_mask / f"{name}.png"] = png_writer((result.mask * 255).astype(np.uint8))
    files[dirs.gt / f"{name}.png"] = _copy_writer(source) if _is_rgb_png(source) else png_writer(result.image)
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

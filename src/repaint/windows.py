"""How a photo of any size meets a model of square side ``s``: the fit strategies, the windows they cut, and the way
from a window to the model's view and back.

The fit strategies (``fit=``) bring a photo to the model's square size ``s`` and back:

- ``"crop"``: each connected hole region gets a square context window around its bounding box with a margin
  (half the box's longer side, at least ``s / 4``, less where the photo's short side is smaller), never smaller
  than ``s`` (small holes are inpainted at the model's own resolution), shifted inward to stay inside the photo.
  Regions whose windows overlap are merged and get one window. A window larger than ``s`` is downscaled to ``s``,
  inpainted, and scaled back up.
- ``"resize"``: the whole photo is scaled to ``s`` x ``s`` and the result back to the photo's size.
- ``"none"``: the photo must already be ``s`` x ``s``.
- ``"auto"``: ``none`` at the model's size, ``crop`` when both sides are at least ``s``, ``resize`` otherwise.

A sampler without a model (a classical fill, :mod:`repaint.samplers.classical`) gets the concrete fit ``"native"``
whatever was asked (:func:`native_plan`): one window, the whole photo at its own resolution, no scaling either way,
no network call.

Only the hole's pixels are written into a copy of the photo: every pixel outside the hole is the original byte,
bit for bit (the one exception: ``paste_known=False`` at fit ``none`` returns the model's raw output, as the
reference does). Every hole pixel inside a window is unknown to the model there, whichever region it belongs to.
A window that sticks out of a photo smaller than it (in ``crop``, a hole larger than the photo's short side)
treats the outside as unknown too; it is never pasted.

:func:`plan_windows` says what a photo will cost before anything is sampled: its concrete strategy, its windows and the
network calls (the same :class:`Plan` that :func:`repaint.api.inpaint` runs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .images import ImageError

__all__ = ["FIT_STRATEGIES", "NATIVE", "Window", "Plan", "plan_windows", "native_plan", "native_view", "resolve_fit",
           "crop_windows", "windows_for", "window_view", "paste"]

FIT_STRATEGIES = ("auto", "crop", "resize", "none")
NATIVE = "native"   # the concrete fit of a classical fill: the whole photo at its own size, no model
DEFAULT_BATCH = 8   # (window, sample) jobs per network call unless told otherwise


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


@dataclass(frozen=True)
class Plan:
    """What one photo will be: the concrete strategy, its windows, and with ``n_samples`` samples per window run
    ``batch_size`` jobs at a time, the network calls (``calls_per_batch`` each)."""

    fit: str
    windows: tuple[Window, ...]
    n_samples: int = 1
    batch_size: int = DEFAULT_BATCH
    calls_per_batch: int = 0

    @property
    def jobs(self) -> int:
        return len(self.windows) * self.n_samples

    @property
    def calls(self) -> int:
        return self.calls_per_batch * math.ceil(self.jobs / self.batch_size)


def plan_windows(mask: np.ndarray, size: int, fit: str = "auto", *, n_samples: int = 1, batch_size: int | None = None,
                 calls_per_batch: int = 0) -> Plan:
    """The :class:`Plan` of a keep-mask (bool [H, W]) for a model of side ``size``. ``batch_size`` None: as many jobs
    as the photo has, up to :data:`DEFAULT_BATCH`."""
    concrete = resolve_fit(fit, *mask.shape, size)
    windows = tuple(windows_for(mask, size, concrete))
    jobs = len(windows) * n_samples
    batch = batch_size or min(jobs, DEFAULT_BATCH)
    if batch < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch}")
    return Plan(concrete, windows, n_samples, batch, calls_per_batch)


def native_plan(mask: np.ndarray, fit: str = "auto", *, n_samples: int = 1, batch_size: int | None = None) -> Plan:
    """The :class:`Plan` of a sampler without a model: fit ``"native"``, one window covering the photo, zero calls.
    ``fit`` is checked as a name only (a classical fill needs no size match)."""
    if fit not in FIT_STRATEGIES:
        raise ValueError(f"fit must be one of {', '.join(FIT_STRATEGIES)}, got {fit!r}")
    batch = batch_size or min(n_samples, DEFAULT_BATCH)
    if batch < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch}")
    return Plan(NATIVE, (Window(0, 0, *mask.shape),), n_samples, batch, 0)


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


# Model-size views of a window and the way back

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


def native_view(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole photo unscaled, as :func:`window_view` gives a window: gt [3, H, W] in [-1, 1], keep [1, H, W]."""
    gt = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 127.5 - 1   # a copy: inputs may be read-only
    return gt, torch.from_numpy(np.array(mask)).float()[None]


def paste(target: np.ndarray, mask: np.ndarray, w: Window, sample: torch.Tensor) -> None:
    """Write the hole pixels of window ``w`` from the model-size ``sample`` [3, s, s] into ``target`` (in place)."""
    height, width = mask.shape
    full = _scale(sample.detach().float().cpu(), (w.height, w.width))
    fill = ((full + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    y0, x0, y1, x1 = max(w.top, 0), max(w.left, 0), min(w.top + w.height, height), min(w.left + w.width, width)
    region = fill[y0 - w.top:y1 - w.top, x0 - w.left:x1 - w.left]
    hole = ~mask[y0:y1, x0:x1]
    target[y0:y1, x0:x1][hole] = region[hole]

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
- ``"tile"``: the photo at its own resolution: model-sized tiles (side ``s``, overlapping by ``s / 4``) over the
  holes' bounding box, in *phases* (four on a regular grid) whose tiles never overlap and run as one batch. A tile
  sees the photo's known pixels and every pixel the tiles of earlier phases filled as known, so the overlaps are
  joined by the model's own conditioning (nothing is averaged: a pixel keeps the first fill it gets). Both sides of
  the photo must be at least ``s``. A hole needing more than :data:`MAX_TILES` tiles is refused (one line naming
  ``resize``).
- ``"auto"``: ``none`` at the model's size; when both sides are at least ``s``, ``crop`` if every hole region's
  window is the model's size (scale 1) and ``tile`` otherwise, so a hole is never silently filled at a fraction of
  the photo's resolution where tiles can serve it; ``resize`` for a photo smaller than ``s``.

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

__all__ = ["FIT_STRATEGIES", "MAX_TILES", "NATIVE", "Window", "Plan", "plan_windows", "native_plan", "native_view",
           "resolve_fit", "tile_phases", "crop_windows", "windows_for", "window_view", "paste"]

FIT_STRATEGIES = ("auto", "crop", "resize", "none", "tile")
NATIVE = "native"   # the concrete fit of a classical fill: the whole photo at its own size, no model
DEFAULT_BATCH = 8   # (window, sample) jobs per network call unless told otherwise
MAX_TILES = 4096    # tiles of one photo's plan: 64x64 tiles 48 px apart cover about 3,000 x 3,000 px of hole


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
    phases: tuple[tuple[int, ...], ...] = ()   # fit "tile": window indices run together, one phase after another

    @property
    def jobs(self) -> int:
        return len(self.windows) * self.n_samples

    @property
    def batches(self) -> int:
        if self.phases:
            return sum(math.ceil(len(p) * self.n_samples / self.batch_size) for p in self.phases)
        return math.ceil(self.jobs / self.batch_size)

    @property
    def calls(self) -> int:
        return self.calls_per_batch * self.batches


def plan_windows(mask: np.ndarray, size: int, fit: str = "auto", *, n_samples: int = 1, batch_size: int | None = None,
                 calls_per_batch: int = 0, max_batch: int = DEFAULT_BATCH) -> Plan:
    """The :class:`Plan` of a keep-mask (bool [H, W]) for a model of side ``size``. ``batch_size`` None: as many jobs
    as the photo has, up to ``max_batch``."""
    concrete = resolve_fit(fit, *mask.shape, size)
    phases: tuple[tuple[int, ...], ...] = ()
    crops = crop_windows(~mask, size) if concrete == "crop" else []
    if fit == "auto" and any(w.height > size for w in crops):
        concrete = "tile"      # a region's window would be scaled down: tiles fill it at the photo's resolution
    if concrete == "tile":
        grouped = tile_phases(~mask, size)
        count = sum(len(p) for p in grouped)
        if count > MAX_TILES:
            raise ImageError(f"the hole needs {count:,} tiles of {size}x{size} at the photo's resolution (the limit is "
                             f"{MAX_TILES:,}); use fit 'resize' (the whole photo scaled to the model) or 'crop'")
        windows = tuple(w for phase in grouped for w in phase)
        starts = np.cumsum([0] + [len(p) for p in grouped])
        phases = tuple(tuple(range(a, b)) for a, b in zip(starts[:-1], starts[1:]))
        widest = max(len(p) for p in grouped) * n_samples
    else:
        windows = tuple(crops) if concrete == "crop" else tuple(windows_for(mask, size, concrete))
        widest = len(windows) * n_samples
    batch = batch_size or min(widest, max_batch)
    if batch < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch}")
    return Plan(concrete, windows, n_samples, batch, calls_per_batch, phases)


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
    if fit == "tile" and min(height, width) < size:
        raise ImageError(f"the image is {width}x{height}, smaller than the model's {size}x{size} tiles; use fit "
                         "'resize' or 'auto'")
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


def _tile_starts(lo: int, hi: int, size: int, stride: int, extent: int) -> list[int]:
    """Starts of the fewest tiles of side ``size``, ``stride`` apart, that cover [lo, hi), centred on it and inside
    [0, extent); where such a run is longer than the photo, as many tiles spread evenly over the photo."""
    count = 1 if hi - lo <= size else math.ceil((hi - lo - size) / stride) + 1
    span = size + (count - 1) * stride
    if span <= extent:
        first = min(max((lo + hi - span) // 2, 0), extent - span)
        return [first + k * stride for k in range(count)]
    return sorted({round(v) for v in np.linspace(0, extent - size, count)})


def tile_phases(hole: np.ndarray, size: int, overlap: int | None = None) -> list[list[Window]]:
    """Model-sized tiles over ``hole`` (bool [H, W], True = fill) at the photo's resolution, grouped in phases.

    Tiles sit on one grid over the hole's bounding box, ``size - overlap`` apart (default overlap ``size // 4``);
    only tiles holding a hole pixel are kept. A tile's phase is the parity of its grid row and column (so two tiles
    of a phase are two grid steps apart and do not overlap), or, where a photo too short for a regular grid makes
    the steps uneven and they would, the next phase where it overlaps no tile. Empty phases are left out.
    """
    height, width = hole.shape
    overlap = size // 4 if overlap is None else overlap
    if not 0 <= overlap < size:
        raise ValueError(f"tile overlap must be in 0..{size - 1}, got {overlap}")
    ys, xs = np.nonzero(hole)
    if len(ys) == 0:
        return []
    rows = _tile_starts(int(ys.min()), int(ys.max()) + 1, size, size - overlap, height)
    cols = _tile_starts(int(xs.min()), int(xs.max()) + 1, size, size - overlap, width)
    phases: dict[int, list[Window]] = {}
    for r, top in enumerate(rows):
        for c, left in enumerate(cols):
            if not hole[top:top + size, left:left + size].any():
                continue
            tile = Window(top, left, size, size)
            phase = 2 * (r % 2) + c % 2          # the grid's parity; past 3 only where uneven spacing makes it clash
            while any(_overlap(tile, other) for other in phases.get(phase, [])):
                phase = max(phase + 1, 4)
            phases.setdefault(phase, []).append(tile)
    return [phases[k] for k in sorted(phases)]


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
    """The windows of a keep-mask under a concrete strategy ("none", "resize", "crop" or "tile")."""
    height, width = mask.shape
    if fit in ("none", "resize"):
        return [Window(0, 0, height, width)]
    if fit == "tile":
        return [w for phase in tile_phases(~mask, size) for w in phase]
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


def paste(target: np.ndarray, mask: np.ndarray, w: Window, sample: torch.Tensor,
          base: torch.Tensor | None = None) -> None:
    """Write the hole pixels of window ``w`` from the model-size ``sample`` [3, s, s] into ``target`` (in place).

    ``base`` [3, s, s]: the view the sample started from, cut from ``target`` itself (a photo already filled at its
    own resolution, :mod:`repaint.samplers.refine`). Then only the change is scaled: a hole pixel becomes its value
    in ``target`` plus the scaled-up ``sample - base``, so the fill keeps its full-resolution detail where the model
    left it alone (at scale 1 this is ``sample`` itself)."""
    height, width = mask.shape
    if base is None:
        full = _scale(sample.detach().float().cpu(), (w.height, w.width))
    else:
        change = sample.detach().float().cpu() - base.float().cpu()
        scaled = F.interpolate(change[None], size=(w.height, w.width), mode="bicubic", align_corners=False)[0]
        full = torch.from_numpy(_cut(target, w, 0)).permute(2, 0, 1).float() / 127.5 - 1 + scaled
    fill = ((full + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    y0, x0, y1, x1 = max(w.top, 0), max(w.left, 0), min(w.top + w.height, height), min(w.left + w.width, width)
    region = fill[y0 - w.top:y1 - w.top, x0 - w.left:x1 - w.left]
    hole = ~mask[y0:y1, x0:x1]
    target[y0:y1, x0:x1][hole] = region[hole]

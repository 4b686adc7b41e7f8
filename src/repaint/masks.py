"""Inpainting masks: the six settings of the RePaint paper (Sec. 5), mask files and previews.

Convention, asserted at every boundary of this module:
    a mask is a float32 tensor of shape [H, W] with 1 = known (keep) and 0 = unknown (fill).
    In image files white = keep and black = fill, as in the reference RePaint's `gt_keep_masks`.

Kinds (`MASK_KINDS`), all available at any size (H, W >= 8):
    wide                LaMa's `random_thick_256` masks: thick random brush strokes, or random boxes.
    narrow              LaMa's `random_thin_256` masks: many thin random brush strokes.
    every_second_line   even rows (y = 0, 2, 4, ...) known, odd rows to fill.
    super_resolve_2x    pixels with y % 2 == 0 and x % 2 == 0 known (a quarter of the image).
    half                one half known; `side` names the KNOWN half (default "left": right half filled).
    expand              only the centre H//4 x W//4 rectangle known (the centre 64 x 64 at 256 x 256).

Random kinds draw every number from one `numpy.random.Generator` seeded by the caller, so a seed fixes the mask.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from .files import atomic_write, is_image_file, png_writer

Size = int | tuple[int, int]
Seed = int | Sequence[int]

MIN_SIDE = 8


class MaskError(ValueError):
    """A mask file that cannot be used (missing, unreadable, wrong size)."""


# ---------------------------------------------------------------------------------------------------------------
# Random masks of the LaMa benchmark (Suvorov et al. 2022), parameters of its evaluation configs at 256 x 256.
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StrokeParams:
    """Random polyline brush strokes (LaMa `irregular_kwargs`), lengths in pixels at 256 x 256."""
    min_times: int          # fewest strokes
    max_times: int          # most strokes (inclusive)
    max_width: int          # brush width is 5 + U{0 .. max_width - 1}
    max_angle: int          # segment angle is 0.01 + U{0 .. max_angle - 1} radians (mirrored on even strokes)
    max_len: int            # segment length is 10 + U{0 .. max_len - 1}
    min_width: int = 5
    min_len: int = 10
    max_segments: int = 5   # each stroke has 1 .. max_segments segments


@dataclass(frozen=True)
class BoxParams:
    """Random axis-aligned boxes (LaMa `box_kwargs`), lengths in pixels at 256 x 256."""
    margin: int             # boxes keep this far from the border
    min_size: int           # box side is U{min_size .. max_size - 1}
    max_size: int
    min_times: int          # fewest boxes
    max_times: int          # most boxes (inclusive)


@dataclass(frozen=True)
class RandomMaskConfig:
    """One LaMa mask family: strokes or boxes are chosen per mask with odds 1 : box_weight."""
    strokes: StrokeParams
    boxes: BoxParams | None = None
    box_weight: float = 0.0
    max_hole: float = 0.5   # LaMa's `max_tamper_area`: masks filling more than this are drawn again


THICK_256 = RandomMaskConfig(
    strokes=StrokeParams(min_times=1, max_times=5, max_width=100, max_angle=4, max_len=200),
    boxes=BoxParams(margin=10, min_size=30, max_size=150, min_times=1, max_times=3),
    box_weight=0.3,
)
THIN_256 = RandomMaskConfig(
    strokes=StrokeParams(min_times=4, max_times=50, max_width=10, max_angle=4, max_len=40),
)


def _px(value: float, scale: float) -> int:
    return max(1, round(value * scale))


def _draw_strokes(draw: ImageDraw.ImageDraw, h: int, w: int, p: StrokeParams, scale: float,
                  rng: np.random.Generator) -> None:
    """Lengths and widths are drawn in 256-pixel units as LaMa does, then scaled to the image."""
    for i in range(rng.integers(p.min_times, p.max_times + 1)):
        x, y = int(rng.integers(w)), int(rng.integers(h))
        for _ in range(1 + rng.integers(p.max_segments)):
            angle = 0.01 + rng.integers(p.max_angle)
            if i % 2 == 0:
                angle = 2 * math.pi - angle
            length = (p.min_len + rng.integers(p.max_len)) * scale
            thickness = _px(p.min_width + rng.integers(p.max_width), scale)
            x2 = int(np.clip(int(x + length * math.sin(angle)), 0, w))
            y2 = int(np.clip(int(y + length * math.cos(angle)), 0, h))
            _thick_segment(draw, (x, y), (x2, y2), thickness)
            x, y = x2, y2


def _thick_segment(draw: ImageDraw.ImageDraw, a: tuple[int, int], b: tuple[int, int], thickness: int) -> None:
    """A segment with round caps as LaMa's `cv2.line(..., thickness)` rasterises it: a band of odd width
    2 * ((thickness + 1) // 2) + 1 pixels (measured against OpenCV; a 1-pixel line stays 1 pixel)."""
    width = 1 if thickness <= 1 else 2 * ((thickness + 1) // 2) + 1
    draw.line([a, b], fill=255, width=width)
    r = (width - 1) / 2
    for x, y in (a, b):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=255)


def _draw_boxes(draw: ImageDraw.ImageDraw, h: int, w: int, p: BoxParams, scale: float,
                rng: np.random.Generator) -> None:
    margin, min_size = _px(p.margin, scale), _px(p.min_size, scale)
    max_size = min(_px(p.max_size, scale), h - 2 * margin, w - 2 * margin)
    min_size = min(min_size, max_size - 1)
    for _ in range(rng.integers(p.min_times, p.max_times + 1)):
        bw, bh = int(rng.integers(min_size, max_size)), int(rng.integers(min_size, max_size))
        x0 = int(rng.integers(margin, w - margin - bw + 1))
        y0 = int(rng.integers(margin, h - margin - bh + 1))
        draw.rectangle([x0, y0, x0 + bw - 1, y0 + bh - 1], fill=255)


def _random_hole(h: int, w: int, cfg: RandomMaskConfig, rng: np.random.Generator) -> np.ndarray:
    """One LaMa draw: bool [H, W], True = hole. Lengths scale with sqrt(H*W)/256 so the hole fraction is kept."""
    scale = math.sqrt(h * w) / 256
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    use_boxes = cfg.boxes is not None and rng.random() < cfg.box_weight / (1 + cfg.box_weight)
    if use_boxes:
        _draw_boxes(draw, h, w, cfg.boxes, scale, rng)
    else:
        _draw_strokes(draw, h, w, cfg.strokes, scale, rng)
    return np.asarray(canvas) > 127


def random_lama_mask(h: int, w: int, rng: np.random.Generator, config: RandomMaskConfig) -> torch.Tensor:
    """A LaMa-style random mask, [H, W] float32, 1 = known.

    As LaMa's `gen_mask_dataset.py`, masks whose hole covers more than `config.max_hole` of the image are
    rejected (it draws 5 variants and keeps a random one that passes: the same distribution as redrawing).
    """
    for _ in range(1000):
        hole = _random_hole(h, w, config, rng)
        if hole.mean() <= config.max_hole:
            return torch.from_numpy((~hole).astype(np.float32))
    raise RuntimeError(f"no mask with hole fraction <= {config.max_hole} in 1000 draws")


def wide_mask(h: int, w: int, rng: np.random.Generator) -> torch.Tensor:
    """LaMa `random_thick_256`: 1-5 thick strokes (width 5-104 px at 256), or with odds 0.3 : 1, 1-3 boxes."""
    return random_lama_mask(h, w, rng, THICK_256)


def narrow_mask(h: int, w: int, rng: np.random.Generator) -> torch.Tensor:
    """LaMa `random_thin_256`: 4-50 thin strokes (width 5-14 px at 256)."""
    return random_lama_mask(h, w, rng, THIN_256)


# ---------------------------------------------------------------------------------------------------------------
# The four fixed settings of the RePaint paper.
# ---------------------------------------------------------------------------------------------------------------

def every_second_line_mask(h: int, w: int, rng: np.random.Generator | None = None) -> torch.Tensor:
    """Even rows (y = 0, 2, ...) known, odd rows to fill."""
    mask = torch.zeros(h, w)
    mask[0::2] = 1
    return mask


def super_resolve_2x_mask(h: int, w: int, rng: np.random.Generator | None = None) -> torch.Tensor:
    """Pixels with y % 2 == 0 and x % 2 == 0 known: the low-resolution image upsampled by 2 (nearest)."""
    mask = torch.zeros(h, w)
    mask[0::2, 0::2] = 1
    return mask


HALF_SIDES = ("left", "right", "top", "bottom")


def half_mask(h: int, w: int, rng: np.random.Generator | None = None, side: str = "left") -> torch.Tensor:
    """The `side` half is KNOWN and the other half is filled; the known half is W//2 columns (or H//2 rows)."""
    if side not in HALF_SIDES:
        raise ValueError(f"half mask side must be one of {', '.join(HALF_SIDES)}, got {side!r}")
    mask = torch.zeros(h, w)
    region = {"left": (slice(None), slice(0, w // 2)), "right": (slice(None), slice(w - w // 2, w)),
              "top": (slice(0, h // 2), slice(None)), "bottom": (slice(h - h // 2, h), slice(None))}[side]
    mask[region] = 1
    return mask


def expand_mask(h: int, w: int, rng: np.random.Generator | None = None) -> torch.Tensor:
    """Only the centre (H//4) x (W//4) rectangle known, starting at ((H - H//4)//2, (W - W//4)//2)."""
    ch, cw = h // 4, w // 4
    top, left = (h - ch) // 2, (w - cw) // 2
    mask = torch.zeros(h, w)
    mask[top:top + ch, left:left + cw] = 1
    return mask


MaskFn = Callable[..., torch.Tensor]
MASK_KINDS: dict[str, MaskFn] = {
    "wide": wide_mask,
    "narrow": narrow_mask,
    "every_second_line": every_second_line_mask,
    "super_resolve_2x": super_resolve_2x_mask,
    "half": half_mask,
    "expand": expand_mask,
}


def _size(size: Size) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (h, w)):
        raise ValueError(f"mask size must be an int or (H, W) ints, got {size!r}")
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"mask size must be at least {MIN_SIDE} x {MIN_SIDE}, got {h} x {w}")
    return int(h), int(w)


def make_mask(kind: str, size: Size = 256, seed: Seed = 0, **kwargs) -> torch.Tensor:
    """The mask of `kind` at `size` (int or (H, W)): float32 [H, W], 1 = known, 0 = fill.

    `seed` (an int or a sequence of ints) seeds a `numpy.random.Generator`; fixed kinds ignore it.
    `kwargs` go to the kind's generator (only `half` takes one: `side`).
    """
    if kind not in MASK_KINDS:
        raise ValueError(f"unknown mask kind {kind!r}; valid kinds: {', '.join(MASK_KINDS)}")
    h, w = _size(size)
    return MASK_KINDS[kind](h, w, np.random.default_rng(seed), **kwargs)


def make_masks(kind: str, n: int, size: Size = 256, seed: Seed = 0, **kwargs) -> torch.Tensor:
    """`n` masks as [n, H, W]; mask i is `make_mask(kind, size, seed=(seed, i))`, so prefixes are stable."""
    if n < 0:
        raise ValueError(f"number of masks must be >= 0, got {n}")
    base = [seed] if isinstance(seed, int) else list(seed)
    h, w = _size(size)
    masks = [make_mask(kind, (h, w), seed=[*base, i], **kwargs) for i in range(n)]
    return torch.stack(masks) if masks else torch.zeros(0, h, w)


THIN_WIDTH = 8   # a thin defect (scratch, dust, wire, text stroke) is at most this many pixels wide


def is_thin_hole(keep: np.ndarray, width: int = THIN_WIDTH) -> bool:
    """Whether every part of the hole of ``keep`` (bool [H, W], True = keep) is at most ``width`` px wide: no hole
    pixel lies farther than ``width / 2`` px from a known pixel. False for a mask with no hole or nothing known."""
    from scipy.ndimage import distance_transform_edt, find_objects, label

    keep = np.asarray(keep, bool)
    if keep.all() or not keep.any():
        return False
    reach = width / 2
    pad = math.ceil(reach) + 1      # a known pixel within reach of a region lies inside its box grown by this
    regions, _ = label(~keep)
    for index, box in enumerate(find_objects(regions), start=1):   # one small transform per region, not the photo's
        grown = tuple(slice(max(s.start - pad, 0), s.stop + pad) for s in box)
        hole = ~keep[grown]
        if hole.all() or distance_transform_edt(hole)[regions[grown] == index].max() > reach:
            return False
    return True


# ---------------------------------------------------------------------------------------------------------------
# Files.
# ---------------------------------------------------------------------------------------------------------------

def as_mask(mask) -> torch.Tensor:
    """Check a mask ([H, W] or [1, H, W], tensor or array, values 0/1) and return it as float32 [H, W]."""
    t = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    if t.ndim == 3 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 2:
        raise ValueError(f"a mask must have shape [H, W] or [1, H, W], got {list(t.shape)}")
    t = t.detach().to("cpu", torch.float32)
    if not bool(((t == 0) | (t == 1)).all()):
        raise ValueError("a mask must hold only 0 (fill) and 1 (keep)")
    return t


def _hw(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def load_mask(path: str | os.PathLike, size: Size | None = None, invert: bool = False) -> torch.Tensor:
    """Read a mask image (white = keep) as float32 [H, W], 1 = known (:func:`read_keep_mask` as a tensor)."""
    return torch.from_numpy(read_keep_mask(path, size, invert).astype(np.float32))


def read_keep_mask(path: str | os.PathLike, size: Size | None = None, invert: bool = False) -> np.ndarray:
    """Read a mask image (white = keep) as bool [H, W], True = known.

    The image is decoded as every image is (:func:`repaint.images.open_image`: EXIF orientation, one frame;
    transparent pixels mean keep), converted to grayscale, resized with nearest neighbour to `size` (int or (H, W)) if
    given, and thresholded at 0.5; a file with grey levels other than 0 and 255 is thresholded with a warning.
    `invert=True` reads files that use white = fill (the LaMa convention).
    """
    from .images import ImageError, mask_pixels, open_image

    path = Path(path)
    try:
        gray = Image.fromarray(mask_pixels(open_image(path, kind="mask"), f"mask {path}", invert))
    except ImageError as err:
        raise MaskError(str(err)) from None
    if size is not None:
        h, w = _hw(size)
        gray = gray.resize((w, h), Image.NEAREST)
    values = np.asarray(gray)
    if not np.isin(values, (0, 255)).all():
        warnings.warn(f"mask {path} is not binary (grey levels besides 0 and 255); thresholded at 0.5",
                      stacklevel=2)
    known = values >= 128
    return ~known if invert else known


def save_mask(mask, path: str | os.PathLike) -> None:
    """Write a mask ([H, W] or [1, H, W], 1 = keep) as a white = keep 8-bit PNG, atomically."""
    atomic_write(path, png_writer((as_mask(mask).numpy() * 255).astype(np.uint8)))


def load_mask_folder(folder: str | os.PathLike) -> dict[str, Path]:
    """Mask files of a folder (reference layout: one mask per image, same file stem), as {stem: path}, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MaskError(f"mask folder not found: {folder}")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if is_image_file(path):
            if path.stem in found:
                raise MaskError(f"two masks for {path.stem!r} in {folder}: {found[path.stem].name}, {path.name}")
            found[path.stem] = path
    return dict(sorted(found.items()))


def mask_preview_grid(masks, path: str | os.PathLike, ncol: int = 8, gap: int = 2) -> None:
    """Write masks ([N, H, W] or a list of [H, W]) side by side: white keep, black fill, grey separators."""
    masks = [as_mask(m) for m in masks]
    if not masks:
        raise ValueError("mask_preview_grid needs at least one mask")
    h, w = masks[0].shape
    if any(m.shape != (h, w) for m in masks):
        raise ValueError("all masks of a preview grid must have the same size")
    ncol = max(1, min(ncol, len(masks)))
    nrow = math.ceil(len(masks) / ncol)
    grid = np.full((nrow * (h + gap) - gap, ncol * (w + gap) - gap), 128, np.uint8)
    for i, m in enumerate(masks):
        r, c = divmod(i, ncol)
        grid[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = m.numpy() * 255
    atomic_write(path, png_writer(grid))

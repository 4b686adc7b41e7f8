"""Images in and out: file -> [-1, 1] tensors, fitting to the model's size, and the output folder.

Conventions:
    an image is a float32 tensor [3, H, W] with values in [-1, 1] (8-bit value v maps to v / 127.5 - 1);
    a mask is float32 [1, H, W] (or [H, W]) with 1 = keep, 0 = fill (see :mod:`repaint.masks`).

Writing rounds to the nearest 8-bit value, so an image read with :func:`load_image` and written back with
:func:`save_image` is unchanged. (The reference truncates, ``uint8((x + 1) * 127.5)``, which can lose one level.)

The output folder uses the reference RePaint's sub-folder names (``data.eval.*.paths`` of its configs):

    inpainted/NAME_sSEED.png   one file per sample; SEED is the seed the sample was drawn with
    gt_masked/NAME.png         the input with the pixels to fill set to black (value -1), as the reference writes it
    gt_keep_mask/NAME.png      the mask, white = keep, black = fill
    gt/NAME.png                the input as the model saw it (after resizing or cropping)

Every file is written atomically (:mod:`repaint.files`), and :class:`OutputWriter` writes an image's files as one
group once all of its samples exist, so a failure leaves no half-written result.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from .files import png_writer, write_group

__all__ = [
    "ImageError",
    "FIT_MODES",
    "read_rgb",
    "load_image",
    "write_png_group",
    "fit_to_size",
    "to_uint8",
    "save_image",
    "OutputDirs",
    "OutputWriter",
    "masked_input",
]

FIT_MODES = ("error", "resize", "center-crop", "resize-crop")
SUBFOLDERS = {"inpainted": "inpainted", "gt_masked": "gt_masked", "gt_keep_mask": "gt_keep_mask", "gt": "gt"}
_HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class ImageError(ValueError):
    """An image file that cannot be used (missing, unreadable, wrong size)."""


# ---------------------------------------------------------------------------------------------------------------
# Reading.
# ---------------------------------------------------------------------------------------------------------------

def _open(path: Path) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Over Pillow's limit it warns, over twice the limit it raises: both are refused alike.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(too_large(path)) from None
    except FileNotFoundError:
        raise ImageError(f"image file not found: {path}") from None
    except IsADirectoryError:
        raise ImageError(f"expected an image file, got a folder: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ImageError(f"cannot read image {path}: {reason}") from None


def too_large(path: Path) -> str:
    """Why a file over Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) is refused."""
    return (f"{path} has more pixels than Pillow's safety limit of {Image.MAX_IMAGE_PIXELS:,} (a decompression-bomb "
            "guard); scale it down first, or raise PIL.Image.MAX_IMAGE_PIXELS from Python if you trust the file")


def _to_rgb(img: Image.Image, path: Path) -> Image.Image:
    """RGB, warning about anything dropped or invented on the way."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _HIGH_DEPTH_MODES:
        raise ImageError(f"{path} has {mode} pixels (16-bit or float); convert it to 8-bit RGB first")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info)
    if has_alpha:
        warnings.warn(f"{path} has an alpha channel; it is dropped (not composited): transparent pixels keep their "
                      "stored colour; mark regions to fill with the mask", stacklevel=3)
    elif mode in ("L", "1"):
        warnings.warn(f"{path} is grayscale; converted to RGB (three equal channels)", stacklevel=3)
    elif mode == "P":
        warnings.warn(f"{path} is a palette image; converted to RGB", stacklevel=3)
    else:
        warnings.warn(f"{path} is {mode}; converted to RGB", stacklevel=3)
    if mode in ("P", "PA"):
        img = img.convert("RGBA")
    elif mode in ("LA", "La"):
        img = img.convert("L")
    return img.convert("RGB")


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 [H, W, 3] RGB (the conversions of :func:`load_image`, with its warnings)."""
    path = Path(path)
    return np.asarray(_to_rgb(_open(path), path), dtype=np.uint8)


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file as float32 [3, H, W] in [-1, 1].

    RGBA / LA: the alpha channel is dropped (warning). Grayscale, palette, CMYK: converted to RGB (warning).
    A missing, unreadable or 16-bit file raises :class:`ImageError` with a one-line message.
    """
    path = Path(path)
    rgb = _to_rgb(_open(path), path)
    pixels = torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy())
    return pixels.permute(2, 0, 1).to(torch.float32) / 127.5 - 1


# ---------------------------------------------------------------------------------------------------------------
# Fitting to the model's size.
# ---------------------------------------------------------------------------------------------------------------

def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _resize(x: torch.Tensor, hw: tuple[int, int], nearest: bool) -> torch.Tensor:
    if tuple(x.shape[-2:]) == hw:
        return x
    if nearest:
        return F.interpolate(x[None], size=hw, mode="nearest-exact")[0]
    out = F.interpolate(x[None], size=hw, mode="bicubic", antialias=True, align_corners=False)[0]
    return out.clamp(-1, 1)


def _center_crop(x: torch.Tensor, hw: tuple[int, int], what: str) -> torch.Tensor:
    h, w = x.shape[-2:]
    if h < hw[0] or w < hw[1]:
        raise ImageError(f"{what} is {w}x{h}, smaller than the {hw[1]}x{hw[0]} crop; use --resize (with --crop "
                         "to keep the aspect ratio)")
    top, left = (h - hw[0]) // 2, (w - hw[1]) // 2
    return x[..., top:top + hw[0], left:left + hw[1]]


def fit_to_size(
    img: torch.Tensor,
    size: int | tuple[int, int],
    mode: str = "error",
    *,
    mask: bool = False,
    what: str = "image",
) -> torch.Tensor:
    """Bring ``img`` ([C, H, W]) to ``size`` (int or (H, W)) without silent distortion.

    Modes:
        "error"        the size must already match; otherwise a one-line :class:`ImageError` names the options.
        "resize"       scale to ``size``; the aspect ratio may change (only ever done when asked for).
        "center-crop"  cut the centre ``size`` region out; no scaling.
        "resize-crop"  scale so the shorter side fits, then cut the centre (keeps the aspect ratio).

    Images are scaled bicubically with antialiasing; masks (``mask=True``) with nearest neighbour so they stay binary.
    """
    if mode not in FIT_MODES:
        raise ValueError(f"fit mode must be one of {', '.join(FIT_MODES)}, got {mode!r}")
    squeeze = img.dim() == 2
    x = img[None] if squeeze else img
    hw = _hw(size)
    h, w = x.shape[-2:]
    if (h, w) == hw:
        return img
    if mode == "error":
        raise ImageError(f"{what} is {w}x{h} but the model works at {hw[1]}x{hw[0]}; pass --resize to scale it, "
                         "--crop to cut out the centre, or both to scale and then crop (keeps the aspect ratio)")
    if mode == "resize":
        if abs(w / h - hw[1] / hw[0]) > 0.01:
            warnings.warn(f"{what} is {w}x{h}: resizing to {hw[1]}x{hw[0]} changes its aspect ratio; add --crop "
                          "to scale and crop instead", stacklevel=2)
        x = _resize(x, hw, mask)
    elif mode == "center-crop":
        x = _center_crop(x, hw, what)
    else:
        scale = max(hw[0] / h, hw[1] / w)
        scaled = (max(hw[0], round(h * scale)), max(hw[1], round(w * scale)))
        x = _center_crop(_resize(x, scaled, mask), hw, what)
    return x[0] if squeeze else x.contiguous()


# ---------------------------------------------------------------------------------------------------------------
# Writing.
# ---------------------------------------------------------------------------------------------------------------

def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[3, H, W] (or [1, H, W] / [H, W]) in [-1, 1] -> uint8 [H, W, 3] (or [H, W]), rounded to the nearest level."""
    x = img.detach().to("cpu", torch.float32)
    if x.dim() == 3 and x.shape[0] == 1:
        x = x[0]
    if x.dim() == 3:
        x = x.permute(1, 2, 0)
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def save_image(img: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write ``img`` ([3, H, W] RGB or [1, H, W] / [H, W] gray, in [-1, 1]) as PNG, atomically."""
    path = Path(path)
    if not torch.isfinite(img).all():
        raise ValueError(f"refusing to write {path}: the image holds NaN or infinite values")
    return write_png_group({path: to_uint8(img)})[0]


def write_png_group(images: Mapping[Path, np.ndarray]) -> list[Path]:
    """Write uint8 images ([H, W, 3] or [H, W]) as PNG files, all or none (see :func:`repaint.files.write_group`)."""
    return write_group({Path(path): png_writer(pixels) for path, pixels in images.items()})


def masked_input(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The input as the reference's ``gt_masked``: known pixels kept, pixels to fill black (-1)."""
    return image * mask - (1 - mask)


@dataclass(frozen=True)
class OutputDirs:
    """The four output folders; by default the reference's sub-folder names under one root."""

    inpainted: Path
    gt_masked: Path
    gt_keep_mask: Path
    gt: Path

    @classmethod
    def under(cls, root: str | os.PathLike, overrides: Mapping[str, str | os.PathLike] | None = None) -> "OutputDirs":
        root = Path(root)
        dirs = {key: root / name for key, name in SUBFOLDERS.items()}
        dirs.update({key: Path(value) for key, value in (overrides or {}).items()})
        return cls(**dirs)


class OutputWriter:
    """Writes an image's results once all of them exist: inpainted samples, masked input, mask and input."""

    def __init__(self, dirs: OutputDirs):
        self.dirs = dirs
        self.written: list[Path] = []

    def write(self, name: str, image: torch.Tensor, mask: torch.Tensor, samples: Mapping[int, torch.Tensor]) -> list[Path]:
        """``image`` [3, H, W], ``mask`` [1, H, W] (1 = keep), ``samples`` {seed: [3, H, W]}; returns the paths."""
        for seed, sample in samples.items():
            if not torch.isfinite(sample).all():
                raise ValueError(f"sample {name} (seed {seed}) holds NaN or infinite values; nothing written")
        mask = mask.to(image)
        files = {self.dirs.inpainted / f"{name}_s{seed}.png": to_uint8(sample) for seed, sample in samples.items()}
        files[self.dirs.gt_masked / f"{name}.png"] = to_uint8(masked_input(image, mask))
        files[self.dirs.gt_keep_mask / f"{name}.png"] = to_uint8(mask * 2 - 1)
        files[self.dirs.gt / f"{name}.png"] = to_uint8(image)
        paths = write_png_group(files)
        self.written += paths
        return paths

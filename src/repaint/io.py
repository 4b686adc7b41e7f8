"""Images in and out: files -> uint8 arrays or [-1, 1] tensors, and the output folder's layout.

Conventions:
    an image is a float32 tensor [3, H, W] with values in [-1, 1] (8-bit value v maps to v / 127.5 - 1);
    a mask is float32 [1, H, W] (or [H, W]) with 1 = keep, 0 = fill (see :mod:`repaint.masks`).

Writing rounds to the nearest 8-bit value, so an image read with :func:`load_image` and written back with
:func:`save_image` is unchanged. (The reference truncates, ``uint8((x + 1) * 127.5)``, which can lose one level.)

The output folder uses the reference RePaint's sub-folder names (``data.eval.*.paths`` of its configs):

    inpainted/NAME_sSEED.png   one file per sample; SEED is the seed the sample was drawn with
    gt_masked/NAME.png         the input with the pixels to fill set to black (value -1), as the reference writes it
    gt_keep_mask/NAME.png      the mask, white = keep, black = fill
    gt/NAME.png                the input

:func:`repaint.api.write_result` writes them, at the photo's own size, all of an image's files or none
(:mod:`repaint.files`). How photos of another size meet the model is :mod:`repaint.api`'s fit strategies.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .files import atomic_write, png_writer

__all__ = [
    "ImageError",
    "read_rgb",
    "load_image",
    "to_uint8",
    "save_image",
    "OutputDirs",
]

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
    return atomic_write(path, png_writer(to_uint8(img)))


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

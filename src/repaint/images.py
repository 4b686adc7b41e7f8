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

import io
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .files import atomic_write, png_writer

__all__ = [
    "ImageError",
    "ImageTooLarge",
    "open_image",
    "check_readable",
    "photo_pixels",
    "mask_pixels",
    "read_rgb",
    "load_image",
    "to_uint8",
    "save_image",
    "OutputDirs",
    "output_name",
]

SUBFOLDERS = {"inpainted": "inpainted", "gt_masked": "gt_masked", "gt_keep_mask": "gt_keep_mask", "gt": "gt"}
_HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class ImageError(ValueError):
    """An image file that cannot be used (missing, unreadable, wrong size)."""


class ImageTooLarge(ImageError):
    """An image with more pixels than the caller allows (checked from the header, before decoding)."""


# ---------------------------------------------------------------------------------------------------------------
# Reading: the one decoder, used by the CLI, the API, the web app, the evaluation and the trainer.
#
# Decisions, made once here so that one file gives one input everywhere:
#   EXIF orientation is applied (a phone's portrait JPEG is stored sideways with an Orientation tag; the photo and a
#       mask drawn over it as displayed then line up).
#   A photo's transparency is composited onto white (what a viewer shows on a white page); a mask's transparent
#       pixels mean keep (a painted layer exported with a transparent background marks only its strokes).
#   16-bit and float pixels are scaled to 8 bits (16-bit by 65535 -> 255, float in [0, 1] by 255); float values
#       outside [0, 1] are refused, as no scale is known for them.
#   Animated and multi-page files are refused: which frame was meant is not known.
#   Only regular files are read (a FIFO or a device would block).
# ---------------------------------------------------------------------------------------------------------------

ImageSource = Union[str, os.PathLike, bytes]


def check_readable(path: str | os.PathLike, what: str = "image") -> None:
    """The checks :func:`open_image` makes on a path before reading it, without reading it: it exists and is a
    regular file (so a run can refuse a bad input before it loads a model)."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{what} file not found: {path}")
    if path.is_dir():
        raise ImageError(f"expected an {what} file, got a folder: {path}" if what == "image" else
                         f"expected a {what} file, got a folder: {path}")
    if not path.is_file():
        raise ImageError(f"{path} is not a regular file (a pipe, socket or device); save the {what} to a file")


def open_image(source: ImageSource, what: str | None = None, max_pixels: int | None = None,
               kind: str = "image") -> Image.Image:
    """Decode a file (path) or an upload (bytes) with the rules above: EXIF orientation applied, one frame only, at
    most ``max_pixels`` pixels (checked before decoding; Pillow's decompression-bomb limit always applies). Raises
    :class:`ImageError` (:class:`ImageTooLarge` for size) with a one-line message naming ``what`` (default:
    "KIND PATH", or KIND; ``kind`` is "image" or "mask")."""
    if isinstance(source, (bytes, bytearray)):
        what = what or kind
        if not source:
            raise ImageError(f"{what} is empty")
        stream = io.BytesIO(source)
    else:
        path = Path(source)
        what = what or f"{kind} {path}"
        check_readable(path, kind)
        stream = path
    try:
        with warnings.catch_warnings():
            # Over Pillow's limit it warns, over twice the limit it raises: both are refused alike.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as img:
                if max_pixels is not None and img.width * img.height > max_pixels:
                    raise ImageTooLarge(f"{what} is {img.width}x{img.height} = {img.width * img.height:,} pixels, "
                                        f"over the limit of {max_pixels:,} pixels")
                frames = getattr(img, "n_frames", 1)
                if frames > 1:
                    raise ImageError(f"{what} holds {frames} frames (an animation or a multi-page file); save the "
                                     "frame to fill as an image of its own")
                img.load()
                return ImageOps.exif_transpose(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge(too_large(what)) from None
    except UnidentifiedImageError:
        raise ImageError(f"cannot read {what}: not an image format that can be read (PNG, JPEG, WebP, TIFF, ...)") \
            from None
    except (OSError, SyntaxError, ValueError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ImageError(f"cannot read {what}: {reason}") from None


def too_large(what: str | os.PathLike) -> str:
    """Why a file over Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) is refused."""
    return (f"{what} has more pixels than Pillow's safety limit of {Image.MAX_IMAGE_PIXELS:,} (a decompression-bomb "
            "guard); scale it down first, or raise PIL.Image.MAX_IMAGE_PIXELS from Python if you trust the file")


def _to_8bit(img: Image.Image, what: str) -> Image.Image:
    """One-channel 16-bit or float pixels as mode "L" (scaled, never saturated)."""
    values = np.asarray(img)
    if img.mode == "F":
        finite = np.isfinite(values).all()
        if not finite or values.min() < 0 or values.max() > 1:
            raise ImageError(f"{what} has float pixels outside [0, 1]; no scale to 8 bits is known for them: "
                             "convert it to an 8-bit image first")
        scaled = values * 255.0
    else:
        if values.min() < 0 or values.max() > 65535:
            raise ImageError(f"{what} has {img.mode} pixels outside 0..65535; convert it to an 8-bit image first")
        scaled = values / 257.0
    return Image.fromarray(np.rint(scaled).astype(np.uint8), "L")


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info)


def _flatten(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """RGB, with any transparency composited onto ``background``."""
    if _has_alpha(img):
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (*background, 255)), rgba).convert("RGB")
    return img.convert("RGB")


def photo_pixels(img: Image.Image, what: str = "image") -> np.ndarray:
    """A decoded photo as uint8 [H, W, 3] RGB: transparency onto white, 16-bit and float scaled to 8 bits, grayscale,
    palette and CMYK converted."""
    mode = img.mode
    if mode in _HIGH_DEPTH_MODES:
        img = _to_8bit(img, what)
        _note(f"{what} has {'float' if mode == 'F' else '16-bit'} pixels; scaled to 8 bits")
    elif _has_alpha(img):
        _note(f"{what} has transparency; composited onto white (mark regions to fill with the mask)")
    elif mode in ("L", "1"):
        _note(f"{what} is grayscale; converted to RGB (three equal channels)")
    elif mode == "P":
        _note(f"{what} is a palette image; converted to RGB")
    elif mode != "RGB":
        _note(f"{what} is {mode}; converted to RGB")
    return np.asarray(_flatten(img, (255, 255, 255)), dtype=np.uint8)


def _note(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def mask_pixels(img: Image.Image, what: str = "mask", invert: bool = False) -> np.ndarray:
    """A decoded mask as its gray levels, uint8 [H, W], in the file's own convention (white = keep, or white = fill
    with ``invert``); transparent pixels read as keep in either convention."""
    if img.mode in _HIGH_DEPTH_MODES:
        img = _to_8bit(img, what)
    keep_colour = (0, 0, 0) if invert else (255, 255, 255)
    return np.asarray(_flatten(img, keep_colour).convert("L"), dtype=np.uint8)


def read_rgb(source: ImageSource, what: str | None = None, max_pixels: int | None = None) -> np.ndarray:
    """An image file (path) or upload (bytes) as uint8 [H, W, 3] RGB (:func:`open_image`, :func:`photo_pixels`)."""
    what = what or (f"image {source}" if not isinstance(source, (bytes, bytearray)) else "image")
    return photo_pixels(open_image(source, what, max_pixels), what)


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file as float32 [3, H, W] in [-1, 1] (the rules of :func:`read_rgb`)."""
    pixels = torch.from_numpy(read_rgb(path).copy())
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


def output_name(path: str | os.PathLike) -> str:
    """The name a photo's result files get: its stem, with the suffix appended for non-PNG files, so photo.png and
    photo.jpg never overwrite each other's results."""
    path = Path(path)
    suffix = path.suffix.lower().lstrip(".")
    return path.stem if suffix == "png" else f"{path.stem}_{suffix}"

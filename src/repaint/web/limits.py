"""What a server must refuse: oversized or malformed uploads, and more work than one device can queue.

The same :class:`RunGate` guards the web page and the HTTP API, so a device runs one inpainting at a time whichever
front end asked, at most ``max_queue`` more wait, and any request beyond that gets :class:`Busy` at once.
"""

from __future__ import annotations

import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ..images import ImageError, ImageTooLarge, mask_pixels, open_image, photo_pixels

__all__ = [
    "Busy", "UploadError", "TooLarge", "Limits", "RunGate", "decode_image", "decode_mask", "check_pixels",
]


class Busy(RuntimeError):
    """The device is running a job and the queue is full; the client should try again later."""


class UploadError(ValueError):
    """An upload the server refuses (not an image, empty); the message is one line for the client."""


class TooLarge(UploadError):
    """An upload over the byte or pixel limit."""


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 20 * 2**20   # per uploaded file
    max_pixels: int = 16_000_000         # width x height of the photo (and of its mask)
    max_queue: int = 4                   # runs that may wait while one runs
    max_samples: int = 8                 # samples per request
    max_calls: int = 20_000              # planned network calls per request (all samples and windows)

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_pixels", "max_samples", "max_calls"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {self.max_queue}")


class RunGate:
    """One run at a time; up to ``max_queue`` callers wait their turn; beyond that :class:`Busy` is raised at once."""

    def __init__(self, max_queue: int) -> None:
        self.max_queue = max_queue
        self._run = threading.Lock()
        self._count = threading.Lock()
        self._admitted = 0  # running + waiting

    @property
    def admitted(self) -> int:
        return self._admitted

    @contextmanager
    def idle(self):
        """The device for a moment, only if no run holds it: yields True (held until the block ends) or False at
        once, never waiting. For a short measurement that a run beside it would disturb."""
        held = self._run.acquire(blocking=False)
        try:
            yield held
        finally:
            if held:
                self._run.release()

    @contextmanager
    def slot(self):
        with self._count:
            if self._admitted >= 1 + self.max_queue:
                raise Busy(f"the server is busy: one run in progress and {self.max_queue} waiting; try again later")
            self._admitted += 1
        try:
            with self._run:
                yield
        finally:
            with self._count:
                self._admitted -= 1


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def check_pixels(width: int, height: int, limits: Limits, what: str) -> None:
    if width * height > limits.max_pixels:
        raise TooLarge(f"{what} is {width}x{height} = {width * height:,} pixels, over the server's limit of "
                          f"{limits.max_pixels:,} pixels")


def _open(data: bytes, limits: Limits, what: str):
    """Open an upload with the library's decoder (:func:`repaint.images.open_image`) after checking its byte size;
    its pixel count is checked before the pixels are decoded."""
    if len(data) > limits.max_upload_bytes:
        raise TooLarge(f"{what} is {_mb(len(data))}, over the server's limit of {_mb(limits.max_upload_bytes)}")
    try:
        return open_image(data, what, max_pixels=limits.max_pixels)
    except ImageTooLarge as err:
        raise TooLarge(str(err).replace("over the limit", "over the server's limit")) from None
    except ImageError as err:
        raise UploadError(str(err)) from None


def decode_image(data: bytes, limits: Limits, what: str = "image") -> np.ndarray:
    """Uploaded bytes -> uint8 [H, W, 3], decoded as every front end decodes (transparency onto white)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the conversions are the documented ones; the page shows the input
        return photo_pixels(_open(data, limits, what), what)


def decode_mask(data: bytes, limits: Limits, invert: bool = False, what: str = "mask") -> np.ndarray:
    """Uploaded mask bytes -> bool [H, W], True = keep (white, the project's convention; transparent = keep);
    ``invert`` reads white as fill."""
    keep = mask_pixels(_open(data, limits, what), what, invert) >= 128
    return ~keep if invert else keep

"""Writing files so that a crash, a full disk or Ctrl-C never leaves a half-written result, and the image suffixes.

Every file the package writes goes through :func:`atomic_write`: the bytes go to a temporary file in the target's
folder (``.NAME.XXXX.tmp``), which then replaces the target in one ``os.replace``. Files get the usual permissions
(0666 less the process umask), not the private 0600 of a temporary file. :func:`write_group` writes several files
all or nothing: every temporary first, then the renames.
"""

from __future__ import annotations

import glob
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO

import numpy as np

__all__ = [
    "IMAGE_SUFFIXES", "is_image_file", "atomic_write", "write_group", "png_writer", "remove_temporaries", "ensure_writable",
]

# The image files read from folders (evaluation, masks, training data, reference configs).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_UMASK = os.umask(0)
os.umask(_UMASK)
_MODE = 0o666 & ~_UMASK

Writer = Callable[[IO[bytes]], None]


def is_image_file(path: Path) -> bool:
    """A visible file with one of :data:`IMAGE_SUFFIXES` (any case)."""
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _temporary(path: Path, write: Writer) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, _MODE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def atomic_write(path: str | os.PathLike, write: Writer | bytes | str) -> Path:
    """Write ``path`` atomically; ``write`` is a function of the open binary file, or the bytes / text itself."""
    return write_group({Path(path): write})[0]


def write_group(files: Mapping[Path, Writer | bytes | str]) -> list[Path]:
    """Write every file of ``files`` or none: all temporaries first (removed if one fails), then the renames.

    The temporaries are written by parallel threads (PNG and zlib encoding release the GIL): a 12-megapixel
    result's files take about the time of the largest one.
    """
    from concurrent.futures import ThreadPoolExecutor

    items = [(Path(path), _as_writer(write)) for path, write in files.items()]
    with ThreadPoolExecutor(max_workers=max(1, min(len(items), os.cpu_count() or 1, 4))) as pool:
        futures = [pool.submit(_temporary, path, write) for path, write in items]
    temporaries = [(path, f.result()) for (path, _), f in zip(items, futures) if f.exception() is None]
    failed = next((f.exception() for f in futures if f.exception() is not None), None)
    if failed is not None:
        for _, tmp in temporaries:
            tmp.unlink(missing_ok=True)
        raise failed
    for path, tmp in temporaries:
        os.replace(tmp, path)
    return [path for path, _ in temporaries]


def _as_writer(write: Writer | bytes | str) -> Writer:
    if isinstance(write, str):
        write = write.encode()
    if isinstance(write, bytes):
        data = write
        return lambda f: f.write(data)
    return write


def png_writer(pixels: np.ndarray, compress_level: int = 6) -> Writer:
    """A writer of ``pixels`` (uint8 [H, W, 3] or [H, W]) as PNG. Large images use a faster compression level."""
    from PIL import Image

    if pixels.size > 4_000_000:
        compress_level = min(compress_level, 1)   # 12-megapixel PNGs: ~5x faster to write, ~15 % larger
    return lambda f: Image.fromarray(pixels).save(f, format="PNG", compress_level=compress_level)


def remove_temporaries(paths: Iterable[Path]) -> None:
    """Delete the left-over temporaries of exactly these targets (a killed run's ``.NAME.XXXX.tmp``)."""
    for path in paths:
        path = Path(path)
        for tmp in glob.glob(os.path.join(glob.escape(str(path.parent)), f".{glob.escape(path.name)}.*.tmp")):
            Path(tmp).unlink(missing_ok=True)


def ensure_writable(folders: Iterable[str | os.PathLike]) -> None:
    """Prove that ``folders`` can be created and take a file, so a run finds an unwritable output before it samples.

    Nothing is created: the probe file goes into each folder's nearest existing ancestor and is removed, so a run
    that then fails on bad input leaves no empty folders behind (the folders are made when the first file is
    written).
    """
    for folder in folders:
        folder = Path(folder).absolute()
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        try:
            if not existing.is_dir():
                raise NotADirectoryError(0, f"{existing} is a file")
            fd, probe = tempfile.mkstemp(dir=existing, prefix=".write-test.", suffix=".tmp")
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise OSError(f"cannot write to the output folder {folder}: {err.strerror or err}") from None

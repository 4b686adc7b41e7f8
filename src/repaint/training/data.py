"""Training images: a folder or a tar of pictures, as [3, H, W] float tensors in [-1, 1], with horizontal flips.

Random choices are reproducible by construction: the flip of image ``i`` in epoch ``e`` is a coin drawn from a
generator seeded with ``(seed, e, i)``, and :func:`epoch_batches` gives every (epoch, rank) a fixed shuffled order.
A training run can therefore stop after any step and resume with exactly the batches it would have seen.
"""

from __future__ import annotations

import os
import tarfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..files import IMAGE_SUFFIXES
from ..images import open_image, photo_pixels

__all__ = ["ImageDataset", "epoch_batches", "batches_per_epoch", "to_tensor"]



def to_tensor(image: Image.Image, size: int | None = None) -> torch.Tensor:
    """A decoded image (:func:`repaint.images.open_image`) -> [3, size, size] float32 in [-1, 1]: the library's
    conversions (transparency onto white, 16-bit and float scaled), then a centre square crop and a Lanczos resize if
    needed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the documented conversions, not worth a line per training image
        image = Image.fromarray(photo_pixels(image))
    if size is not None and image.size != (size, size):
        w, h = image.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.LANCZOS)
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 127.5 - 1


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _tar_members(path: Path) -> tuple[list[str], list[bytes]]:
    """Names and bytes of every image file in a tar (sorted by name); the bytes stay in memory."""
    with tarfile.open(path) as archive:
        members = sorted((m for m in archive.getmembers() if m.isfile() and _is_image(m.name)), key=lambda m: m.name)
        return [m.name for m in members], [archive.extractfile(m).read() for m in members]


def _folder_files(path: Path) -> list[str]:
    return sorted(str(p) for p in path.rglob("*") if p.is_file() and _is_image(p.name))


class ImageDataset(torch.utils.data.Dataset):
    """Every image of a folder (searched recursively) or a ``.tar``, sorted by name.

    ``dataset[i]`` is a [3, image_size, image_size] float32 tensor in [-1, 1]. With ``flip`` the image is mirrored
    left-right with probability 1/2, decided by ``(seed, epoch, i)`` (call :meth:`set_epoch` each epoch).
    """

    def __init__(self, path: str | os.PathLike, image_size: int | None = None, flip: bool = True, seed: int = 0):
        self.path = Path(path)
        self.image_size = image_size
        self.flip = flip
        self.seed = seed
        self.epoch = 0
        self.unreadable: set[str] = set()  # files found unreadable so far (skipped)
        if self.path.is_dir():
            self.names, self._blobs = _folder_files(self.path), None
        elif self.path.is_file() and tarfile.is_tarfile(self.path):
            self.names, self._blobs = _tar_members(self.path)
        else:
            raise ValueError(f"training data must be a folder of images or a .tar of them: {self.path}")
        if not self.names:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {self.path}")

    def __len__(self) -> int:
        return len(self.names)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def flipped(self, index: int) -> bool:
        """Whether image ``index`` is mirrored in the current epoch (a fixed coin per (seed, epoch, index))."""
        return self.flip and bool(np.random.default_rng([self.seed, self.epoch, index]).random() < 0.5)

    def image(self, index: int) -> Image.Image:
        """The stored picture, unflipped, decoded as every image is (:func:`repaint.images.open_image`)."""
        source = self.names[index] if self._blobs is None else self._blobs[index]
        return open_image(source, str(self.names[index]))

    def __getitem__(self, index: int) -> torch.Tensor:
        """Image ``index``; an unreadable file is replaced by the next readable one (in name order, wrapping).

        The replacement depends on the index only, so a resumed run draws exactly what an uninterrupted one does.
        Each unreadable file is warned about once (per process) and recorded in :attr:`unreadable`.
        """
        for offset in range(len(self)):
            candidate = (index + offset) % len(self)
            x = self._read(candidate)
            if x is not None:
                return x.flip(-1) if self.flipped(index) else x
        raise ValueError(f"none of the {len(self)} images in {self.path} can be read")

    def _read(self, index: int) -> torch.Tensor | None:
        name = self.names[index]
        if name in self.unreadable:
            return None
        try:
            x = to_tensor(self.image(index), self.image_size)
        except (OSError, ValueError) as error:  # ImageError is a ValueError
            self.unreadable.add(name)
            reason = " ".join(str(error).split())[:120] or type(error).__name__
            warnings.warn(f"skipping unreadable training image {name}: {reason}", stacklevel=3)
            return None
        if x.shape[1] != x.shape[2]:
            raise ValueError(f"{name}: image is {tuple(x.shape[1:])}, not square; pass image_size")
        return x


def batches_per_epoch(length: int, batch_size: int, world_size: int = 1) -> int:
    """Full batches each rank draws per epoch (the incomplete tail of its shard is dropped)."""
    per_rank = length // world_size
    if per_rank < batch_size:
        raise ValueError(f"{length} images cannot fill a batch of {batch_size} on each of {world_size} process(es)")
    return per_rank // batch_size


def epoch_batches(
    length: int, batch_size: int, epoch: int, seed: int = 0, rank: int = 0, world_size: int = 1, start: int = 0
) -> Iterator[list[int]]:
    """The index batches of one epoch for one rank, from batch ``start`` on.

    A permutation seeded by ``(seed, epoch)`` is cut to a multiple of ``world_size`` and dealt round-robin
    (rank r takes positions r, r + W, ...), as ``DistributedSampler`` does; each rank then batches its shard.
    """
    order = torch.randperm(length, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    shard = order[: length - length % world_size][rank::world_size]
    for b in range(start, batches_per_epoch(length, batch_size, world_size)):
        yield shard[b * batch_size : (b + 1) * batch_size]

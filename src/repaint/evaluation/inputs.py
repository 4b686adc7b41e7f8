"""What an evaluation runs on: the image folder, the mask settings, the seeds."""

from __future__ import annotations

import numpy as np
import os
import torch
from pathlib import Path
from collections.abc import Sequence
from dataclasses import dataclass
from ..files import IMAGE_SUFFIXES, is_image_file
from ..masks import MASK_KINDS, MaskError, make_mask, read_keep_mask

MAX_SAMPLES = 1000          # seeds of image i are seed + MAX_SAMPLES * i + k, k < MAX_SAMPLES


class EvalError(ValueError):
    """An evaluation that cannot run as asked (bad arguments, an output folder of another run)."""


def list_images(images_dir: str | os.PathLike) -> list[Path]:
    """Image files of a folder, sorted by name (hidden files left out); two files with one stem are an error."""
    folder = Path(images_dir)
    if not folder.is_dir():
        raise EvalError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir()
                   if is_image_file(p))
    stems: dict[str, Path] = {}
    for path in files:
        if path.stem in stems:
            raise EvalError(f"two images named {path.stem!r} in {folder}: {stems[path.stem].name}, {path.name}")
        stems[path.stem] = path
    if not files:
        raise EvalError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def sample_seed(seed: int, index: int, k: int) -> int:
    """Seed of sample ``k`` of the ``index``-th image (sorted folder order): ``seed + 1000 * index + k``."""
    return seed + MAX_SAMPLES * index + k


@dataclass(frozen=True)
class MaskSource:
    """One mask setting: a kind of :data:`repaint.masks.MASK_KINDS` or a folder of mask files (white = keep)."""

    name: str                   # the setting's folder under OUT and its column in the report
    kind: str | None = None
    folder: Path | None = None

    def describe(self) -> dict:
        return {"kind": self.kind} if self.kind else {"folder": str(self.folder.resolve())}

    def mask(self, stem: str, index: int, hw: tuple[int, int], size: int, mask_seed: int, files: dict) -> np.ndarray:
        """bool [H, W] at the image's size ``hw``, True = keep. A mask kind is drawn at the model's ``size`` (the
        paper's protocol) and scaled to the image with nearest neighbour. Raises MaskError when the folder has no
        mask for ``stem`` or its mask has another size than the image."""
        if self.kind is not None:
            keep = make_mask(self.kind, size, seed=[mask_seed, index])
            if tuple(hw) != (size, size):
                keep = torch.nn.functional.interpolate(keep[None, None], size=hw, mode="nearest-exact")[0, 0]
            return keep.numpy() > 0.5
        if stem not in files:
            raise MaskError(f"no mask named {stem}.* in {self.folder}")
        keep = read_keep_mask(files[stem])
        if keep.shape != tuple(hw):
            raise MaskError(f"mask {files[stem]} is {keep.shape[1]}x{keep.shape[0]} but its image is {hw[1]}x{hw[0]}")
        return keep


def mask_sources(masks: str | os.PathLike | Sequence[str | os.PathLike]) -> list[MaskSource]:
    """Mask settings from kind names ("all" = the paper's six) and/or mask folders."""
    items = [masks] if isinstance(masks, (str, os.PathLike)) else list(masks)
    if not items:
        raise EvalError("no mask setting given")
    sources: list[MaskSource] = []
    for item in items:
        if str(item) == "all":
            sources += [MaskSource(kind, kind=kind) for kind in MASK_KINDS]
        elif str(item) in MASK_KINDS:
            sources.append(MaskSource(str(item), kind=str(item)))
        elif Path(item).is_dir():
            sources.append(MaskSource(Path(item).resolve().name, folder=Path(item)))
        else:
            raise EvalError(f"{item!r} is neither a mask kind ({', '.join(MASK_KINDS)}, all) nor a mask folder")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise EvalError(f"two mask settings share a name: {', '.join(names)}")
    return sources

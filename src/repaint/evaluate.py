"""Quality evaluation over a folder of images: the paper's Table 1 protocol (Sec. 5), resumable and sharded.

One call of :func:`evaluate` inpaints every image of a folder under one or more mask *settings* (a mask kind of
:mod:`repaint.masks`, or a folder of mask files named like the images), ``n_samples`` times each, and writes::

    OUT/manifest.json                 what was run: sampler settings, model identity, seeds, masks, image list
    OUT/SETTING/inpainted/NAME_sSEED.png, gt/, gt_masked/, gt_keep_mask/   the reference's output folders
    OUT/SETTING/metrics/NAME.json     per-image metrics, written last (atomically): the image is finished
    OUT/SETTING/skipped/NAME.json     why an image was skipped (unreadable file, no mask in the mask folder)
    OUT/report.md, report.csv, per_image.csv   the tables, always rebuilt from the files above

Metrics are computed on the PNG files as written (8-bit), the whole image against ``gt/NAME.png``: LPIPS (AlexNet,
lower is better, the paper's metric), PSNR and SSIM. A setting's value is the mean over images of the per-image mean
over samples, with the half-width of its 95 % confidence interval (Student t). With several samples per image the
*diversity* is the mean pairwise LPIPS between an image's samples.

Seeds depend on the image only (never on the batch, the rank or what already ran): sample ``k`` of the ``i``-th image
of the sorted folder uses seed ``seed + 1000 * i + k``; a random mask of kind K for that image is
``make_mask(K, size, seed=[mask_seed, i])``.

Under ``torchrun`` (``WORLD_SIZE`` > 1) every process takes the images with ``i % world_size == rank`` on
``cuda:LOCAL_RANK`` (or the CPU), all processes meet at a barrier, and rank 0 writes the report. The output folder must
be shared between the processes (one machine, or a network file system for several nodes).
"""

from __future__ import annotations

import csv
import hashlib
import io as _io
import json
import math
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

from .api import FIT_STRATEGIES, InpaintRequest, inpaint_stream, write_result
from .io import ImageError, OutputDirs, load_image, read_rgb
from .files import IMAGE_SUFFIXES, atomic_write, ensure_writable, is_image_file, remove_temporaries
from .masks import MASK_KINDS, MaskError, load_mask_folder, make_mask, read_keep_mask
from .inpainter import Inpainter
from .settings import SamplerSettings

__all__ = [
    "METRICS",
    "PAPER_LPIPS",
    "SETTING_TITLES",
    "EvalError",
    "MaskSource",
    "EvalReport",
    "evaluate",
    "build_report",
    "write_report",
    "mask_sources",
    "list_images",
    "metric_unavailable",
    "resolve_metrics",
    "sample_seed",
    "model_identity",
    "load_model",
    "Shard",
    "shard",
]

METRICS = ("lpips", "psnr", "ssim")
MAX_SAMPLES = 1000          # seeds of image i are seed + MAX_SAMPLES * i + k, k < MAX_SAMPLES
LPIPS_MIN_SIZE = 32         # AlexNet's pooling stack needs at least 31 x 31 pixels
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1

# Published LPIPS of RePaint (Lugmayr et al. 2022, Table 1), keyed by dataset and mask kind.
PAPER_LPIPS = {
    "celebahq": {"wide": 0.059, "narrow": 0.028, "super_resolve_2x": 0.029, "every_second_line": 0.009,
                 "half": 0.165, "expand": 0.435},
    "imagenet": {"wide": 0.134, "narrow": 0.064, "super_resolve_2x": 0.183, "every_second_line": 0.089,
                 "half": 0.304, "expand": 0.629},
}
SETTING_TITLES = {"wide": "Wide", "narrow": "Narrow", "super_resolve_2x": "Super-Resolve 2x",
                  "every_second_line": "Alternating Lines", "half": "Half", "expand": "Expand"}
_METRIC_TITLES = {"lpips": "LPIPS (lower is better)", "psnr": "PSNR dB (higher is better)",
                  "ssim": "SSIM (higher is better)", "diversity": "diversity: pairwise LPIPS of samples"}


class EvalError(ValueError):
    """An evaluation that cannot run as asked (bad arguments, an output folder of another run)."""


# ---------------------------------------------------------------------------------------------------------------
# Inputs: images, masks, seeds, the model.
# ---------------------------------------------------------------------------------------------------------------

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


def _digest_tensors(state: dict[str, torch.Tensor], limit: int = 1 << 20) -> str:
    """sha256 over every tensor's name and shape, and the bytes of the first ``limit`` bytes of weights."""
    h, taken = hashlib.sha256(), 0
    for name, t in state.items():
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        if taken < limit and t.numel():
            raw = t.detach().to("cpu").contiguous().view(-1).view(torch.uint8)[: limit - taken]
            h.update(raw.numpy().tobytes())
            taken += raw.numel()
    return h.hexdigest()


def model_identity(inpainter: Inpainter, path: str | os.PathLike | None = None) -> dict:
    """What identifies the model of a run: its config and a digest of its weights (first MB); file name and size
    are recorded as information when known."""
    ident = {"config": inpainter.config.to_dict(), "weights_sha256_1mb": _digest_tensors(inpainter.unet.state_dict()),
             "trained": inpainter.trained.to_dict()}
    if inpainter.classifier is not None:
        ident["classifier_sha256_1mb"] = _digest_tensors(inpainter.classifier.state_dict())
    if path is not None:
        ident["file"] = {"name": Path(path).name, "bytes": Path(path).stat().st_size}
    return ident


def load_model(model: str | os.PathLike | Inpainter, device: str | torch.device,
               classifier: str | None = None, unet_config: dict | None = None) -> tuple[Inpainter, dict]:
    """(inpainter, identity) for a preset name, checkpoint file, "default" or an already loaded Inpainter."""
    if isinstance(model, Inpainter):
        return model, model_identity(model)
    from .checkpoints import resolve_checkpoint

    path, _ = resolve_checkpoint(str(model))
    inpainter = Inpainter.load(str(model), classifier=classifier, device=device, unet_config=unet_config)
    return inpainter, model_identity(inpainter, path)


# ---------------------------------------------------------------------------------------------------------------
# Processes: one, or a torchrun group sharing the images.
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shard:
    """This process's part of the work: images with ``index % world == rank``."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def owns(self, index: int) -> bool:
        return index % self.world == self.rank

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def agree(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def shard(device: str | torch.device | None = None) -> Shard:
    """The shard of this process. Under torchrun the process group is started here (gloo: only a barrier and a
    broadcast of small objects travel, so the backend does not matter; a long timeout lets ranks finish unevenly)."""
    dist = torch.distributed
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group("gloo", timeout=timedelta(hours=48))
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    if device is None:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    return Shard(rank, world, device)


# ---------------------------------------------------------------------------------------------------------------
# Files.
# ---------------------------------------------------------------------------------------------------------------

def _write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=1))


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, text)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _finished(setting_dir: Path, stem: str, seeds: list[int]) -> bool:
    """All sample files exist and the per-image JSON (written last) names exactly these seeds."""
    record = _read_json(setting_dir / "metrics" / f"{stem}.json")
    if record is None or [s["seed"] for s in record.get("samples", [])] != seeds:
        return False
    return all((setting_dir / s["file"]).is_file() for s in record["samples"])


def _outputs(setting_dir: Path, stem: str, seeds: list[int]) -> list[Path]:
    """Every file an image's run writes under its setting's folder."""
    dirs = OutputDirs.under(setting_dir)
    return [dirs.inpainted / f"{stem}_s{seed}.png" for seed in seeds] + \
        [dirs.gt / f"{stem}.png", dirs.gt_masked / f"{stem}.png", dirs.gt_keep_mask / f"{stem}.png",
         setting_dir / "metrics" / f"{stem}.json"]


# ---------------------------------------------------------------------------------------------------------------
# Metrics of one finished image, from its files.
# ---------------------------------------------------------------------------------------------------------------

class _Scorer:
    def __init__(self, metrics: Sequence[str], lpips_weights, lpips_random: bool):
        from .metrics import LPIPSMetric

        self.metrics = tuple(metrics)
        self.lpips = LPIPSMetric(lpips_weights, random_backbone=lpips_random) if "lpips" in metrics else None

    def __call__(self, samples: torch.Tensor, gt: torch.Tensor) -> tuple[dict[str, list[float]], float | None]:
        """Per-sample values {metric: [K]} of samples [K, 3, H, W] against gt [3, H, W], and the diversity."""
        from .metrics import psnr, ssim

        ref = gt[None].expand_as(samples)
        fns = {"lpips": self.lpips, "psnr": psnr, "ssim": ssim}
        values = {m: [float(v) for v in fns[m](samples, ref)] for m in self.metrics}
        diversity = None
        if self.lpips is not None and samples.shape[0] > 1:
            pairs = list(combinations(range(samples.shape[0]), 2))
            a, b = samples[[i for i, _ in pairs]], samples[[j for _, j in pairs]]
            diversity = float(self.lpips(a, b).mean())
        return values, diversity


def _score_files(setting_dir: Path, stem: str, index: int, source: str, seeds: list[int], scorer: _Scorer) -> dict:
    files = [f"inpainted/{stem}_s{seed}.png" for seed in seeds]
    samples = torch.stack([load_image(setting_dir / f) for f in files])
    values, diversity = scorer(samples, load_image(setting_dir / "gt" / f"{stem}.png"))
    return {
        "image": stem, "index": index, "source": source,
        "samples": [{"seed": seed, "file": f, **{m: values[m][k] for m in values}}
                    for k, (seed, f) in enumerate(zip(seeds, files))],
        "mean": {m: sum(v) / len(v) for m, v in values.items()},
        "diversity": diversity,
    }


# ---------------------------------------------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class _Item:
    source: MaskSource
    stem: str
    index: int
    path: Path
    seeds: list[int]


def _manifest(images: list[Path], sources: list[MaskSource], settings: SamplerSettings, ident: dict, seed: int,
              mask_seed: int, n_samples: int, metrics: Sequence[str], lpips_id: str, fit: str,
              class_label: int | None, classifier_scale: float) -> dict:
    return {
        "version": MANIFEST_VERSION,
        "images_dir": str(images[0].parent.resolve()),
        "images": [p.name for p in images],
        "masks": {s.name: s.describe() for s in sources},
        "mask_seed": mask_seed,
        "seed": seed,
        "n_samples": n_samples,
        "sampler": settings.to_dict(),
        "model": ident,
        "metrics": list(metrics),
        "lpips": lpips_id,
        "fit": fit,
        "class_label": class_label,
        "classifier_scale": classifier_scale,
    }


_INFORMATION_ONLY = ("images_dir",)   # a moved image folder with the same files is the same run


def _differences(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    diff = [k for k in keys if k not in _INFORMATION_ONLY and old.get(k) != new.get(k)]
    if "model" in diff and {k: v for k, v in old.get("model", {}).items() if k != "file"} == \
            {k: v for k, v in new["model"].items() if k != "file"}:
        diff.remove("model")   # the same weights from another file name
    return diff


def _check_manifest(out_dir: Path, manifest: dict, where: Shard) -> None:
    """Rank 0 compares with (or writes) OUT/manifest.json; every rank raises the same error."""
    problem = None
    if where.main:
        old = _read_json(out_dir / MANIFEST) if (out_dir / MANIFEST).exists() else None
        if (out_dir / MANIFEST).exists() and old is None:
            problem = f"{out_dir / MANIFEST} is unreadable"
        elif old is not None and _differences(old, manifest):
            problem = (f"{out_dir} holds a run with other settings (differs in: "
                       f"{', '.join(_differences(old, manifest))}); to start fresh choose a new output folder "
                       f"(--out) or delete {out_dir}")
        elif old is None:
            out_dir.mkdir(parents=True, exist_ok=True)
            _write_json(out_dir / MANIFEST, manifest)
    problem = where.agree(problem)
    if problem:
        raise EvalError(problem)


def _skip(setting_dir: Path, stem: str, index: int, source: str, reason: str) -> None:
    warnings.warn(f"skipping {source}: {reason}", stacklevel=3)
    _write_json(setting_dir / "skipped" / f"{stem}.json", {"image": stem, "index": index, "source": source,
                                                           "reason": reason})


def _pending(images: list[Path], sources: list[MaskSource], out_dir: Path, where: Shard, seeds_of) -> list[_Item]:
    """Unfinished (image, setting) pairs of this shard, image by image, so each image is read once."""
    items = []
    for index, path in enumerate(images):
        if not where.owns(index):
            continue
        for source in sources:
            setting_dir, seeds = out_dir / source.name, seeds_of(index)
            if _finished(setting_dir, path.stem, seeds):
                continue
            remove_temporaries(_outputs(setting_dir, path.stem, seeds))
            (setting_dir / "skipped" / f"{path.stem}.json").unlink(missing_ok=True)
            items.append(_Item(source, path.stem, index, path, seeds))
    return items


def _requests(items: list[_Item], out_dir: Path, size: int, mask_seed: int, labels_of) -> Iterator[InpaintRequest]:
    """The items as inpainting requests, read lazily (one image in memory); unreadable ones are skipped."""
    folders = {s.name: load_mask_folder(s.folder) for s in {i.source for i in items} if s.folder is not None}
    current: tuple[int, np.ndarray | str] | None = None
    for item in items:
        setting_dir = out_dir / item.source.name
        if current is None or current[0] != item.index:
            try:
                current = (item.index, read_rgb(item.path))
            except ImageError as err:
                current = (item.index, str(err))
        if isinstance(current[1], str):
            _skip(setting_dir, item.stem, item.index, item.path.name, current[1])
            continue
        image = current[1]
        try:
            keep = item.source.mask(item.stem, item.index, image.shape[:2], size, mask_seed,
                                    folders.get(item.source.name, {}))
        except MaskError as err:
            _skip(setting_dir, item.stem, item.index, item.path.name, str(err))
            continue
        yield InpaintRequest(image, keep, item.seeds, item.stem, labels_of(item.seeds), tag=item)


def _labels(inpainter: Inpainter, class_label: int | None, seeds: list[int]) -> list[int] | None:
    """A fixed label, or for a class-conditional model one drawn from each sample's seed (the reference draws a
    random class per image)."""
    if class_label is not None:
        return [class_label] * len(seeds)
    if inpainter.num_classes is None:
        return None
    return [int(torch.randint(inpainter.num_classes, (1,), generator=torch.Generator().manual_seed(s)))
            for s in seeds]


def _sample_all(inpainter, items, out_dir, settings, batch_size, scorer, class_label, classifier_scale, fit,
                mask_seed, where: Shard, progress: bool) -> None:
    """Stream every pending item through the sampler; an image's files and then its metrics JSON are written as
    soon as all its samples exist."""
    from tqdm import tqdm

    show = progress and where.main

    def skip(request: InpaintRequest, err: Exception) -> None:
        item = request.tag
        _skip(out_dir / item.source.name, item.stem, item.index, item.path.name, str(err))

    def labels_of(seeds: list[int]) -> list[int] | None:
        return _labels(inpainter, class_label, seeds)

    requests = _requests(items, out_dir, inpainter.image_size, mask_seed, labels_of)
    with tqdm(total=len(items), unit="image", desc="images", disable=not show, file=sys.stderr,
              dynamic_ncols=True) as images_bar, \
            tqdm(unit="call", desc="steps", disable=not show, leave=False, file=sys.stderr,
                 dynamic_ncols=True) as steps_bar:
        for result in inpaint_stream(inpainter, requests, settings, fit=fit, batch_size=batch_size,
                                     classifier_scale=classifier_scale, callback=lambda p: steps_bar.update(1),
                                     on_error=skip):
            _finish(result.tag, result, out_dir, scorer)
            images_bar.update(1)


def _finish(item: _Item, result, out_dir: Path, scorer: _Scorer) -> None:
    setting_dir = out_dir / item.source.name
    write_result(result, OutputDirs.under(setting_dir), item.stem)
    record = _score_files(setting_dir, item.stem, item.index, item.path.name, item.seeds, scorer)
    _write_json(setting_dir / "metrics" / f"{item.stem}.json", record)


def evaluate(
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    model: str | os.PathLike | Inpainter = "default",
    masks: str | os.PathLike | Sequence[str | os.PathLike] = "wide",
    *,
    settings: SamplerSettings = SamplerSettings(),
    n_samples: int = 1,
    seed: int = 0,
    mask_seed: int = 0,
    batch_size: int = 8,
    metrics: Sequence[str] | None = None,
    lpips_weights: str | os.PathLike | None = None,
    lpips_random: bool = False,
    fit: str = "auto",
    device: str | torch.device | None = None,
    classifier: str | None = None,
    class_label: int | None = None,
    classifier_scale: float = 1.0,
    paper: str | None = None,
    progress: bool = True,
    unet_config: dict | None = None,
) -> "EvalReport":
    """Inpaint every image of ``images_dir`` under each mask setting and write outputs, metrics and the report.

    Args:
        images_dir: folder of images (sorted by name; the order fixes the seeds).
        out_dir: output folder (see the module docstring). Rerunning the same call resumes; another call into the
            same folder is refused.
        model: "default", a preset name, a checkpoint file, or a loaded :class:`~repaint.inpainter.Inpainter`.
        masks: mask kind(s) of :data:`repaint.masks.MASK_KINDS`, "all" for the paper's six, or mask folder(s).
        settings: the sampler settings (the paper: ``SamplerSettings()``, T = 250, j = 10, r = 10).
        n_samples: samples per image (< 1000); with two or more the report gives their diversity.
        seed, mask_seed: base seeds of the samples and of random masks (see :func:`sample_seed`).
        batch_size: samples per network batch (samples of several images are batched together).
        metrics: a subset of ("lpips", "psnr", "ssim"), each required; None = every one that can be computed here
            (see :func:`resolve_metrics`: the others are skipped with a warning).
        lpips_weights, lpips_random: AlexNet weight file for LPIPS (see :mod:`repaint.metrics`); random backbone
            only for tests.
        fit: how images meet the model's size (:data:`repaint.api.FIT_STRATEGIES`): "auto" (default), "crop",
            "resize" or "none"; outputs are always at the image's own size, only hole pixels replaced.
        device: None = ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU. Ignored for a loaded Inpainter.
        classifier, class_label, classifier_scale: guidance (class-conditional models without ``class_label`` get
            a class drawn from each sample's seed).
        paper: "celebahq" or "imagenet" adds the published LPIPS to the Markdown report.
        progress: tqdm bars over images and network calls (rank 0 only).
        unet_config: UNetConfig fields the checkpoint does not determine (attention-head settings), as for
            :meth:`Inpainter.load`; they are part of the model's identity in the manifest.

    Returns the report built from the files on disk (on every rank).
    """
    out_dir = Path(out_dir)
    _check_args(metrics, n_samples, batch_size, fit, paper)
    where = shard(device)
    ensure_writable([out_dir])          # before the model loads: an unwritable folder is found in a second

    inpainter, ident = load_model(model, where.device, classifier, unet_config)
    size = inpainter.image_size
    metrics = resolve_metrics(metrics, size, lpips_weights, lpips_random, warn=where.main)
    images, sources = list_images(images_dir), mask_sources(masks)
    scorer = _Scorer(metrics, lpips_weights, lpips_random)  # everything is checked before the manifest is written
    lpips_id = "random-backbone" if lpips_random else ("alexnet" if "lpips" in metrics else "none")
    manifest = _manifest(images, sources, settings, ident, seed, mask_seed, n_samples, metrics, lpips_id, fit,
                         class_label, classifier_scale)
    _check_manifest(out_dir, manifest, where)

    def seeds_of(index: int) -> list[int]:
        return [sample_seed(seed, index, k) for k in range(n_samples)]

    items = _pending(images, sources, out_dir, where, seeds_of)
    _sample_all(inpainter, items, out_dir, settings, batch_size, scorer, class_label, classifier_scale, fit,
                mask_seed, where, progress)
    where.barrier()
    report = build_report(out_dir)
    if where.main:
        write_report(report, paper=paper)
    where.barrier()
    return report


def _check_args(metrics, n_samples, batch_size, fit, paper) -> None:
    if metrics is not None:
        unknown = [m for m in metrics if m not in METRICS]
        if unknown or not metrics:
            raise EvalError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}; choose from "
                            f"{', '.join(METRICS)}")
    if not 1 <= n_samples < MAX_SAMPLES:
        raise EvalError(f"n_samples must be in 1..{MAX_SAMPLES - 1}, got {n_samples}")
    if batch_size < 1:
        raise EvalError(f"batch_size must be >= 1, got {batch_size}")
    if fit not in FIT_STRATEGIES:
        raise EvalError(f"fit must be one of {', '.join(FIT_STRATEGIES)}, got {fit!r}")
    if paper is not None and paper not in PAPER_LPIPS:
        raise EvalError(f"paper must be one of {', '.join(PAPER_LPIPS)}, got {paper!r}")


def metric_unavailable(metric: str, image_size: int, lpips_weights=None, lpips_random: bool = False) -> str | None:
    """Why ``metric`` cannot be computed here (naming how to enable it), or None when it can. Nothing is loaded."""
    import importlib.util

    from .metrics import ALEXNET_ENV, ALEXNET_FILE, MetricWeightsMissing, find_weights

    if metric == "lpips":
        if image_size < LPIPS_MIN_SIZE:
            return (f"LPIPS (AlexNet) needs images of at least {LPIPS_MIN_SIZE}x{LPIPS_MIN_SIZE}; the model works at "
                    f"{image_size}x{image_size}")
        if importlib.util.find_spec("lpips") is None:
            return "LPIPS needs the lpips package for its linear layers: pip install --no-deps lpips==0.1.4"
        if not lpips_random:
            try:
                find_weights(ALEXNET_FILE, lpips_weights, ALEXNET_ENV)
            except MetricWeightsMissing as err:
                return f"LPIPS: {str(err).rstrip('.')}, or pass --lpips-weights FILE"
    if metric == "ssim" and importlib.util.find_spec("skimage") is None:
        return "SSIM needs scikit-image: pip install scikit-image"
    return None


def resolve_metrics(metrics: Sequence[str] | None, image_size: int, lpips_weights=None, lpips_random: bool = False,
                    warn: bool = True) -> tuple[str, ...]:
    """The metric set of a run. ``None`` (the default) means every metric of :data:`METRICS` that can be computed
    here: the others are left out with one warning that says which and how to enable them. Metrics named explicitly
    are required: one that cannot be computed is an :class:`EvalError`. The set is recorded in the manifest, so runs
    with different sets never share an output folder."""
    explicit = metrics is not None
    wanted = tuple(dict.fromkeys(metrics)) if explicit else METRICS
    problems = {m: p for m in wanted if (p := metric_unavailable(m, image_size, lpips_weights, lpips_random))}
    if explicit and problems:
        raise EvalError("; ".join(problems.values()))
    kept = tuple(m for m in wanted if m not in problems)
    if not kept:
        raise EvalError(f"no metric can be computed: {'; '.join(problems.values())}")
    if problems and warn:
        warnings.warn(f"metric(s) {', '.join(problems)} skipped, scoring with {', '.join(kept)} only: "
                      f"{'; '.join(problems.values())}", stacklevel=3)
    return kept


# ---------------------------------------------------------------------------------------------------------------
# The report: always rebuilt from the files on disk.
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class EvalReport:
    """Aggregates of an output folder.

    ``summary[setting][metric] = (mean, ci95 half-width, n_images)`` (metric "diversity" too when measured; the
    half-width is NaN with fewer than two images); ``per_image`` one dict per finished (setting, image);
    ``skipped`` (setting, file, reason); ``missing`` (setting, file) not finished yet.
    """

    out_dir: Path
    manifest: dict
    summary: dict[str, dict[str, tuple[float, float, int]]] = field(default_factory=dict)
    per_image: list[dict] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)

    @property
    def settings(self) -> list[str]:
        return list(self.manifest["masks"])

    @property
    def complete(self) -> bool:
        return not self.missing

    def value(self, setting: str, metric: str = "lpips") -> float:
        return self.summary[setting][metric][0]


def _mean_ci(values: list[float]) -> tuple[float, float, int]:
    from .metrics import mean_ci95

    if not values:
        return math.nan, math.nan, 0
    if len(values) == 1 or not all(math.isfinite(v) for v in values):
        return sum(values) / len(values), math.nan, len(values)
    mean, half = mean_ci95(values)
    return mean, half, len(values)


def build_report(out_dir: str | os.PathLike) -> EvalReport:
    """Read OUT/manifest.json and every per-image JSON; nothing is taken from memory."""
    out_dir = Path(out_dir)
    manifest = _read_json(out_dir / MANIFEST)
    if manifest is None:
        raise EvalError(f"{out_dir} holds no evaluation (no readable {MANIFEST})")
    report = EvalReport(out_dir, manifest)
    metrics = manifest["metrics"]
    seeds = [[sample_seed(manifest["seed"], i, k) for k in range(manifest["n_samples"])]
             for i in range(len(manifest["images"]))]
    for setting in manifest["masks"]:
        setting_dir = out_dir / setting
        per_metric: dict[str, list[float]] = {m: [] for m in [*metrics, "diversity"]}
        for index, name in enumerate(manifest["images"]):
            stem = Path(name).stem
            skip = _read_json(setting_dir / "skipped" / f"{stem}.json")
            if _finished(setting_dir, stem, seeds[index]):
                record = _read_json(setting_dir / "metrics" / f"{stem}.json")
                report.per_image.append({"setting": setting, **record})
                for m in metrics:
                    per_metric[m].append(record["mean"][m])
                if record.get("diversity") is not None:
                    per_metric["diversity"].append(record["diversity"])
            elif skip is not None:
                report.skipped.append((setting, name, skip["reason"]))
            else:
                report.missing.append((setting, name))
        report.summary[setting] = {m: _mean_ci(v) for m, v in per_metric.items() if v or m != "diversity"}
    return report


def _fmt(metric: str, mean: float, half: float) -> str:
    digits = 2 if metric == "psnr" else 3
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" if math.isnan(half) else f"{mean:.{digits}f} ± {half:.{digits}f}"


def report_markdown(report: EvalReport, paper: str | None = None) -> str:
    """Table 1 layout: mask settings as columns, metrics as rows; then per-image values and skipped files."""
    m, settings = report.manifest, report.settings
    s = m["sampler"]
    schedule = (f"sampler {s['sampler']}, T={s['timestep_respacing'] or s['steps']}, j={s['jump_length']}, "
                f"r={s['jump_n_sample']}")
    lines = [
        "# RePaint evaluation", "",
        f"{len(m['images'])} images from `{m['images_dir']}`, {m['n_samples']} sample(s) per image, seed {m['seed']}, "
        f"{schedule}; LPIPS backbone: {m['lpips']}. Mean ± 95 % confidence interval over images.", "",
        "| metric | " + " | ".join(SETTING_TITLES.get(x, x) for x in settings) + " |",
        "|---|" + "---|" * len(settings),
    ]
    rows = [*m["metrics"], "diversity"]
    for metric in rows:
        if not any(metric in report.summary[x] for x in settings):
            continue
        cells = [_fmt(metric, *report.summary[x][metric][:2]) if metric in report.summary[x] else "-"
                 for x in settings]
        lines.append(f"| {_METRIC_TITLES[metric]} | " + " | ".join(cells) + " |")
        if metric == "lpips" and paper is not None:
            published = [f"{PAPER_LPIPS[paper][x]:.3f}" if x in PAPER_LPIPS[paper] else "-" for x in settings]
            lines.append(f"| LPIPS, paper ({paper}) | " + " | ".join(published) + " |")
    counts = [str(report.summary[x][m["metrics"][0]][2]) for x in settings]
    lines.append("| images evaluated | " + " | ".join(counts) + " |")
    if report.missing:
        lines += ["", f"**Incomplete**: {len(report.missing)} (setting, image) pair(s) not finished yet; rerun the "
                      "same command to resume."]
    if report.skipped:
        lines += ["", "## Skipped images", ""] + [f"- {x}/{name}: {reason}" for x, name, reason in report.skipped]
    lines += ["", "## Per image", "", "| setting | image | " + " | ".join(m["metrics"]) + " | diversity |",
              "|---|---|" + "---|" * (len(m["metrics"]) + 1)]
    for rec in report.per_image:
        cells = [_fmt(x, *_per_image_ci(rec, x)) for x in m["metrics"]]
        div = "-" if rec.get("diversity") is None else f"{rec['diversity']:.3f}"
        lines.append(f"| {rec['setting']} | {rec['source']} | " + " | ".join(cells) + f" | {div} |")
    return "\n".join(lines) + "\n"


def _per_image_ci(record: dict, metric: str) -> tuple[float, float]:
    values = [s[metric] for s in record["samples"]]
    mean, half, _ = _mean_ci(values)
    return mean, half


def _csv(rows: list[list]) -> str:
    buf = _io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def write_report(report: EvalReport, paper: str | None = None) -> list[Path]:
    """OUT/report.md, OUT/report.csv (setting, metric, mean, ci95, n) and OUT/per_image.csv, atomically."""
    out, metrics = report.out_dir, report.manifest["metrics"]
    summary = [["setting", "metric", "mean", "ci95", "n_images"]]
    for setting, values in report.summary.items():
        summary += [[setting, metric, repr(mean), repr(half), n] for metric, (mean, half, n) in values.items()]
    summary += [[setting, "skipped", "", "", sum(1 for x, *_ in report.skipped if x == setting)]
                for setting in report.settings]
    per_image = [["setting", "image", "status", "seeds",
                  *[f"{x}{suffix}" for x in metrics for suffix in ("", "_ci95")], "diversity"]]
    for rec in report.per_image:
        cis = [repr(v) for x in metrics for v in _per_image_ci(rec, x)]
        per_image.append([rec["setting"], rec["source"], "ok", " ".join(str(s["seed"]) for s in rec["samples"]),
                          *cis, "" if rec.get("diversity") is None else repr(rec["diversity"])])
    per_image += [[x, name, f"skipped: {reason}", "", *[""] * (2 * len(metrics) + 1)]
                  for x, name, reason in report.skipped]
    per_image += [[x, name, "missing", "", *[""] * (2 * len(metrics) + 1)] for x, name in report.missing]
    paths = [out / "report.md", out / "report.csv", out / "per_image.csv"]
    for path, text in zip(paths, (report_markdown(report, paper), _csv(summary), _csv(per_image))):
        _write_text(path, text)
    return paths

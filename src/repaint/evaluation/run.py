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

import numpy as np
import os
import sys
import torch
from collections.abc import Iterator, Sequence
from pathlib import Path
from .inputs import EvalError, MAX_SAMPLES, list_images, mask_sources, sample_seed
from .report import EvalReport, PAPER_LPIPS, build_report, write_report
from ..api import FIT_STRATEGIES, InpaintRequest, inpaint_stream, write_result
from ..cost import choose_batch
from ..images import ImageError, OutputDirs, read_rgb
from ..inpainter import Inpainter, labels_from_seeds
from .scoring import METRICS, _Scorer, _score_files, resolve_metrics
from ..masks import MaskError, load_mask_folder
from ..settings import SamplerSettings
from ..distributed import Shard, shard
from .outputs import _Item, _check_manifest, _manifest, _pending, _skip, _write_json, model_with_identity
from ..files import ensure_writable


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
    return labels_from_seeds(seeds, inpainter.num_classes)


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
    batch_size: int | None = None,
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
        batch_size: samples per network batch (samples of several images are batched together); None: as many as
            the free memory holds, at most 8 (:func:`repaint.cost.choose_batch`).
        metrics: a subset of ("lpips", "psnr", "ssim"), each required; None = every one that can be computed here
            (see :func:`resolve_metrics`: the others are skipped with a warning).
        lpips_weights, lpips_random: AlexNet weight file for LPIPS (see :mod:`.metrics`); random backbone
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

    inpainter, ident = model_with_identity(model, where.device, classifier, unet_config)
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
    batch = choose_batch(inpainter, batch_size)
    if batch_size is None and where.main and progress:
        print(f"batch: {batch.describe()}", file=sys.stderr)
    batch_size = batch.batch
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
    if batch_size is not None and batch_size < 1:
        raise EvalError(f"batch_size must be >= 1, got {batch_size}")
    if fit not in FIT_STRATEGIES:
        raise EvalError(f"fit must be one of {', '.join(FIT_STRATEGIES)}, got {fit!r}")
    if paper is not None and paper not in PAPER_LPIPS:
        raise EvalError(f"paper must be one of {', '.join(PAPER_LPIPS)}, got {paper!r}")

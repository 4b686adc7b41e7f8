"""Scoring a finished image from its files: LPIPS, PSNR, SSIM per sample and the diversity between samples; which
metrics can run at a size."""

from __future__ import annotations

import torch
import warnings
from pathlib import Path
from collections.abc import Sequence
from itertools import combinations
from .inputs import EvalError
from ..images import load_image

METRICS = ("lpips", "psnr", "ssim")


LPIPS_MIN_SIZE = 32         # AlexNet's pooling stack needs at least 31 x 31 pixels


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

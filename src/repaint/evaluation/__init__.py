"""Evaluation: the paper's protocols on folders of images, and the checks against exact answers.

* :mod:`.run`: :func:`evaluate`, the Table 1 loop (resumable, sharded under torchrun); :mod:`.inputs` (images, mask
  settings, seeds), :mod:`.outputs` (the output folder, its manifest, resume), :mod:`.scoring` (metrics of one
  finished image), :mod:`.report` (the tables).
* :mod:`.metrics`: LPIPS, PSNR, SSIM, FID and confidence intervals.
* :mod:`.experiments`: the paper's ablations (Tables 2-4) as runs of :func:`evaluate`.
* :mod:`.gmm`, :mod:`.groundtruth`: Gaussian-mixture problems whose exact conditional is known, to score samplers.
"""

from __future__ import annotations

from .inputs import EvalError, MaskSource, list_images, mask_sources, sample_seed
from .outputs import model_identity, model_with_identity
from .report import PAPER_LPIPS, SETTING_TITLES, EvalReport, build_report, report_markdown, write_report
from .run import evaluate
from .scoring import METRICS, metric_unavailable, resolve_metrics

__all__ = [
    "METRICS", "PAPER_LPIPS", "SETTING_TITLES", "EvalError", "MaskSource", "EvalReport", "evaluate", "build_report",
    "write_report", "report_markdown", "mask_sources", "list_images", "metric_unavailable", "resolve_metrics",
    "sample_seed", "model_identity", "model_with_identity",
]

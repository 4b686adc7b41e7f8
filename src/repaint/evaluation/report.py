"""The evaluation report: tables of every setting and metric (mean and 95 % interval over images), rebuilt from the
per-image files, as Markdown and CSV."""

from __future__ import annotations

import io as _io
import csv
import math
import os
from pathlib import Path
from dataclasses import dataclass, field
from .inputs import EvalError, sample_seed
from .outputs import MANIFEST, _finished, _read_json, _write_text

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

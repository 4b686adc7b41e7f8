"""The paper's ablations as runs of :func:`repaint.evaluation.evaluate`, each writing one table (Markdown and CSV).

* :func:`resampling_vs_slowdown` (Table 2): RePaint's resampling (T, j, r) against plain conditioning whose respaced
  step count is raised to the same number of network calls, i.e. slowing the diffusion down at equal compute.
* :func:`jump_grid` (Table 3): LPIPS over a grid of jump lengths j and resampling counts r.
* :func:`sdedit_alternative` (Table 4): an SDEdit-style alternative to resampling: denoise from T to T/2 once, then
  ``repeats`` times denoise T/2 -> 0 and re-noise 0 -> T/2 (the last pass ends at 0). It is one more jump schedule,
  run by the same RePaint loop (sampler ``"sdedit_repeat"``, :mod:`repaint.sdedit`).

Every configuration is evaluated in its own folder ``OUT/<name>/`` (resumable like any evaluation); the table goes to
``OUT/<table>.md`` and ``OUT/<table>.csv``. Under torchrun each configuration is sharded over the processes and rank 0
writes the table.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .report import SETTING_TITLES, EvalReport, _csv
from .inputs import EvalError
from .outputs import _write_text, model_with_identity
from .run import evaluate
from .scoring import resolve_metrics
from ..distributed import shard
from ..samplers.sdedit import sdedit_schedule
from ..schedule import JumpSchedule, count_network_calls
from ..settings import SamplerSettings

__all__ = [
    "Config",
    "AblationTable",
    "run_configs",
    "resampling_vs_slowdown",
    "jump_grid",
    "sdedit_alternative",
]


# ---------------------------------------------------------------------------------------------------------------
# Running configurations and tabulating them.
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """One row of an ablation: a folder name, the sampler settings and the columns that describe it."""

    name: str
    settings: SamplerSettings
    columns: dict = field(default_factory=dict)


_TITLES = {"lpips": "LPIPS", "psnr": "PSNR", "ssim": "SSIM"}


@dataclass
class AblationTable:
    """Rows of descriptive columns plus, per metric and mask setting, (mean, ci95) under ``row[metric][setting]``."""

    title: str
    columns: list[str]
    settings: list[str]
    rows: list[dict]
    metrics: list[str] = field(default_factory=lambda: ["lpips"])

    def _cells(self):
        return [(m, s) for m in self.metrics for s in self.settings]

    def markdown(self) -> str:
        heads = self.columns + [f"{_TITLES.get(m, m)} {SETTING_TITLES.get(s, s)}" for m, s in self._cells()]
        lines = [f"# {self.title}", "", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        for row in self.rows:
            cells = [str(row[c]) for c in self.columns]
            for m, s in self._cells():
                mean, half = row[m][s]
                digits = 2 if m == "psnr" else 3
                cells.append("-" if math.isnan(mean) else
                             f"{mean:.{digits}f}" + ("" if math.isnan(half) else f" ± {half:.{digits}f}"))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        head = self.columns + [f"{m}_{s}{suffix}" for m, s in self._cells() for suffix in ("", "_ci95")]
        body = [[row[c] for c in self.columns] + [repr(v) for m, s in self._cells() for v in row[m][s]]
                for row in self.rows]
        return _csv([head, *body])

    def write(self, out_dir: Path, stem: str) -> list[Path]:
        paths = [out_dir / f"{stem}.md", out_dir / f"{stem}.csv"]
        _write_text(paths[0], self.markdown())
        _write_text(paths[1], self.csv())
        return paths


def run_configs(
    configs: Sequence[Config],
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    model,
    *,
    title: str,
    stem: str,
    masks="wide",
    device=None,
    classifier: str | None = None,
    **eval_kwargs,
) -> AblationTable:
    """Evaluate every configuration into ``out_dir/<name>`` (identical settings run once) and write the table.

    ``eval_kwargs`` go to :func:`repaint.evaluation.evaluate` (n_samples, seed, metrics, lpips_weights, ...). The
    metric set is resolved once (:func:`repaint.evaluation.resolve_metrics`: by default every metric that can be
    computed here, the others skipped with one warning) and every configuration is scored with that same set.
    Returns the table on every rank; rank 0 writes ``out_dir/<stem>.md`` and ``.csv``.
    """
    out_dir = Path(out_dir)
    where = shard(device)
    inpainter, _ = model_with_identity(model, where.device, classifier, eval_kwargs.pop("unet_config", None))
    metrics = resolve_metrics(eval_kwargs.pop("metrics", None), inpainter.image_size,
                              eval_kwargs.get("lpips_weights"), eval_kwargs.get("lpips_random", False),
                              warn=where.main)
    reports: dict[str, EvalReport] = {}
    rows = []
    for config in configs:
        key = json.dumps(config.settings.to_dict(), sort_keys=True)
        if key not in reports:
            reports[key] = evaluate(images_dir, out_dir / config.name, inpainter, masks,
                                    settings=config.settings, metrics=metrics, **eval_kwargs)
        report = reports[key]
        values = {m: {s: report.summary[s][m][:2] for s in report.settings} for m in metrics}
        rows.append({**config.columns, **values})
    table = AblationTable(title, list(configs[0].columns), report.settings, rows, list(metrics))
    if where.main:
        table.write(out_dir, stem)
    where.barrier()
    return table


def _check_steps(steps: int, inpainter) -> None:
    """Respaced steps cannot exceed the steps the model was trained with."""
    if steps > inpainter.trained.steps:
        raise EvalError(f"slowing down to {steps} steps needs a model trained with at least {steps} diffusion steps "
                        f"(this one: {inpainter.trained.steps}); lower --resamplings or --jump-length")


# ---------------------------------------------------------------------------------------------------------------
# The three ablations.
# ---------------------------------------------------------------------------------------------------------------


def resampling_vs_slowdown(
    images_dir, out_dir, model, *, t_T: int = 250, jump_length: int = 10, resamplings: Sequence[int] = (1, 2, 3, 4),
    base: SamplerSettings = SamplerSettings(), device=None, **eval_kwargs,
) -> AblationTable:
    """Table 2: RePaint (T=t_T, j, r) against slowing down (T = its network calls, no resampling), per r.

    With the defaults the pairs use 250, 490, 730 and 970 network calls per sample; the slowed-down runs respace
    the 1000 training steps to that many (so calls beyond the training steps are refused).
    """
    model, _ = model_with_identity(model, shard(device).device, eval_kwargs.pop("classifier", None),
                          eval_kwargs.pop("unet_config", None))  # loaded once
    configs = []
    for r in resamplings:
        calls = JumpSchedule(t_T, jump_length=jump_length, jump_n_sample=r).network_calls()
        _check_steps(calls, model)
        resample = SamplerSettings(**{**base.to_dict(), "steps": t_T, "timestep_respacing": "", "sampler": "repaint",
                                      "jump_length": jump_length, "jump_n_sample": r})
        slow = SamplerSettings(**{**base.to_dict(), "steps": calls, "timestep_respacing": "", "sampler": "repaint",
                                  "jump_length": 1, "jump_n_sample": 1})
        configs.append(Config(f"resample_T{t_T}_j{jump_length}_r{r}", resample,
                              {"method": "resampling", "T": t_T, "j": jump_length, "r": r, "network calls": calls}))
        configs.append(Config(f"slowdown_T{calls}", slow,
                              {"method": "slowing down", "T": calls, "j": "-", "r": 1, "network calls": calls}))
    return run_configs(configs, images_dir, out_dir, model, device=device, stem="resampling_vs_slowdown",
                       title="Resampling versus slowing down at equal compute (Table 2)", **eval_kwargs)


def jump_grid(
    images_dir, out_dir, model, *, t_T: int = 250, jump_lengths: Sequence[int] = (1, 5, 10),
    resamplings: Sequence[int] = (5, 10, 15), base: SamplerSettings = SamplerSettings(), device=None, **eval_kwargs,
) -> AblationTable:
    """Table 3: LPIPS for every jump length j and resampling count r at T = t_T."""
    configs = []
    for j in jump_lengths:
        for r in resamplings:
            settings = SamplerSettings(**{**base.to_dict(), "steps": t_T, "timestep_respacing": "",
                                          "sampler": "repaint", "jump_length": j, "jump_n_sample": r})
            calls = JumpSchedule(t_T, jump_length=j, jump_n_sample=r).network_calls()
            configs.append(Config(f"T{t_T}_j{j}_r{r}", settings, {"T": t_T, "j": j, "r": r, "network calls": calls}))
    return run_configs(configs, images_dir, out_dir, model, device=device, stem="jump_grid",
                       title="Jump length j and resamplings r (Table 3)", **eval_kwargs)


def sdedit_alternative(
    images_dir, out_dir, model, *, t_T: int = 250, repeats: Sequence[int] = (1, 5, 10, 18),
    restart: int | None = None, repaint_jump_length: int = 10, repaint_resamplings: int = 10,
    base: SamplerSettings = SamplerSettings(), device=None, **eval_kwargs,
) -> AblationTable:
    """Table 4: T -> T/2 once, then T/2 -> 0 ``k`` times for each k in ``repeats``, next to RePaint (j, r).

    At T = 250 a pass costs 125 network calls, so k = 18 (2,375 calls) is about RePaint's 2,410 (j = r = 10).
    """
    restart = t_T // 2 if restart is None else restart
    configs = []
    for k in repeats:
        settings = SamplerSettings(**{**base.to_dict(), "steps": t_T, "timestep_respacing": "",
                                      "sampler": "sdedit_repeat", "options": {"repeats": k, "restart": restart}})
        calls = count_network_calls(sdedit_schedule(t_T, k, restart))
        configs.append(Config(f"sdedit_T{t_T}_h{restart}_k{k}", settings,
                              {"method": f"T/2 -> 0 repeated (restart {restart})", "repeats": k,
                               "network calls": calls}))
    settings = SamplerSettings(**{**base.to_dict(), "steps": t_T, "timestep_respacing": "", "sampler": "repaint",
                                  "jump_length": repaint_jump_length, "jump_n_sample": repaint_resamplings})
    calls = JumpSchedule(t_T, jump_length=repaint_jump_length, jump_n_sample=repaint_resamplings).network_calls()
    configs.append(Config(f"repaint_T{t_T}_j{repaint_jump_length}_r{repaint_resamplings}", settings,
                          {"method": f"RePaint (j={repaint_jump_length}, r={repaint_resamplings})", "repeats": "-",
                           "network calls": calls}))
    return run_configs(configs, images_dir, out_dir, model, device=device, stem="sdedit_alternative",
                       title="Resampling versus repeating T/2 -> 0 (Table 4)", **eval_kwargs)

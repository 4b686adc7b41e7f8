"""Vote shares of a 2AFC study with intervals that respect participants, self-consistency, and the written report.

Share of a method (against one opponent, or against all others together) in a mask setting: its wins divided by
the votes on pairs that involve it, first showings only (repeats measure consistency and are not counted twice):

    share = sum_p w_p / sum_p n_p            w_p, n_p: wins and votes of participant p

Votes of one participant are not independent (taste, attention, screen), so the 95 % interval comes from a cluster
bootstrap: draw the participants with replacement B times, recompute the share from the drawn participants' (w_p,
n_p), and take the 2.5 and 97.5 percentiles. With participants that differ this interval is wider than the binomial
(Wilson) interval on the pooled votes, which treats every vote as independent; both are reported.

Self-consistency of a participant: of the pairs they saw twice (the second time with the sides swapped), the share
where they chose the same method both times. A participant who clicks at random agrees half of the time, one who
always clicks the same side agrees never. A participant is flagged "below chance" when their agreement is below 0.5
and its one-sided binomial p-value under random clicking is below ``flag_alpha`` (0.05: at least five repeats are
needed to flag anyone, so that chance alone rarely flags an honest participant); flagged participants can be left
out with ``exclude_flagged``.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .store import StudyError, _meta

__all__ = ["ALL", "Cell", "ParticipantStats", "StudyReport", "build_report", "cluster_bootstrap", "participants_csv",
           "plot_report", "report_csv", "report_markdown", "wilson_interval", "write_report"]

ALL = "all"             # the cell over every setting (or every opponent)
Z95 = 1.959963984540054


def cluster_bootstrap(wins, votes, n_boot: int = 2000, generator: torch.Generator | None = None,
                      level: float = 0.95) -> tuple[float, float, float]:
    """Ratio ``sum(wins) / sum(votes)`` and its percentile interval, resampling clusters (participants).

    ``wins`` and ``votes`` are per-cluster counts (1-D, same length, clusters with no vote left out by the caller).
    Returns (share, low, high); the interval is NaN with fewer than two clusters.
    """
    w = torch.as_tensor(np.asarray(wins, dtype=np.float64))
    n = torch.as_tensor(np.asarray(votes, dtype=np.float64))
    if w.shape != n.shape or w.ndim != 1 or len(n) == 0 or bool((n <= 0).any()):
        raise ValueError("wins and votes must be 1-D of equal length with every cluster holding votes")
    share = float(w.sum() / n.sum())
    if len(n) < 2:
        return share, math.nan, math.nan
    idx = torch.randint(0, len(n), (n_boot, len(n)), generator=generator)
    boot = w[idx].sum(1) / n[idx].sum(1)
    tail = (1 - level) / 2
    low, high = torch.quantile(boot, torch.tensor([tail, 1 - tail], dtype=boot.dtype)).tolist()
    return share, low, high


def wilson_interval(wins: int, votes: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion: every vote treated as independent."""
    if votes == 0:
        return math.nan, math.nan
    p = wins / votes
    centre = (p + z * z / (2 * votes)) / (1 + z * z / votes)
    half = z * math.sqrt(p * (1 - p) / votes + z * z / (4 * votes * votes)) / (1 + z * z / votes)
    return centre - half, centre + half


def _binom_cdf(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n


@dataclass(frozen=True)
class Cell:
    method: str
    opponent: str           # a method name, or ALL (every other method together)
    setting: str            # a mask setting, or ALL
    share: float
    low: float
    high: float
    wins: int
    votes: int
    participants: int
    wilson_low: float
    wilson_high: float


@dataclass(frozen=True)
class ParticipantStats:
    participant: str
    votes: int              # first showings answered
    assigned: int           # trials drawn for them, repeats included
    repeats: int            # repeated pairs answered both times
    agreements: int
    consistency: float      # agreements / repeats (NaN without repeats)
    p_chance: float         # P(agreements this low or lower | random clicking)
    flagged: bool           # consistency below 0.5 with p_chance < flag_alpha
    left_share: float       # share of all their answers that chose the left image
    median_rt_ms: float


@dataclass
class StudyReport:
    methods: list[str]
    settings: list[str]
    reference: str | None
    cells: list[Cell]
    participants: list[ParticipantStats]
    excluded: list[str] = field(default_factory=list)
    n_boot: int = 2000
    seed: int = 0
    title: str = ""
    flag_alpha: float = 0.05

    def cell(self, method: str, setting: str = ALL, opponent: str | None = None) -> Cell:
        opponent = opponent or (self.reference if self.reference and method != self.reference else ALL)
        for c in self.cells:
            if (c.method, c.opponent, c.setting) == (method, opponent, setting):
                return c
        raise KeyError((method, opponent, setting))


def _votes(con: sqlite3.Connection) -> list[sqlite3.Row]:
    return con.execute(
        "SELECT t.participant, t.position, t.repeat_of, t.side, t.rt_ms, t.pair, it.setting, "
        "ma.name AS a, mb.name AS b, mc.name AS choice FROM trials t JOIN pairs p ON p.id = t.pair "
        "JOIN items it ON it.id = p.item JOIN methods ma ON ma.id = p.method_a JOIN methods mb ON mb.id = p.method_b "
        "JOIN methods mc ON mc.id = t.choice WHERE t.choice IS NOT NULL ORDER BY t.participant, t.position").fetchall()


def _participant_stats(con: sqlite3.Connection, votes: list[sqlite3.Row], alpha: float) -> list[ParticipantStats]:
    assigned = dict(con.execute("SELECT participant, count(*) FROM trials GROUP BY participant").fetchall())
    out = []
    for pid in sorted(assigned):
        mine = [v for v in votes if v["participant"] == pid]
        first = {v["position"]: v["choice"] for v in mine if v["repeat_of"] is None}
        pairs = [(first[v["repeat_of"]], v["choice"]) for v in mine
                 if v["repeat_of"] is not None and v["repeat_of"] in first]
        agree = sum(a == b for a, b in pairs)
        consistency = agree / len(pairs) if pairs else math.nan
        p_chance = _binom_cdf(agree, len(pairs)) if pairs else math.nan
        rts = [v["rt_ms"] for v in mine if v["rt_ms"] is not None]
        out.append(ParticipantStats(
            pid, len(first), assigned[pid], len(pairs), agree, consistency,
            p_chance, bool(pairs) and consistency < 0.5 and p_chance < alpha,
            sum(v["side"] == "left" for v in mine) / len(mine) if mine else math.nan,
            float(np.median(rts)) if rts else math.nan))
    return out


def build_report(study: str | os.PathLike | sqlite3.Connection, n_boot: int = 2000, seed: int = 0,
                 exclude_flagged: bool = False, flag_alpha: float = 0.05) -> StudyReport:
    """Vote shares per method (against the reference or all others, and against each opponent) per setting and over
    all settings, with cluster-bootstrap intervals (``n_boot`` draws from a ``torch.Generator`` seeded ``seed``);
    participants below chance on repeats (p < ``flag_alpha``) are flagged and, with ``exclude_flagged``, left out."""
    from .store import connect

    con = study if isinstance(study, sqlite3.Connection) else connect(study)
    if n_boot < 100:
        raise StudyError(f"--n-boot must be at least 100, got {n_boot}")
    meta = _meta(con)
    methods = [r["name"] for r in con.execute("SELECT name FROM methods ORDER BY id")]
    settings = _paper_order([r["setting"] for r in con.execute("SELECT DISTINCT setting FROM items")])
    votes = _votes(con)
    if not 0 < flag_alpha < 1:
        raise StudyError(f"flag alpha must be in (0, 1), got {flag_alpha}")
    people = _participant_stats(con, votes, flag_alpha)
    excluded = [p.participant for p in people if p.flagged] if exclude_flagged else []
    first = [v for v in votes if v["repeat_of"] is None and v["participant"] not in excluded]
    g = torch.Generator().manual_seed(seed)
    cells = []
    for setting in [*settings, ALL]:
        for method in methods:
            for opponent in [ALL, *(m for m in methods if m != method)]:
                cell = _cell(first, method, opponent, setting, n_boot, g)
                if cell is not None:
                    cells.append(cell)
    return StudyReport(methods, settings, meta.get("reference"), cells, people, excluded, n_boot, seed,
                       meta.get("title", ""), flag_alpha)


def _paper_order(settings: list[str]) -> list[str]:
    """The paper's order of mask settings (Table 1), then any other setting by name."""
    from ..evaluation import SETTING_TITLES

    known = list(SETTING_TITLES)
    return sorted(settings, key=lambda s: (known.index(s) if s in known else len(known), s))


def _cell(votes, method, opponent, setting, n_boot, g) -> Cell | None:
    per: dict[str, list[int]] = {}
    for v in votes:
        if method not in (v["a"], v["b"]) or (opponent != ALL and opponent not in (v["a"], v["b"])):
            continue
        if setting != ALL and v["setting"] != setting:
            continue
        counts = per.setdefault(v["participant"], [0, 0])
        counts[0] += v["choice"] == method
        counts[1] += 1
    if not per:
        return None
    wins, n = np.array(list(per.values())).T
    share, low, high = cluster_bootstrap(wins, n, n_boot, g)
    return Cell(method, opponent, setting, share, low, high, int(wins.sum()), int(n.sum()), len(per),
                *wilson_interval(int(wins.sum()), int(n.sum())))


# ---------------------------------------------------------------------------------------------------------------
# Writing: Markdown (the paper's table layout), CSV, plot.
# ---------------------------------------------------------------------------------------------------------------

def _title(setting: str) -> str:
    from ..evaluation import SETTING_TITLES

    return "all settings" if setting == ALL else SETTING_TITLES.get(setting, setting)


def _pct(cell: Cell) -> str:
    if math.isnan(cell.low):
        return f"{100 * cell.share:.1f} (n={cell.votes})"
    return f"{100 * cell.share:.1f} [{100 * cell.low:.1f}, {100 * cell.high:.1f}] (n={cell.votes})"


def _columns(report: StudyReport) -> list[str]:
    return report.settings + ([ALL] if len(report.settings) > 1 else [])


def _main_rows(report: StudyReport) -> list[list[str]]:
    rows = []
    for method in report.methods:
        cells = []
        for setting in _columns(report):
            if method == report.reference:
                cells.append("reference")
                continue
            try:
                cells.append(_pct(report.cell(method, setting)))
            except KeyError:
                cells.append("-")
        rows.append([method, *cells])
    return rows


def report_markdown(report: StudyReport) -> str:
    cols = _columns(report)
    against = f"against **{report.reference}**" if report.reference else "against all other methods together"
    lines = [f"# 2AFC study: {report.title}" if report.title else "# 2AFC study", "",
             (f"Votes [%] for each method {against}: share of first-showing votes won, 95 % interval from a bootstrap "
              f"over participants ({report.n_boot} draws, seed {report.seed}), n = votes. 50 % = no preference."), "",
             "| method | " + " | ".join(_title(c) for c in cols) + " |", "|---|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(row) + " |" for row in _main_rows(report)]
    if len(report.methods) > 2:
        lines += ["", "## Pairwise (row method's share against the column method, all settings)", "",
                  "| method | " + " | ".join(report.methods) + " |", "|---|" + "---|" * len(report.methods)]
        for m in report.methods:
            row = []
            for o in report.methods:
                try:
                    row.append("" if m == o else _pct(report.cell(m, ALL, o)))
                except KeyError:
                    row.append("-")
            lines.append(f"| {m} | " + " | ".join(row) + " |")
    lines += ["", "## Participants", "",
              ("Consistency: share of repeated pairs (sides swapped) answered with the same method; chance = 50 %. "
               "p: one-sided binomial p-value of that agreement under random clicking; flagged below chance when "
               f"p < {report.flag_alpha:g}."), "",
              "| participant | votes | repeats | consistency | p | left chosen | median RT (s) | flag |",
              "|---|---:|---:|---:|---:|---:|---:|---|"]
    for p in report.participants:
        cons = "-" if math.isnan(p.consistency) else f"{100 * p.consistency:.0f} % ({p.agreements}/{p.repeats})"
        pval = "-" if math.isnan(p.p_chance) else f"{p.p_chance:.3f}"
        left = "-" if math.isnan(p.left_share) else f"{100 * p.left_share:.0f} %"
        rt = "-" if math.isnan(p.median_rt_ms) else f"{p.median_rt_ms / 1000:.2f}"
        flag = "below chance" + (" (excluded)" if p.participant in report.excluded else "") if p.flagged else ""
        lines.append(f"| {p.participant} | {p.votes}/{p.assigned} | {p.repeats} | {cons} | {pval} | {left} | {rt} | "
                     f"{flag} |")
    return "\n".join(lines) + "\n"


def _csv_text(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([f"{x:.6g}" if isinstance(x, float) else x for x in row] for row in rows)
    return buf.getvalue()


def report_csv(report: StudyReport) -> str:
    return _csv_text(["method", "opponent", "setting", "share", "ci_low", "ci_high", "wins", "votes", "participants",
                      "wilson_low", "wilson_high"],
                     [[c.method, c.opponent, c.setting, c.share, c.low, c.high, c.wins, c.votes, c.participants,
                       c.wilson_low, c.wilson_high] for c in report.cells])


def participants_csv(report: StudyReport) -> str:
    return _csv_text(["participant", "votes", "assigned", "repeats", "agreements", "consistency", "p_chance",
                      "flagged", "excluded", "left_share", "median_rt_ms"],
                     [[p.participant, p.votes, p.assigned, p.repeats, p.agreements, p.consistency, p.p_chance,
                       int(p.flagged), int(p.participant in report.excluded), p.left_share, p.median_rt_ms]
                      for p in report.participants])


def plot_report(report: StudyReport, path: str | os.PathLike) -> Path:
    """Grouped bars: vote share per setting for each method (the reference left out), 95 % intervals, 50 % line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = _columns(report)
    shown = [m for m in report.methods if m != report.reference]
    width = 0.8 / len(shown)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(cols) + 1.5), 3.2))
    for k, method in enumerate(shown):
        xs, ys, err = [], [], [[], []]
        for i, setting in enumerate(cols):
            try:
                c = report.cell(method, setting)
            except KeyError:
                continue
            xs.append(i - 0.4 + width * (k + 0.5))
            ys.append(100 * c.share)
            err[0].append(0 if math.isnan(c.low) else 100 * (c.share - c.low))
            err[1].append(0 if math.isnan(c.high) else 100 * (c.high - c.share))
        ax.bar(xs, ys, width * 0.9, yerr=err, capsize=3, label=method)
    ax.axhline(50, color="0.4", lw=0.8, ls="--")
    ax.set_xticks(range(len(cols)), [_title(c) for c in cols])
    ax.set_ylim(0, 100)
    ax.set_ylabel("votes [%]" + (f" vs {report.reference}" if report.reference else ""))
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_report(report: StudyReport, out_dir: str | os.PathLike, plot: bool = True) -> list[Path]:
    """``report.md``, ``report.csv``, ``participants.csv`` and (if asked) ``report.png`` under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("report.md", report_markdown(report)), ("report.csv", report_csv(report)),
                       ("participants.csv", participants_csv(report))):
        _write_atomic(out / name, text)
        written.append(out / name)
    if plot:
        tmp = out / ".report.tmp.png"
        plot_report(report, tmp)
        os.replace(tmp, out / "report.png")
        written.append(out / "report.png")
    return written

"""Samplers against exact answers on a suite of Gaussian-mixture problems, with intervals (issue 13).

Two phases, on disjoint seeds (:data:`repaint.evaluation.groundtruth.SELECTION_SEED`, :data:`~.REPORT_SEED`):

    OMP_NUM_THREADS=1 python benchmarks/groundtruth_suite.py select   # grid on the selection problems and seeds
    OMP_NUM_THREADS=1 python benchmarks/groundtruth_suite.py report   # fixed candidates, every problem, fresh seeds

``select`` writes benchmarks/results/groundtruth_select.json; ``report`` reads nothing from it: its candidate list
below is edited by hand after looking at the selection, and the edit is committed before ``report`` runs.
``report`` writes benchmarks/results/groundtruth_report.json (metrics, 95 % bootstrap intervals, differences to the
paper setting with their intervals, equivalence under the fixed margins, goal verdicts).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

from repaint.settings import FAST as FAST_PRESET
from repaint.evaluation.groundtruth import (
    PROBLEMS, REPORT_RANDOM, REPORT_SEED, Run, SELECTION_PROBLEMS, SELECTION_SEED, compare, describe, get_problem,
    run_sampler, summarise
)
from repaint.settings import SamplerSettings

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
PAPER = SamplerSettings(steps=250, jump_length=10, jump_n_sample=10)


def smc(steps: int, particles: int, lookahead: float, variance: float = -2.0, **schedule) -> SamplerSettings:
    """SMC settings; without ``schedule`` options a fixed count of ``particles`` at every step (stages 1 and 2)."""
    schedule = schedule or {"outside": particles}
    return SamplerSettings(steps=steps, jump_length=1, jump_n_sample=1, sampler="smc",
                           options={"particles": particles, "lookahead": lookahead, "variance": variance, **schedule})


def scheduled(steps: int, budget: int, lookahead: float, variance: float) -> SamplerSettings:
    """SMC with the particle schedule (3 outside the window) and the largest K in the window within ``budget``."""
    inside = sum(1 / 3 <= i / steps < 0.9 for i in range(steps))
    k = (budget - 3 * (steps - inside)) // inside
    return smc(steps, k, lookahead, variance, outside=3)


def selection_grid(stage: int) -> dict[str, SamplerSettings]:
    """Stage 1: particles x steps x lookahead with the model's variance; stage 2 (added after stage 1 showed the
    spread shrinking with the model's beta~ variance at 20-50 steps): the kernel variance v. Stage 3 (added after
    the report showed the stage-2 choice missing the goal on the held-out hard12): the particle schedule (K
    concentrated where the component is decided), steps, lookahead and v, on the selection problems that now include
    six random ones; stage 4: the same at 250 calls, for the easy-problem question."""
    if stage == 5:
        # after report 3: hard12's 0.8 % wrong-component fills (each far away) pushed its spread interval past 1.1;
        # rates that low are invisible at n = 500, so stage 5 runs n = 2000 and more particles mid-chain
        grid = {"smc T=50 K=15 (stage-3 choice)": scheduled(50, 500, 8.0, 0.5),
                "smc T=50 K=16 outside=2": smc(50, 16, 8.0, 0.5, outside=2),
                "smc T=50 K=17 window=[0.4, 0.9)": smc(50, 17, 8.0, 0.5, outside=3, window_start=0.4),
                "smc T=40 K=20": scheduled(40, 500, 8.0, 0.5),
                "smc T=35 K=22": scheduled(35, 500, 8.0, 0.5),
                "smc T=25 K=33": scheduled(25, 500, 8.0, 0.5)}
        return grid
    if stage in (3, 4):
        budget = 500 if stage == 3 else 250
        return {f"smc scheduled T={t} K={scheduled(t, budget, lam, v).options['particles']} lookahead={lam} v={v}":
                scheduled(t, budget, lam, v) for t in (25, 35, 50) for lam in (4.0, 8.0) for v in (0.3, 0.5)}
    if stage == 1:
        grid = {f"smc T={t} K={500 // t} lookahead={lam}": smc(t, 500 // t, lam)
                for t in (20, 25, 50) for lam in (0.0, 1.0, 2.0, 3.0, 5.0)}
        grid["smc T=25 K=10 lookahead=2.0"] = smc(25, 10, 2.0)
        return grid
    grid = {f"smc T=25 K=20 lookahead={lam} v={v}": smc(25, 20, lam, v) for lam in (1.0, 2.0) for v in (0.0, 0.3)}
    grid["smc T=50 K=10 lookahead=2.0 v=0.0"] = smc(50, 10, 2.0, 0.0)
    return grid


# Fixed after the selection phase (see docs/fidelity.md); the report phase runs exactly these.
CANDIDATES = {
    "repaint T=250 j=10 r=10 (paper)": PAPER,
    "repaint T=250 r=1 (no resampling)": SamplerSettings(steps=250, jump_length=1, jump_n_sample=1),
    "FAST_PRESET T=50 j=5 r=10 start=20": FAST_PRESET,
    "smc T=25 K=20 lookahead=2 v=0.3 (defaults)": smc(25, 20, 2.0, 0.3),
    "smc T=25 K=10 lookahead=2 v=0.3": smc(25, 10, 2.0, 0.3),
    "lanpaint T=50 N=4 h=0.5 lamb=1 (defaults)": SamplerSettings(steps=50, sampler="lanpaint"),
    "ddnm T=25 j=5 r=10 eta=1": SamplerSettings(steps=25, jump_length=5, jump_n_sample=10, sampler="ddnm"),
    "copaint T=50 G=2 lr=1 coef=1 (defaults)": SamplerSettings(steps=50, sampler="copaint"),
}


CACHE = RESULTS / "fills"   # fills of earlier runs (not committed): the paper setting takes ~30 min per problem


def _run(settings: SamplerSettings, name: str, n: int, seed: int) -> dict:
    settings = SamplerSettings(**{**settings.to_dict(), "clip_denoised": False})
    problem = get_problem(name)
    key = hashlib.sha256(json.dumps([settings.to_dict(), name, n, seed], sort_keys=True).encode()).hexdigest()[:16]
    cached = CACHE / f"{name}-{key}.pt"
    if cached.exists():
        run = Run(**torch.load(cached))
    else:
        run = run_sampler(settings, problem, n, seed)
        CACHE.mkdir(parents=True, exist_ok=True)
        torch.save({"fills": run.fills, "calls": run.calls, "seconds": run.seconds}, cached)
    summary = summarise(run.fills, problem.conditional, seed)
    summary.update(calls=run.calls, seconds=run.seconds, settings=settings.to_dict())
    return summary


def _public(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if not k.startswith("_")}


def _line(label: str, s: dict) -> str:
    m, ci = s["metrics"], s["intervals"]
    return (f"{label:40s} calls={s['calls']:5d} excluded={m['excluded']:.3f} [{ci['excluded'][0]:.3f}, "
            f"{ci['excluded'][1]:.3f}] tv={m['component_tv']:.3f} spread={m['spread_ratio']:.3f} "
            f"[{ci['spread_ratio'][0]:.3f}, {ci['spread_ratio'][1]:.3f}] mean_err={m['mean_error']:.3f} "
            f"sw2={m['sliced_w2']:.3f} goal={s['meets_goal']} ({s['seconds']:.0f}s)")


def choose(selection: dict) -> str:
    """Stage 3's rule: among the settings that meet the goal on every selection problem, the one whose spread ratio
    is nearest 1 on its worst problem."""
    problems = selection["problems"].values()
    labels = next(iter(problems))["results"]
    passing = [label for label in labels if all(p["results"][label]["meets_goal"] for p in problems)]
    if not passing:
        raise ValueError("no setting meets the goal on every selection problem")
    return min(passing, key=lambda label: max(abs(p["results"][label]["metrics"]["spread_ratio"] - 1)
                                              for p in problems))


def select(n: int, stage: int) -> dict:
    out = {"phase": "select", "stage": stage, "n": n, "seed": SELECTION_SEED, "problems": {}}
    for name in SELECTION_PROBLEMS if stage >= 3 else SELECTION_PROBLEMS[:2]:
        rows = {}
        for label, settings in selection_grid(stage).items():
            rows[label] = _public(_run(settings, name, n, SELECTION_SEED))
            print(name, _line(label, rows[label]), flush=True)
        out["problems"][name] = {"problem": describe(get_problem(name)), "results": rows}
    if stage == 4:
        # stage 4's rule, for the easy-problem question: the spread ratio nearest 1 on easy
        easy = out["problems"]["easy"]["results"]
        out["chosen"] = min(easy, key=lambda label: abs(easy[label]["metrics"]["spread_ratio"] - 1))
        print("chosen:", out["chosen"])
    if stage == 5:
        # stage 5's rule, fixed before the run: meets the goal on every selection problem, then the fewest fills in
        # excluded components summed over the eight problems, then the worst |spread - 1|
        problems = out["problems"].values()
        passing = [label for label in selection_grid(5)
                   if all(p["results"][label]["meets_goal"] for p in problems)]
        out["chosen"] = min(passing, key=lambda label: (
            round(sum(p["results"][label]["metrics"]["excluded"] for p in problems) * n),
            max(abs(p["results"][label]["metrics"]["spread_ratio"] - 1) for p in problems)))
        print("chosen:", out["chosen"])
    if stage == 3:
        out["chosen"] = choose(out)
        print("chosen:", out["chosen"])
    return out


def report(n_easy: int, n_hard: int, problems) -> dict:
    out = {"phase": "report", "seed": REPORT_SEED, "n_easy": n_easy, "n_hard": n_hard, "problems": {}}
    for name in problems:
        n = n_easy if name in ("easy", "mixed") else n_hard
        runs = {label: _run(settings, name, n, REPORT_SEED) for label, settings in CANDIDATES.items()}
        reference = runs["repaint T=250 j=10 r=10 (paper)"]
        rows = {}
        for label, s in runs.items():
            rows[label] = {**_public(s), "vs_paper": compare(s, reference)}
            print(name, _line(label, s), "equivalent:", rows[label]["vs_paper"]["equivalent"], "non-inferior:",
                  rows[label]["vs_paper"]["noninferior"], flush=True)
        out["problems"][name] = {"problem": describe(get_problem(name)), "n": n, "results": rows}
    return out


# Fixed after selection stages 3 and 4 (docs/fidelity.md); ``report --stage 3`` runs exactly these, on every problem
# including the random ones kept for the report. The paper setting is run on easy and mixed only (the comparison
# question of issue 13 is about the easy problems; on the hard ones the goal is absolute).
CANDIDATES3 = {
    "FAST_PRESET (RePaint) T=50 j=5 r=10 start=20": FAST_PRESET,
    "smc stage-2 choice: T=25 K=20 fixed, lookahead=2 v=0.3": smc(25, 20, 2.0, 0.3),
    # the two "defaults" rows ran with the stage-3 defaults (K=15, outside 3, lookahead 8, v=0.5), pinned here
    "smc defaults at T=50 (stage-3 choice): K=15 mid-chain": scheduled(50, 500, 8.0, 0.5),
    "smc stage-4 choice: T=35 K=10 lookahead=4 v=0.5": scheduled(35, 250, 4.0, 0.5),
    "smc defaults at T=25 (descriptive, not chosen)": smc(25, 15, 8.0, 0.5, outside=3),
}


# Report 5, after stage 5: fresh seeds and ten fresh random problems (report 3's were looked at when stage 5 was
# set up). Fixed after stage 5's choice, before the run.
FINAL_SEED = 2_000_000
FINAL_RANDOM = tuple(f"random-{seed}" for seed in range(2000, 2010))
CANDIDATES5: dict[str, SamplerSettings] = {
    "smc stage-5 choice: T=40 K=20 lookahead=8 v=0.5": scheduled(40, 500, 8.0, 0.5),
    "smc stage-3 choice: T=50 K=15 lookahead=8 v=0.5": scheduled(50, 500, 8.0, 0.5),
}


def report_candidates(n_easy: int, n_hard: int, n_random: int, problems, stage: int = 3) -> dict:
    """Report 3 (``CANDIDATES3``, seeds from REPORT_SEED) or report 5 (``CANDIDATES5``, seeds from FINAL_SEED)."""
    candidates, seed = (CANDIDATES3, REPORT_SEED) if stage == 3 else (CANDIDATES5, FINAL_SEED)
    out = {"phase": "report", "stage": stage, "seed": seed, "problems": {}}
    for name in problems:
        n = n_easy if name in ("easy", "mixed") else n_random if name.startswith("random") else n_hard
        runs = {label: _run(settings, name, n, seed) for label, settings in candidates.items()}
        reference = _run(PAPER, name, n, seed) if name in ("easy", "mixed") and stage == 3 else None
        rows = {}
        for label, s in runs.items():
            rows[label] = _public(s) | ({"vs_paper": compare(s, reference)} if reference else {})
            print(name, _line(label, s), flush=True)
        if reference:
            rows = {"repaint T=250 j=10 r=10 (paper)": _public(reference)} | rows
        out["problems"][name] = {"problem": describe(get_problem(name)), "n": n, "results": rows}
        (RESULTS / f"groundtruth_report{stage}_{name}.json").write_text(json.dumps(out["problems"][name], indent=1))
    return out


def tables_by_stage(stage: int = 3) -> str:
    """One markdown table of every groundtruth_report<stage>_<problem>.json present."""
    lines = ["| problem | setting | calls | excluded [95 % CI] | spread ratio [95 % CI] | mean err | goal | "
             "vs paper: TV, spread error, mean err (upper 95 % bound of the difference) | non-inf. |",
             "|---|---|---:|---:|---:|---:|:-:|---|:-:|"]
    for name in (*PROBLEMS, *REPORT_RANDOM, *FINAL_RANDOM):
        path = RESULTS / f"groundtruth_report{stage}_{name}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        p = data["problem"]
        title = f"{name} ({p['shape'][1]}x{p['shape'][2]}, {p['components']} comp., {p['known_pixels']} known)"
        for label, r in data["results"].items():
            m, ci = r["metrics"], r["intervals"]
            vs = r.get("vs_paper")
            versus = "; ".join(f"{vs['noninferiority'][k]['upper']:+.3f}" for k in ("component_tv", "spread_error",
                                                                                     "mean_error")) if vs else ""
            lines.append(
                f"| {title} | {label} | {r['calls']} | {m['excluded']:.3f} [{ci['excluded'][0]:.3f}, "
                f"{ci['excluded'][1]:.3f}] | {m['spread_ratio']:.2f} [{ci['spread_ratio'][0]:.2f}, "
                f"{ci['spread_ratio'][1]:.2f}] | {m['mean_error']:.2f} | {'yes' if r['meets_goal'] else 'no'} | "
                f"{versus} | {('yes' if vs['noninferior'] else 'no') if vs else ''} |")
    return "\n".join(lines)


def tables() -> str:
    """Markdown tables of every groundtruth_report_<problem>.json present (for docs/fidelity.md)."""
    lines = []
    for name in PROBLEMS:
        path = RESULTS / f"groundtruth_report_{name}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())["problems"][name]
        p = data["problem"]
        lines += [(f"**{name}** ({p['shape'][1]}x{p['shape'][2]}, {p['components']} components, "
                   f"{p['known_pixels']} known "
                  f"pixels, {p['excluded_components']} excluded; n = {data['n']} per setting)"), "",
                  ("| setting | calls | excluded [95 % CI] | TV | spread ratio [95 % CI] | mean err | TV - paper "
                  "[95 % CI] | equiv. | non-inf. | goal |"), "|---|---:|---:|---:|---:|---:|---:|:-:|:-:|:-:|"]
        for label, r in data["results"].items():
            m, ci, vs = r["metrics"], r["intervals"], r["vs_paper"]
            tv = vs["component_tv"]
            lines.append(
                f"| {label} | {r['calls']} | {m['excluded']:.3f} [{ci['excluded'][0]:.3f}, {ci['excluded'][1]:.3f}] | "
                f"{m['component_tv']:.3f} | {m['spread_ratio']:.2f} [{ci['spread_ratio'][0]:.2f}, "
                f"{ci['spread_ratio'][1]:.2f}] | {m['mean_error']:.2f} | {tv['difference']:+.3f} [{tv['ci'][0]:+.3f}, "
                f"{tv['ci'][1]:+.3f}] | {'yes' if vs['equivalent'] else 'no'} | "
                f"{'yes' if vs['noninferior'] else 'no'} | {'yes' if r['meets_goal'] else 'no'} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("phase", choices=("select", "report", "tables"))
    parser.add_argument("--stage", type=int, default=1, choices=(1, 2, 3, 4, 5),
                        help="selection grid (see selection_grid)")
    parser.add_argument("--n", type=int, default=500, help="fills per setting in the selection phase")
    parser.add_argument("--n-easy", type=int, default=5000, help="fills per setting, easy/mixed, report phase")
    parser.add_argument("--problem", default=None, help="report one problem only (a name, or random-SEED)")
    parser.add_argument("--n-hard", type=int, default=2000, help="fills per setting, hard problems, report phase")
    parser.add_argument("--n-random", type=int, default=1000, help="fills per setting, random problems, report 3")
    args = parser.parse_args(argv)
    if args.phase == "tables":
        print(tables_by_stage(args.stage) if args.stage in (3, 5) else tables())
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.phase == "report" and args.stage in (3, 5):
        every = [*PROBLEMS, *(REPORT_RANDOM if args.stage == 3 else FINAL_RANDOM)]
        problems = [args.problem] if args.problem else every
        report_candidates(args.n_easy, args.n_hard, args.n_random, problems, args.stage)
        return 0
    problems = [args.problem] if args.problem else list(PROBLEMS)
    result = select(args.n, args.stage) if args.phase == "select" else report(args.n_easy, args.n_hard, problems)
    stem = f"groundtruth_select{args.stage}" if args.phase == "select" else \
        "groundtruth_report" + (f"_{args.problem}" if args.problem else "")
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

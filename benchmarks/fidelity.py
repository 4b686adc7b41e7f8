"""Fidelity of inpainting samplers against an exact ground truth, versus network calls (issue 5).

The data are a Gaussian mixture of 8x8 images with opposite mean patterns
(:func:`repaint.evaluation.gmm.disharmony_problem`): 4 known pixels (at the mean of one component) rule the other out;
the exact denoiser E[x0 | x_t] stands in for the network. For every sampler setting we inpaint n images and measure
(:func:`repaint.evaluation.gmm.fidelity_metrics`) the component total-variation error, the conditional-mean error and
the sliced Wasserstein distance to exact conditional samples.

    OMP_NUM_THREADS=1 python benchmarks/fidelity.py            # full run, writes docs/fidelity/fidelity.{json,png}
    OMP_NUM_THREADS=1 python benchmarks/fidelity.py --quick    # small n and grid, a smoke test (~1 minute)

A setting "matches" the reference (RePaint T=250, j=10, r=10) when each of its three errors is at most the
reference's plus a tolerance for Monte-Carlo noise at this n: for the mean and Wasserstein errors the error of n
exact samples, for the component error two standard errors of the difference of two shares near the reference's.
That rule is not an equivalence test and is superseded (issue 13): benchmarks/groundtruth_suite.py puts intervals on
differences, with margins and a selection/report seed split fixed in advance (docs/fidelity.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from repaint.evaluation.gmm import disharmony_problem, fidelity_metrics, validate
from repaint.settings import SamplerSettings

OUT = Path(__file__).resolve().parents[1] / "docs" / "fidelity"
METRICS = ("component_tv", "mean_error", "sliced_w2")
REFERENCE = ("repaint T=250 j=10 r=10", SamplerSettings(steps=250, jump_length=10, jump_n_sample=10))


def _s(sampler: str, steps: int, j: int = 1, r: int = 1, eta: float = 1.0, **kw) -> SamplerSettings:
    return SamplerSettings(steps=steps, jump_length=j, jump_n_sample=r, sampler=sampler, eta=eta, **kw)


def grid(quick: bool) -> list[tuple[str, str, SamplerSettings]]:
    """(family, label, settings) of every run; the family groups points in the plot."""
    runs = [("slowing down (repaint r=1)", f"repaint T={t} r=1", _s("repaint", t)) for t in (25, 100, 250, 1000)]
    tight = ((25, 5, 10), (30, 5, 9), (20, 4, 14), (30, 10, 11), (15, 3, 19), (10, 2, 29))  # <= 241 calls
    runs += [("repaint j/r", f"repaint T={t} j={j} r={r}", _s("repaint", t, j, r))
             for t, j, r in tight + ((50, 10, 5), (100, 10, 3))]
    runs += [("repaint start_resampling", f"repaint T={t} j={j} r={r} start={s}", _s("repaint", t, j, r,
              start_resampling=s)) for t, j, r, s in ((25, 5, 10, 15), (50, 5, 10, 30), (50, 5, 10, 20))]
    for name in ("ddim_repaint", "ddnm"):
        runs += [(name, f"{name} T={t} j={j} r={r} eta={eta}", _s(name, t, j, r, eta))
                 for t, j, r, eta in ((25, 1, 1, 1.0), (25, 5, 10, 0.5), *((t, j, r, 1.0) for t, j, r in tight))]
    runs.append(("reference", REFERENCE[0], REFERENCE[1]))
    if quick:
        keep = {"repaint T=25 r=1", "repaint T=250 r=1", "repaint T=25 j=5 r=10", "ddim_repaint T=25 j=5 r=10 eta=1.0",
                "ddnm T=25 j=5 r=10 eta=1.0"}
        runs = [run for run in runs if run[1] in keep] + [("reference", "repaint T=50 j=5 r=10 (quick ref)",
                                                          _s("repaint", 50, 5, 10))]
    return runs


def noise_floor(problem, n: int, seed: int) -> dict[str, float]:
    """Each metric for n exact conditional samples: what a perfect sampler scores at this n."""
    exact = problem.conditional.sample(n, torch.Generator().manual_seed(seed + 12345))
    floor = fidelity_metrics(exact, problem.conditional, seed)
    return floor


def run(quick: bool = False, n: int | None = None, seed: int = 0, out: Path = OUT) -> dict:
    n = n or (300 if quick else 1000)
    problem = disharmony_problem()
    results = []
    for family, label, settings in grid(quick):
        settings = SamplerSettings(**{**settings.to_dict(), "clip_denoised": False})
        metrics = validate(settings, n=n, seed=seed, problem=problem)
        results.append({"family": family, "label": label, "settings": settings.to_dict(), **metrics})
        print(f"{label:42s} calls={metrics['calls']:5d} tv={metrics['component_tv']:.3f} "
              f"mean={metrics['mean_error']:.3f} sw={metrics['sliced_w2']:.3f} ({metrics['seconds']:.1f}s)",
              flush=True)
    floor = noise_floor(problem, n, seed)
    reference = next(r for r in results if r["family"] == "reference")
    budget = reference["calls"] // 10
    p = reference["component_tv"]  # two standard errors of a difference of two shares near the reference's
    tolerance = {**floor, "component_tv": max(floor["component_tv"], 2 * (2 * p * (1 - p) / n) ** 0.5)}
    for r in results:
        r["matches_reference"] = all(r[m] <= reference[m] + tolerance[m] for m in METRICS)
    fits = [r for r in results if r["calls"] <= budget and r["family"] != "reference"]
    best = min(fits, key=lambda r: max((r[m] - reference[m]) / tolerance[m] for m in METRICS)) if fits else None
    summary = {
        "n": n, "seed": seed, "quick": quick, "exact_weights": problem.conditional.weights.tolist(),
        "noise_floor": floor, "tolerance": tolerance, "reference": reference["label"], "call_budget": budget,
        "matching_within_budget": [r["label"] for r in fits if r["matches_reference"]],
        "closest_within_budget": best["label"] if best else None, "results": results,
    }
    out.mkdir(parents=True, exist_ok=True)
    stem = "fidelity_quick" if quick else "fidelity"
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=1))
    plot(summary, out / f"{stem}.png")
    return summary


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    families = list(dict.fromkeys(r["family"] for r in summary["results"]))
    markers = "osD^vP*X"
    for ax, metric in zip(axes, METRICS):
        for i, family in enumerate(families):
            rows = [r for r in summary["results"] if r["family"] == family]
            ax.scatter([r["calls"] for r in rows], [r[metric] for r in rows], marker=markers[i % len(markers)],
                       label=family, s=40)
        ref = next(r for r in summary["results"] if r["family"] == "reference")
        ax.axhline(ref[metric] + summary["tolerance"][metric], color="gray", ls="--", lw=1,
                   label="reference + tolerance")
        ax.axvline(summary["call_budget"], color="red", ls=":", lw=1, label="1/10 of reference calls")
        ax.set(xscale="log", xlabel="network calls per image", ylabel=metric, title=metric)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Inpainting fidelity vs exact GMM conditional (n={summary['n']}, exact weights "
                 f"{[round(w, 3) for w in summary['exact_weights']]})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small n and grid (smoke test)")
    parser.add_argument("--n", type=int, default=None, help="images per setting (default 1000, quick 300)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    summary = run(args.quick, args.n, args.seed)
    print(f"matching within {summary['call_budget']} calls: {summary['matching_within_budget'] or 'none'}; "
          f"closest: {summary['closest_within_budget']} ({time.perf_counter() - start:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

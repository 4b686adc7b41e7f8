"""Coverage of the study report's 95 % interval: simulated studies with a known vote share of 0.70.

Each simulated study has ``--participants`` participants who answer ``--votes`` pairs each and prefer the method
with their own probability p_i ~ Beta(7, 3) (mean 0.70, sd 0.14); the share of studies whose interval contains 0.70
is reported for the cluster bootstrap over participants (the report's interval) and for the Wilson interval on the
pooled votes (which treats votes as independent), with the median ratio of their widths. One seeded torch.Generator.

    python benchmarks/study_coverage.py --studies 1000 --participants 25 --votes 30 --seed 3
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from repaint.study.report import cluster_bootstrap, wilson_interval


def beta(a: int, b: int, n: int, g: torch.Generator) -> torch.Tensor:
    """Beta(a, b) for integer a, b: X / (X + Y) with Gamma draws as sums of exponentials."""
    e = -torch.log(torch.rand(n, a + b, generator=g, dtype=torch.float64))
    return e[:, :a].sum(1) / e.sum(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--participants", type=int, default=25)
    parser.add_argument("--votes", type=int, default=30)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(args.seed)
    hit_boot = hit_wilson = 0
    ratios = []
    n = torch.full((args.participants,), float(args.votes), dtype=torch.float64)
    for _ in range(args.studies):
        wins = torch.binomial(n, beta(7, 3, args.participants, g), generator=g)
        _, low, high = cluster_bootstrap(wins.numpy(), n.numpy(), args.n_boot, g)
        w_low, w_high = wilson_interval(int(wins.sum()), args.participants * args.votes)
        hit_boot += low <= 0.70 <= high
        hit_wilson += w_low <= 0.70 <= w_high
        ratios.append((high - low) / (w_high - w_low))
    print(json.dumps({**vars(args), "coverage_cluster_bootstrap": hit_boot / args.studies,
                      "coverage_wilson": hit_wilson / args.studies,
                      "median_width_ratio": round(float(np.median(ratios)), 3)}))


if __name__ == "__main__":
    main()

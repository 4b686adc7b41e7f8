"""The ground-truth problem suite and its statistics: decisive problems, metrics of exact draws, intervals."""

import pytest
import torch

from repaint.evaluation.groundtruth import (
    MARGINS, PROBLEMS, REPORT_RANDOM, SELECTION_PROBLEMS, anisotropic_covariance, compare, describe, get_problem,
    random_problem, score, smooth_pattern, summarise
)


def test_problems_are_what_they_claim():
    info = {name: describe(get_problem(name)) for name in PROBLEMS}
    for name in ("easy", "hard8", "hard12"):
        assert max(info[name]["exact_weights"]) > 0.999          # decisive posteriors
    assert info["hard8"]["components"] >= 8 and info["hard8"]["known_pixels"] <= 4
    assert info["hard12"]["shape"] == [1, 12, 12]
    assert 0.05 < min(info["mixed"]["exact_weights"]) and info["mixed"]["excluded_components"] == 0
    never_chosen_on = {"mixed", "hard12", *REPORT_RANDOM}           # some problems are never used for choosing
    assert set(SELECTION_PROBLEMS).isdisjoint(never_chosen_on) and set(SELECTION_PROBLEMS) & set(PROBLEMS)


def test_random_problems_are_hard_reproducible_and_differ_by_seed():
    first, again, other = random_problem(1000), get_problem("random-1000"), random_problem(1001)
    assert torch.equal(first.known_image, again.known_image) and torch.equal(first.mask, again.mask)
    assert not torch.equal(first.mixture.means[0][:16], other.mixture.means[0][:16])
    for name in SELECTION_PROBLEMS + REPORT_RANDOM[:3]:
        info = describe(get_problem(name))
        assert max(info["exact_weights"]) > 0.999 and 2 <= info["known_pixels"] <= 4
        assert info["excluded_components"] >= 1
    pattern = smooth_pattern(10, torch.Generator().manual_seed(0))
    assert pattern.abs().max() == 1 and abs(float(pattern.mean())) < 1e-9


def test_anisotropic_covariance_correlates_more_along_the_longer_axis():
    cov = anisotropic_covariance(5, (3.0, 1.0), std=1.0, nugget=0.0)
    assert cov[0, 5] > 0.9 and cov[0, 1] < 0.7                    # (0,0)-(1,0) vs (0,0)-(0,1)
    assert torch.linalg.eigvalsh(cov + 1e-9 * torch.eye(25)).min() > -1e-6


def test_unknown_problem_is_a_one_line_error():
    for name in ("nope", "random-", "random-x"):
        with pytest.raises(ValueError, match=f"unknown problem '{name}'"):
            get_problem(name)


def test_exact_draws_score_as_exact_and_shrunk_fills_do_not():
    problem = get_problem("hard8")
    cond = problem.conditional
    exact = cond.sample(3000, torch.Generator().manual_seed(1))
    s = summarise(exact, cond)
    assert s["metrics"]["excluded"] < 0.005 and s["meets_goal"]
    lo, hi = s["intervals"]["spread_ratio"]
    assert lo < 1.0 < hi
    values = cond.unknown_of(exact)
    shrunk = cond.fill(cond.mean + 0.5 * (values - cond.mean))     # half the spread, same mean
    assert abs(score(shrunk, cond)["spread_ratio"] - 0.5) < 0.03
    assert not summarise(shrunk, cond)["meets_goal"]


def test_equivalence_needs_the_interval_inside_the_margin():
    cond = get_problem("easy").conditional
    a = summarise(cond.sample(4000, torch.Generator().manual_seed(2)), cond, seed=0)
    b = summarise(cond.sample(4000, torch.Generator().manual_seed(3)), cond, seed=1)
    assert compare(a, b)["equivalent"]                            # two exact samplers
    values = cond.unknown_of(cond.sample(4000, torch.Generator().manual_seed(4)))
    wide = summarise(cond.fill(cond.mean + 1.2 * (values - cond.mean)), cond, seed=2)
    verdict = compare(wide, b)
    assert not verdict["equivalent"] and not verdict["spread_ratio"]["equivalent"]
    assert verdict["spread_ratio"]["ci"][0] > MARGINS["spread_ratio"]

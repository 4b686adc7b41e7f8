"""The twisted SMC sampler: options, call counts, reproducibility and a statistical check against exact answers."""

import itertools

import pytest
import torch
from sampler_helpers import MIX, assert_known_exact_and_seeded_per_image, run_on_mixture

from repaint.diffusion import Diffusion, DiffusionConfig
from repaint.evaluation.gmm import disharmony_problem
from repaint.evaluation.groundtruth import run_sampler, score
from repaint.settings import SamplerSettings
from repaint.samplers.smc import _resample, network_calls, particle_counts


def _settings(**options):
    return SamplerSettings(steps=10, jump_length=1, jump_n_sample=1, sampler="smc", options=options)


def _run(seeds, settings=None, callback=None, model=None):
    return run_on_mixture(settings or _settings(particles=4), seeds, callback, model)


def test_known_region_is_exact_and_seeds_reproduce_per_image():
    assert_known_exact_and_seeded_per_image(_run)


def test_network_evaluations_follow_the_particle_schedule():
    """K particles on the steps from 1/3 to 0.9 of the way down, ``outside`` (3) on the others; a fixed count when
    ``outside`` equals K. The callback counts calls per image as they happen."""
    evaluations = []
    diffusion = Diffusion(DiffusionConfig(timestep_respacing="10"))
    denoiser = MIX.denoiser(diffusion)

    def model(x, t):
        evaluations.append(len(x))
        return denoiser(x, t)

    steps = []
    _run([0, 1], _settings(particles=6), callback=steps.append, model=model)
    per_image = [3, 3, 3, 3, 6, 6, 6, 6, 6, 3]           # positions i / 10 in [1/3, 0.9) are 4..8
    assert evaluations == [2 * k for k in per_image]
    assert particle_counts(_settings(particles=6), 10) == per_image
    assert network_calls(_settings(particles=6), 10) == 45
    assert [s.calls for s in steps] == list(itertools.accumulate(per_image))
    assert network_calls(_settings(particles=6, outside=6), 10) == 60
    assert network_calls(_settings(particles=2), 10) == 20          # outside is capped at K
    assert network_calls(SamplerSettings(steps=40, sampler="smc"), 40) == 494   # the documented default cost


@pytest.mark.parametrize("options, message", [
    ({"particle": 3}, r"no option\(s\) particle"),
    ({"particles": 0}, "particles must be a whole number"),
    ({"particles": 2.5}, "particles must be a whole number"),
    ({"outside": 0}, "outside must be a whole number"),
    ({"window_start": 0.5, "window_end": 0.4}, "window_start <= window_end"),
    ({"ess": 1.5}, "ess must lie in"),
    ({"lookahead": -1}, "lookahead must be >= 0"),
    ({"particles": "ten"}, "must be a finite number"),
])
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(ValueError, match=message) as info:
        _run([0], _settings(**options))
    assert "\n" not in str(info.value)


def test_smc_harmonises_where_repaint_without_resampling_does_not():
    """Issue 5's problem: a third of RePaint's unresampled fills lie in the excluded component; SMC almost none."""
    problem = disharmony_problem()
    base = {"clip_denoised": False, "jump_length": 1, "jump_n_sample": 1}
    plain = run_sampler(SamplerSettings(steps=20, **base), problem, 300, 0)
    smc = run_sampler(SamplerSettings(steps=20, sampler="smc", options={"particles": 10}, **base), problem, 300, 0)
    assert smc.calls == 11 * 10 + 9 * 3 and plain.calls == 20
    assert score(plain.fills, problem.conditional)["excluded"] > 0.2
    assert score(smc.fills, problem.conditional)["excluded"] < 0.03


def test_particles_move_the_component_shares_toward_the_exact_weights():
    """Weak evidence (exact weights 0.91 / 0.09): one particle (no reweighting) over-fills the minor component; ten
    particles' weights remove most of that error (SMC is exact only as K grows: some bias remains at K = 10)."""
    problem = disharmony_problem(evidence=0.1)
    tv = {}
    for k in (1, 10):
        settings = SamplerSettings(steps=20, jump_length=1, jump_n_sample=1, sampler="smc", clip_denoised=False,
                                   options={"particles": k})
        tv[k] = score(run_sampler(settings, problem, 300, 0).fills, problem.conditional)["component_tv"]
    assert tv[1] > 0.25
    assert tv[10] < 0.6 * tv[1]


def test_systematic_resampling_keeps_proportions_and_changes_the_count():
    """Equal weights 4 -> 8 particles: every particle exactly twice (systematic, one uniform per image); a dominant
    weight takes every slot; an image whose ESS is high keeps its particles and weights when the count stays."""
    gens = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)]
    logw = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 50.0, 0.0, 0.0]], dtype=torch.float64)
    index, new = _resample(logw.clone(), gens, threshold=0.5, count=8)
    assert sorted(index[0].tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert index[1].tolist() == [1] * 8 and torch.equal(new, torch.zeros(2, 8, dtype=torch.float64))
    index, new = _resample(logw.clone(), gens, threshold=0.5, count=4)
    assert index[0].tolist() == [0, 1, 2, 3] and torch.equal(new[0], logw[0])   # ESS 4 >= 2: untouched
    assert index[1].tolist() == [1] * 4 and torch.equal(new[1], torch.zeros(4, dtype=torch.float64))


@pytest.mark.parametrize("v", [-1.0, 0.3, 1.0])
def test_learned_variance_option_uses_the_networks_own_value(v):
    """``variance=-2`` (the setting chosen for the face model, issue 28) takes each kernel's variance from the
    network's learned-range output: over a denoiser that reports a constant v it reproduces the fixed option ``v``
    (to float32 rounding: the learned path interpolates the log-variance per pixel in float32), and differs from
    another fixed value."""
    diffusion = Diffusion(DiffusionConfig(timestep_respacing="10"))
    exact = MIX.denoiser(diffusion)

    def reports_v(x, t):
        out = exact(x, t)
        return torch.cat([out[:, :1], torch.full_like(out[:, 1:], v)], dim=1)

    learned = _run([0, 1], _settings(particles=4, variance=-2.0), model=reports_v)[0]
    fixed = _run([0, 1], _settings(particles=4, variance=v), model=reports_v)[0]
    other = _run([0, 1], _settings(particles=4, variance=0.0), model=reports_v)[0]
    assert torch.allclose(learned, fixed, rtol=0, atol=1e-5)
    assert (learned - other).abs().max() > 1e-2


def test_replace_keeps_known_pixels_exact_and_seeded():
    assert_known_exact_and_seeded_per_image(lambda seeds: _run(seeds, _settings(particles=4, replace=1)))


def test_replace_draws_the_known_pixels_the_network_sees_from_q_xt_given_y():
    """With ``replace=1`` the known pixels of every x_t the network sees are sqrt(abar_t) y + sqrt(1 - abar_t) z
    (standardised residual: mean 0, variance 1); the default product pulls them toward the model's own mean, so
    their spread is visibly below 1 (the drift diagnosed on faces, docs/fidelity.md issue 28)."""
    diffusion = Diffusion(DiffusionConfig(timestep_respacing="10"))
    exact, abar = MIX.denoiser(diffusion), diffusion.tables64["alphas_cumprod"]

    def spread(replace):
        residuals = []

        def model(x, t):
            residuals.append(x)
            return exact(x, t)

        out, gt, mask = _run([0, 1, 2], _settings(particles=10, outside=10, replace=replace), model=model)
        z = []
        for i, x in enumerate(residuals[1:-1], start=1):   # x_t for t = 8..1 (x_9 is the initial draw)
            t = 9 - i
            y = gt.repeat_interleave(10, 0)
            z.append(((x - abar[t] ** 0.5 * y) / (1 - abar[t]) ** 0.5)[mask.repeat_interleave(10, 0).expand_as(x) > 0])
        z = torch.cat(z)
        return float(z.mean()), float(z.var())

    mean, var = spread(1)
    assert abs(mean) < 0.1 and abs(var - 1) < 0.15
    assert spread(0)[1] < 0.8


def test_replace_harmonises_the_mixture_problem():
    """The replace proposal is exact as K grows: on issue 5's problem (see the test above) its fills avoid the
    excluded component as the default proposal's do."""
    problem = disharmony_problem()
    settings = SamplerSettings(steps=20, jump_length=1, jump_n_sample=1, clip_denoised=False, sampler="smc",
                               options={"particles": 10, "replace": 1})
    assert score(run_sampler(settings, problem, 300, 0).fills, problem.conditional)["excluded"] < 0.05

"""The twisted SMC sampler: options, call counts, reproducibility and a statistical check against exact answers."""

import pytest
from sampler_helpers import MIX, assert_known_exact_and_seeded_per_image, run_on_mixture

from repaint.diffusion import Diffusion, DiffusionConfig
from repaint.gmm import disharmony_problem
from repaint.groundtruth import run_sampler, score
from repaint.settings import SamplerSettings
from repaint.smc import network_calls


def _settings(**options):
    return SamplerSettings(steps=10, jump_length=1, jump_n_sample=1, sampler="smc", options=options)


def _run(seeds, settings=None, callback=None, model=None):
    return run_on_mixture(settings or _settings(particles=4), seeds, callback, model)


def test_known_region_is_exact_and_seeds_reproduce_per_image():
    assert_known_exact_and_seeded_per_image(_run)


def test_network_evaluations_are_particles_times_steps():
    evaluations = []
    diffusion = Diffusion(DiffusionConfig(timestep_respacing="10"))
    denoiser = MIX.denoiser(diffusion)

    def model(x, t):
        evaluations.append(len(x))
        return denoiser(x, t)

    steps = []
    _run([0, 1], _settings(particles=6), callback=steps.append, model=model)
    assert evaluations == [2 * 6] * 10
    assert network_calls(_settings(particles=6), 10) == 60
    assert [s.calls for s in steps] == [6 * (i + 1) for i in range(10)]


@pytest.mark.parametrize("options, message", [
    ({"particle": 3}, r"no option\(s\) particle"),
    ({"particles": 0}, "particles must be a whole number"),
    ({"particles": 2.5}, "particles must be a whole number"),
    ({"ess": 1.5}, "ess must lie in"),
    ({"lookahead": -1}, "lookahead must be >= 0"),
    ({"particles": "ten"}, "must be a number"),
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
    assert smc.calls == 200 and plain.calls == 20
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

"""The LanPaint-style sampler: options, call counts, reproducibility, and harmonisation against an exact answer."""

import pytest
from sampler_helpers import MIX, assert_known_exact_and_seeded_per_image, run_on_mixture

from repaint.diffusion import Diffusion, DiffusionConfig
from repaint.evaluation.gmm import disharmony_problem
from repaint.evaluation.groundtruth import run_sampler, score
from repaint.samplers.lanpaint import network_calls
from repaint.settings import SamplerSettings


def _settings(**options):
    return SamplerSettings(steps=10, sampler="lanpaint", options=options)


def _run(seeds, settings=None, callback=None, model=None):
    return run_on_mixture(settings or _settings(langevin_steps=2), seeds, callback, model)


def test_known_region_is_exact_and_seeds_reproduce_per_image():
    assert_known_exact_and_seeded_per_image(_run)


def test_network_calls_are_counted_honestly():
    calls, steps = [], []
    diffusion = Diffusion(DiffusionConfig(timestep_respacing="10"))
    denoiser = MIX.denoiser(diffusion)

    def model(x, t):
        calls.append(len(x))
        return denoiser(x, t)

    _run([0, 1], _settings(langevin_steps=3), callback=steps.append, model=model)
    assert len(calls) == 10 * 4 == network_calls(_settings(langevin_steps=3), 10)
    assert [s.calls for s in steps] == [4 * (i + 1) for i in range(10)]


@pytest.mark.parametrize("options, message", [
    ({"steps": 3}, r"no option\(s\) steps"),
    ({"langevin_steps": -1}, "langevin_steps must be a whole number"),
    ({"step_size": 0}, "step_size must be > 0"),
    ({"lamb": -0.5}, "lamb must be >= 0"),
])
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(ValueError, match=message) as info:
        _run([0], _settings(**options))
    assert "\n" not in str(info.value)


def test_langevin_steps_harmonise_where_plain_ancestral_sampling_does_not():
    """Issue 5's problem at 50 levels: zero Langevin steps (RePaint without resampling) leaves about a third of the
    fills in the excluded component; four Langevin steps per level remove most of them."""
    problem = disharmony_problem()
    shares = {}
    for n_inner in (0, 4):
        settings = SamplerSettings(steps=50, sampler="lanpaint", clip_denoised=False,
                                   options={"langevin_steps": n_inner})
        shares[n_inner] = score(run_sampler(settings, problem, 300, 0).fills, problem.conditional)["excluded"]
    assert shares[0] > 0.2
    assert shares[4] < 0.25 * shares[0]

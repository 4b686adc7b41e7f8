"""The CoPaint-style sampler: options, call counts, gradients under no_grad, and harmonisation on an exact answer."""

import pytest
from sampler_helpers import MIX, assert_known_exact_and_seeded_per_image, run_on_mixture

from repaint.samplers.copaint import network_calls
from repaint.diffusion import Diffusion, DiffusionConfig
from repaint.evaluation.gmm import disharmony_problem
from repaint.evaluation.groundtruth import run_sampler, score
from repaint.settings import SamplerSettings


def _settings(**options):
    return SamplerSettings(steps=10, sampler="copaint", options=options)


def _run(seeds, settings=None, callback=None, model=None):
    return run_on_mixture(settings or _settings(), seeds, callback, model)


def test_known_region_is_exact_and_seeds_reproduce_per_image():
    assert_known_exact_and_seeded_per_image(_run)


def test_forward_calls_are_counted_and_gradients_flow_under_no_grad():
    calls, grads = [], []
    diffusion = Diffusion(DiffusionConfig(timestep_respacing="10"))
    denoiser = MIX.denoiser(diffusion)

    def model(x, t):
        calls.append(len(x))
        grads.append(x.requires_grad)
        return denoiser(x, t)

    steps = []
    _run([0, 1], _settings(grad_steps=3), callback=steps.append, model=model)
    assert len(calls) == network_calls(_settings(grad_steps=3), 10) == 40
    assert sum(grads) == 30                                   # 3 differentiated calls per level
    assert [s.calls for s in steps] == [4 * (i + 1) for i in range(10)]


@pytest.mark.parametrize("options, message", [
    ({"grad": 3}, r"no option\(s\) grad"),
    ({"grad_steps": 1.5}, "grad_steps must be a whole number"),
    ({"lr": 0}, "lr must be > 0"),
    ({"coef": -1}, "coef must be > 0"),
])
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(ValueError, match=message) as info:
        _run([0], _settings(**options))
    assert "\n" not in str(info.value)


def test_gradient_steps_harmonise():
    """Without gradient steps nothing ties the fill to the known pixels (about half the fills in the excluded
    component of issue 5's problem); two steps per level bring it near zero."""
    problem = disharmony_problem()
    shares = {}
    for g in (0, 2):
        settings = SamplerSettings(steps=50, sampler="copaint", clip_denoised=False, options={"grad_steps": g})
        shares[g] = score(run_sampler(settings, problem, 200, 0).fills, problem.conditional)["excluded"]
    assert shares[0] > 0.3
    assert shares[2] < 0.1

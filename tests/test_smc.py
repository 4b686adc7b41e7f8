"""The twisted SMC sampler: options, call counts, reproducibility and a statistical check against exact answers."""

import pytest
import torch

from repaint.diffusion import Diffusion, DiffusionConfig
from repaint.gmm import disharmony_problem, image_mixture
from repaint.groundtruth import run_sampler, score
from repaint.samplers import get_sampler
from repaint.settings import SamplerSettings
from repaint.sampler import make_generators
from repaint.smc import network_calls

MIX = image_mixture(4)


def _settings(**options):
    return SamplerSettings(steps=10, jump_length=1, jump_n_sample=1, sampler="smc", options=options)


def _run(seeds, settings=None, callback=None, model=None):
    settings = settings or _settings(particles=4)
    diffusion = Diffusion(DiffusionConfig(timestep_respacing=settings.respacing()))
    gt = MIX.sample(3, torch.Generator().manual_seed(0))[3 - len(seeds):]
    mask = torch.zeros(len(seeds), 1, 4, 4)
    mask[:, :, :, :2] = 1
    model = model or MIX.denoiser(diffusion)
    out = get_sampler("smc")(model, diffusion, gt, mask, settings=settings, generators=make_generators(seeds),
                             callback=callback)
    return out, gt, mask


def test_known_region_is_exact_and_seeds_reproduce_per_image():
    out, gt, mask = _run([1, 2, 3])
    assert torch.equal(out * mask, gt * mask)
    assert torch.equal(out, _run([1, 2, 3])[0])
    alone, _, _ = _run([3])                      # an image does not depend on the batch it runs in
    torch.testing.assert_close(alone[0], out[2], rtol=1e-5, atol=1e-5)
    assert not torch.equal(_run([4, 2, 3])[0][0], out[0])


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

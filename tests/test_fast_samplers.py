"""DDIM-RePaint and DDNM: registration, known-region exactness, reproducibility and the DDIM step maths."""

import pytest
import torch

from repaint.diffusion import Diffusion, DiffusionConfig
from repaint.samplers.time_travel import _ddim_step, grouped_moves, time_travel_iter
from repaint.evaluation.gmm import image_mixture
from repaint.samplers import get_sampler
from repaint.samplers.common import make_generators
from repaint.schedule import jump_schedule
from repaint.settings import FAST, SamplerSettings

MIX = image_mixture(4)


def _case(batch=3, respacing="20"):
    diffusion = Diffusion(DiffusionConfig(timestep_respacing=respacing))
    gt = MIX.sample(3, torch.Generator().manual_seed(0))[3 - batch :]
    mask = torch.zeros(batch, 1, 4, 4)
    mask[:, :, :, :2] = 1
    return diffusion, gt, mask


def _run(name, seeds, batch=3, paste_known=True, eta=1.0, callback=None):
    diffusion, gt, mask = _case(batch)
    settings = SamplerSettings(steps=20, jump_length=4, jump_n_sample=3, sampler=name, eta=eta,
                               paste_known=paste_known)
    return get_sampler(name)(MIX.denoiser(diffusion), diffusion, gt, mask, settings=settings,
                             generators=make_generators(seeds), callback=callback), gt, mask


def test_grouped_moves_merge_runs_of_upward_steps():
    assert grouped_moves([3, 2, 1, 2, 3, 2, 1, 0, -1]) == [(3, 2), (2, 1), (1, 3), (3, 2), (2, 1), (1, 0), (0, -1)]
    assert grouped_moves([1, 0, -1, 0, 1, 0, -1]) == [(1, 0), (0, -1), (-1, 1), (1, 0), (0, -1)]


@pytest.mark.parametrize("name", ["ddim_repaint", "ddnm"])
def test_known_region_is_exact_and_seeds_reproduce(name):
    out, gt, mask = _run(name, [1, 2, 3])
    assert torch.equal(out * mask, gt * mask)
    again, _, _ = _run(name, [1, 2, 3])
    assert torch.equal(out, again)
    alone, _, _ = _run(name, [3], batch=1)     # an image does not depend on its batch
    torch.testing.assert_close(alone[0], out[2], rtol=1e-5, atol=1e-5)
    other, _, _ = _run(name, [4, 2, 3])
    assert not torch.equal(other[0], out[0])


def test_ddnm_keeps_the_known_region_without_pasting():
    out, gt, mask = _run("ddnm", [0, 1, 2], paste_known=False)
    torch.testing.assert_close(out * mask, gt * mask)


@pytest.mark.parametrize("name", ["ddim_repaint", "ddnm"])
def test_callback_counts_network_calls_honestly(name):
    steps, calls = [], []
    diffusion, gt, mask = _case()
    denoiser = MIX.denoiser(diffusion)

    def model(x, t):
        calls.append(1)
        return denoiser(x, t)

    settings = SamplerSettings(steps=20, jump_length=4, jump_n_sample=3, sampler=name)
    get_sampler(name)(model, diffusion, gt, mask, settings=settings, generators=make_generators([0, 1, 2]),
                      callback=steps.append)
    expected = settings.jump_schedule(20).network_calls()
    assert steps[-1].calls == len(calls) == expected == sum(s.kind == "reverse" for s in steps)
    assert steps[-1].index == steps[-1].total - 1 and steps[-1].t_cur == -1


def test_ddim_eta_one_is_the_ddpm_posterior():
    diffusion, gt, _ = _case()
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    model = MIX.denoiser(diffusion)
    abar = torch.from_numpy(diffusion.tables64["alphas_cumprod"])
    t = 7
    got, x0 = _ddim_step(model, diffusion, x, t, abar, gt, torch.zeros(3, 1, 4, 4), make_generators([9, 9, 9]),
                         "ddnm", 1.0, None, False)
    z = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(9))
    tt = torch.full((3,), t)
    out = diffusion.p_mean_variance(model(x, diffusion.model_timesteps(tt)), x, tt, clip_denoised=False)
    torch.testing.assert_close(x0, out["pred_xstart"], rtol=1e-5, atol=1e-5)
    expected = out["mean"] + out["variance"].sqrt() * z
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_eta_zero_without_resampling_is_deterministic_given_x_T():
    diffusion, gt, mask = _case(batch=2)
    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    times = jump_schedule(20, 1, 1)
    runs = [list(time_travel_iter(MIX.denoiser(diffusion), diffusion, times, gt, mask * 0, generators=gens,
                                  join="ddnm", eta=0.0, x_T=x_T))[-1].x
            for gens in (make_generators([0, 1]), make_generators([5, 6]))]
    assert torch.equal(runs[0], runs[1])


def test_bad_settings_are_one_line_errors():
    diffusion, gt, mask = _case()
    with pytest.raises(ValueError, match="no option"):
        get_sampler("ddnm")(MIX.denoiser(diffusion), diffusion, gt, mask,
                            settings=SamplerSettings(steps=20, sampler="ddnm", jump_length=4, options={"lr": 1}),
                            generators=make_generators([0, 1, 2]))
    with pytest.raises(ValueError, match="join"):
        next(time_travel_iter(None, diffusion, [0, -1], gt, mask, generators=make_generators([0, 1, 2]), join="x"))


def test_fast_preset_fits_the_call_budget():
    assert FAST.sampler in ("ddim_repaint", "ddnm", "repaint")
    assert FAST.jump_schedule(FAST.steps).network_calls() <= 241

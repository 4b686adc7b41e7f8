import numpy as np
import pytest
import torch

from repaint.diffusion import Diffusion, DiffusionConfig, space_timesteps

STEP_FIELDS = ["mean", "variance", "log_variance", "pred_xstart"]


def _close(actual, expected, atol=1e-6):
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=atol)


def test_respacing_tables_match_reference(respacing_fixture):
    for case in respacing_fixture["cases"]:
        config = DiffusionConfig(
            steps=case["base_steps"], noise_schedule=case["noise_schedule"],
            timestep_respacing=case["timestep_respacing"]
        )
        diffusion = Diffusion(config)
        assert diffusion.timestep_map.tolist() == case["timestep_map"], case["id"]
        assert space_timesteps(case["base_steps"], case["timestep_respacing"]) == case["use_timesteps"]
        np.testing.assert_allclose(diffusion.tables64["betas"], case["betas"], rtol=1e-12, atol=0)
        np.testing.assert_allclose(diffusion.tables64["alphas_cumprod"], case["alphas_cumprod"], rtol=1e-12, atol=0)


def test_ties_round_to_even_in_respacing():
    # 1000 steps into 25: stride 999/24 = 41.625, so some positions end in .5 and must round to the even neighbour
    kept = space_timesteps(1000, "25")
    half_up = sorted({int(np.floor(i * 999 / 24 + 0.5)) for i in range(25)})
    assert kept != half_up


def test_section_counts_split_the_process():
    kept = space_timesteps(300, "10,5,1")
    assert len(kept) == 16
    assert sum(k < 100 for k in kept) == 10 and sum(100 <= k < 200 for k in kept) == 5 and kept[-1] == 200


@pytest.mark.parametrize("respacing, word",
                         [("abc", "bad timestep respacing"), ("2000", "cannot keep"), ("ddim999", "stride")])
def test_bad_respacing_is_refused(respacing, word):
    with pytest.raises(ValueError, match=word):
        space_timesteps(1000, respacing)


def test_float64_tables_match_reference(steps_fixture):
    diffusion = Diffusion(DiffusionConfig(timestep_respacing="250"))
    for name, expected in steps_fixture["arrays"].items():
        if name == "timestep_map":
            assert torch.equal(diffusion.timestep_map, expected)
        else:
            np.testing.assert_allclose(diffusion.tables64[name], expected.numpy(), rtol=1e-12, atol=0, err_msg=name)
    wrapper = steps_fixture["wrapper_timesteps"]
    assert torch.equal(diffusion.model_timesteps(wrapper["t"]), wrapper["model_t"])


def test_p_mean_variance_learned_range(steps_fixture):
    diffusion = Diffusion(DiffusionConfig(timestep_respacing="250"))
    for case in steps_fixture["p_mean_variance"]:
        out = diffusion.p_mean_variance(case["model_output"], case["x_t"], case["t"], case["clip_denoised"])
        for field in STEP_FIELDS:
            _close(out[field], case[field])
        assert torch.equal(diffusion.model_timesteps(case["t"]), case["model_t_received"])


def test_p_mean_variance_fixed_large(steps_fixture):
    data = steps_fixture["fixed_large_upstream"]
    diffusion = Diffusion(DiffusionConfig(timestep_respacing="250", learn_sigma=False))
    np.testing.assert_allclose(diffusion.tables64["fixed_large_variance"], data["fixed_large_variance_table"],
                               rtol=1e-12)
    for case in data["cases"]:
        out = diffusion.p_mean_variance(case["model_output"], case["x_t"], case["t"], case["clip_denoised"])
        for field in STEP_FIELDS:
            _close(out[field], case[field])


def test_q_sample_and_undo(steps_fixture):
    diffusion = Diffusion(DiffusionConfig(timestep_respacing="250"))
    for case in steps_fixture["q_sample"]:
        _close(diffusion.q_sample(case["x_start"], case["t"], case["noise"]), case["result"])
    for case in steps_fixture["undo"]:
        assert torch.equal(case["t_arg"], case["t_last"] + 1)
        _close(diffusion.undo(case["x_before"], case["t_arg"], case["noise"]), case["result"])


def test_wrong_output_channels_are_refused():
    diffusion = Diffusion(DiffusionConfig(timestep_respacing="10"))
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="learned-sigma"):
        diffusion.p_mean_variance(torch.zeros(1, 3, 4, 4), x, torch.tensor([3]))


def test_cosine_schedule_is_bounded_and_monotone():
    diffusion = Diffusion(DiffusionConfig(noise_schedule="cosine"))
    betas = diffusion.tables64["betas"]
    assert betas.max() <= 0.999 and np.all(np.diff(diffusion.tables64["alphas_cumprod"]) < 0)


def test_unknown_config_keys_are_an_error():
    with pytest.raises(ValueError, match="unknown diffusion setting"):
        DiffusionConfig.from_dict({"steps": 1000, "rescale_timesteps": True})


def test_explicit_linear_range_and_scaled_linear():
    linear = Diffusion(DiffusionConfig(steps=100, beta_start=0.001, beta_end=0.05)).tables64["betas"]
    # (the tables' betas are re-derived from alphā, so equal to ~1e-15, not bit for bit)
    assert abs(linear[0] - 0.001) < 1e-13 and abs(linear[-1] - 0.05) < 1e-13
    assert np.allclose(np.diff(linear, 2), 0, atol=1e-12)
    scaled = Diffusion(DiffusionConfig(steps=100, noise_schedule="scaled_linear", beta_start=0.00085,
                                       beta_end=0.012)).tables64["betas"]
    roots = np.sqrt(scaled)  # evenly spaced square roots (latent diffusion's schedule)
    assert abs(scaled[0] - 0.00085) < 1e-13 and abs(scaled[-1] - 0.012) < 1e-13
    assert np.allclose(np.diff(roots, 2), 0, atol=1e-11) and not np.allclose(np.diff(scaled, 2), 0, atol=1e-9)
    default = Diffusion(DiffusionConfig()).tables64["betas"]
    assert np.array_equal(default, Diffusion(DiffusionConfig(beta_start=1e-4, beta_end=0.02)).tables64["betas"])
    assert not np.array_equal(default, Diffusion(DiffusionConfig(beta_start=2e-4, beta_end=0.02)).tables64["betas"])


@pytest.mark.parametrize("changes", [dict(beta_start=0.02, beta_end=0.01), dict(beta_end=1.5),
                                     dict(fixed_variance="medium"), dict(noise_schedule="sigmoid")])
def test_invalid_schedule_settings_are_refused(changes):
    with pytest.raises(ValueError):
        DiffusionConfig(**changes)


def test_fixed_small_variance_is_the_posterior_variance():
    small = Diffusion(DiffusionConfig(timestep_respacing="50", learn_sigma=False, fixed_variance="small"))
    large = Diffusion(DiffusionConfig(timestep_respacing="50", learn_sigma=False))
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([1, 40])
    a, b = small.p_mean_variance(x * 0.5, x, t), large.p_mean_variance(x * 0.5, x, t)
    assert torch.equal(a["mean"], b["mean"])
    torch.testing.assert_close(a["variance"][:, 0, 0, 0], small.posterior_variance[t])
    torch.testing.assert_close(b["variance"][:, 0, 0, 0], large.betas[t])
    assert (a["variance"] < b["variance"]).all()  # beta~_t < beta_t for t > 0

"""The Gaussian-mixture ground truth: exact conditional and denoiser, and the disharmony it exposes in RePaint."""

import numpy as np
import pytest
import torch

from repaint.diffusion import Diffusion, DiffusionConfig, beta_schedule
from repaint.evaluation.gmm import (
    GaussianMixture, disharmony_problem, fidelity_metrics, image_mixture, sliced_wasserstein, validate
)
from repaint.settings import SamplerSettings


def _random_gaussian(d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return torch.randn(d, generator=g, dtype=torch.float64), a @ a.T + 0.5 * torch.eye(d, dtype=torch.float64)


def test_single_gaussian_conditional_is_the_textbook_formula():
    mu, cov = _random_gaussian()
    mix = GaussianMixture([1.0], mu[None], cov[None], (1, 2, 2))
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    image = torch.tensor([[0.3, 9.0], [9.0, -0.7]])  # unknown entries are ignored
    cond = mix.conditional(mask, image)
    k, u = torch.tensor([0, 3]), torch.tensor([1, 2])
    y = torch.tensor([0.3, -0.7], dtype=torch.float64)
    gain = cov[u][:, k] @ torch.linalg.inv(cov[k][:, k])
    torch.testing.assert_close(cond.means[0], mu[u] + gain @ (y - mu[k]))
    torch.testing.assert_close(cond.covs[0], cov[u][:, u] - gain @ cov[k][:, u])
    torch.testing.assert_close(cond.weights, torch.ones(1, dtype=torch.float64))


def test_mixture_conditional_weights_follow_the_marginal_likelihood():
    mix = image_mixture(4, kinds=("gradient", "stripes"))
    mask = torch.zeros(4, 4)
    mask[1, 0] = mask[2, 3] = 1
    image = mix.means[1].view(1, 4, 4).float() * 0.3
    cond = mix.conditional(mask, image)
    assert cond.weights.sum().item() == pytest.approx(1.0)
    known = mask.reshape(-1) > 0
    y = image.reshape(-1)[known].double()
    lik = torch.stack([
        torch.distributions.MultivariateNormal(m[known], c[known][:, known]).log_prob(y).exp()
        for m, c in zip(mix.means, mix.covs)
    ]) * mix.weights
    torch.testing.assert_close(cond.weights, lik / lik.sum())


def test_posterior_mean_matches_direct_inversion():
    mix = image_mixture(4, weights=[0.3, 0.7])
    x_t = mix.sample(5, torch.Generator().manual_seed(1)).reshape(5, -1).double() * 0.6
    ab = torch.tensor([0.9, 0.5, 0.1, 0.01, 0.36], dtype=torch.float64)
    got = mix.posterior_mean(x_t, ab)
    eye = torch.eye(mix.dim, dtype=torch.float64)
    for i in range(5):
        a, s2 = ab[i].sqrt(), 1 - ab[i]
        covs = [a * a * c + s2 * eye for c in mix.covs]
        logp = torch.stack([
            torch.distributions.MultivariateNormal(a * m, c).log_prob(x_t[i]) for m, c in zip(mix.means, covs)
        ]) + mix.weights.log()
        resp = torch.softmax(logp, 0)
        means = [m + a * c @ torch.linalg.solve(cc, x_t[i] - a * m) for m, c, cc in zip(mix.means, mix.covs, covs)]
        torch.testing.assert_close(got[i], sum(r * m for r, m in zip(resp, means)))


@pytest.mark.parametrize("learn_sigma", [True, False])
def test_denoiser_uses_original_process_timesteps(learn_sigma):
    mix = image_mixture(4)
    diffusion = Diffusion(DiffusionConfig(timestep_respacing="ddim10", learn_sigma=learn_sigma))
    model = mix.denoiser(diffusion)
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    model_t = diffusion.model_timesteps(torch.tensor([0, 4, 9]))
    out = model(x, model_t)
    assert out.shape == (3, 2 if learn_sigma else 1, 4, 4)
    ab = torch.from_numpy(np.cumprod(1 - beta_schedule("linear", 1000)))[model_t]
    x0 = mix.posterior_mean(x.reshape(3, -1).double(), ab)
    expected = (x.reshape(3, -1).double() - ab.sqrt()[:, None] * x0) / (1 - ab).sqrt()[:, None]
    torch.testing.assert_close(out[:, :1].reshape(3, -1).double(), expected, rtol=1e-5, atol=1e-5)
    if learn_sigma:  # v = -1: the posterior variance beta~_t
        var = diffusion.p_mean_variance(out, x, torch.tensor([1, 4, 9]), clip_denoised=False)["variance"]
        torch.testing.assert_close(var[:, 0, 0, 0], diffusion.posterior_variance[[1, 4, 9]])


def test_samples_have_the_mixture_statistics():
    mix = image_mixture(4, weights=[0.25, 0.75])
    images, labels = mix.sample(4000, torch.Generator().manual_seed(0), return_labels=True)
    assert labels.float().mean().item() == pytest.approx(0.75, abs=0.03)
    torch.testing.assert_close(images.reshape(4000, -1).double().mean(0), mix.weights @ mix.means, atol=0.03, rtol=0)
    assert (mix.responsibilities(images).argmax(1) == labels).float().mean() > 0.99


def test_sliced_wasserstein_is_zero_for_equal_sets_and_grows_with_shift():
    a = torch.randn(500, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert sliced_wasserstein(a, a) == 0
    assert sliced_wasserstein(a, a + 1.0) > 5 * sliced_wasserstein(a, a + 0.1) > 0


def test_exact_samples_score_near_zero():
    problem = disharmony_problem()
    assert problem.conditional.weights[0] > 0.999
    exact = problem.conditional.sample(1000, torch.Generator().manual_seed(3))
    torch.testing.assert_close(exact * problem.mask, problem.known_image.expand(1000, -1, -1, -1) * problem.mask)
    metrics = fidelity_metrics(exact, problem.conditional)
    assert metrics["component_tv"] < 0.01 and metrics["mean_error"] < 0.02 and metrics["sliced_w2"] < 0.03


@pytest.mark.parametrize("sampler", ["repaint", "ddnm"])
def test_sampler_with_exact_denoiser_and_no_mask_reproduces_the_mixture(sampler):
    problem = disharmony_problem()
    problem.mask.zero_()
    problem.conditional = problem.mixture.conditional(problem.mask, problem.known_image)
    settings = SamplerSettings(steps=50, jump_length=1, jump_n_sample=1, sampler=sampler, clip_denoised=False)
    metrics = validate(settings, n=600, problem=problem)
    assert metrics["calls"] == 50
    assert metrics["component_tv"] < 0.06          # shares 0.5 / 0.5 within ~3 standard errors
    assert metrics["mean_error"] < 0.05 and metrics["sliced_w2"] < 0.06


def test_resampling_harmonises_and_slowing_down_does_not():
    """Issue 5: without resampling a third of the fills belong to the component the known pixels rule out."""
    no_resampling = validate(SamplerSettings(steps=25, jump_length=1, jump_n_sample=1, clip_denoised=False), n=300)
    slower = validate(SamplerSettings(steps=250, jump_length=1, jump_n_sample=1, clip_denoised=False), n=300)
    resampling = validate(SamplerSettings(steps=25, jump_length=5, jump_n_sample=10, clip_denoised=False), n=300)
    assert no_resampling["component_tv"] > 0.25 and slower["component_tv"] > 0.25
    assert resampling["component_tv"] < 0.12
    assert resampling["component_tv"] < 0.5 * min(no_resampling["component_tv"], slower["component_tv"])


def test_validate_counts_network_evaluations_per_image_for_particle_samplers():
    """A particle sampler evaluates the network on K particles per image: validate reports K * T, not T."""
    settings = SamplerSettings(steps=10, jump_length=1, jump_n_sample=1, sampler="smc", clip_denoised=False,
                               options={"particles": 3})
    assert validate(settings, n=20)["calls"] == 30

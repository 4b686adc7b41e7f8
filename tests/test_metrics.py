import copy
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from repaint.evaluation.metrics import (
    ALEXNET_FILE, INCEPTION_FILE, InceptionFeatures, LPIPSMetric, MetricWeightsMissing, build_lpips, feature_stats,
    fid, fid_from_features, frechet_distance, lpips_distance, mean_ci95, psnr, ssim
)


def images(n=3, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(n, 3, size // 8, size // 8, generator=g), size=size,
                                             mode="bilinear", align_corners=False)
    return smooth * 2 - 1


def noisy(x, sigma, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(-1, 1)


# ------------------------------------------------------------------------------------------------------ LPIPS

def test_lpips_zero_symmetric_and_grows_with_noise():
    a = images()
    assert torch.equal(lpips_distance(a, a, random_backbone=True), torch.zeros(3))
    b = noisy(a, 0.2)
    assert torch.allclose(lpips_distance(a, b, random_backbone=True), lpips_distance(b, a, random_backbone=True))
    d = [lpips_distance(a, noisy(a, s), random_backbone=True) for s in (0.05, 0.2, 0.5)]
    assert (d[0] > 0).all() and (d[0] < d[1]).all() and (d[1] < d[2]).all()


def test_lpips_metric_is_cached_and_batched():
    m1, m2 = LPIPSMetric(random_backbone=True, batch_size=2), LPIPSMetric(random_backbone=True)
    assert m1.model is m2.model
    a, b = images(5), noisy(images(5), 0.3)
    assert torch.allclose(m1(a, b), m2(a, b), atol=1e-6)
    assert not torch.equal(LPIPSMetric(random_backbone=True, seed=1)(a, b), m2(a, b))


def test_lpips_matches_reference_package(monkeypatch):
    """The `lpips` package's own forward pass, given our (random) AlexNet through a stand-in torchvision (the real
    one cannot load next to a CPU torch), must give our numbers: pins scaling, normalisation and linear layers."""
    ours = build_lpips(random_backbone=True, seed=3)
    models = types.ModuleType("torchvision.models")

    def alexnet(pretrained=False, **kwargs):
        net = nn.Module()
        net.features = copy.deepcopy(ours.net.features)
        return net

    models.alexnet = alexnet
    tv = types.ModuleType("torchvision")
    tv.models = models
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    for name in [n for n in sys.modules if n == "lpips" or n.startswith("lpips.")]:
        monkeypatch.delitem(sys.modules, name)
    lpips = pytest.importorskip("lpips")
    ref = lpips.LPIPS(pretrained=True, net="alex", pnet_rand=True, verbose=False).eval()
    a, b = images(2), noisy(images(2), 0.3)
    with torch.no_grad():
        expected = ref(a, b).flatten()
        assert torch.allclose(ours(a, b), expected, rtol=1e-5, atol=1e-7)


def test_lpips_missing_weights_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("REPAINT_ALEXNET", raising=False)
    with pytest.raises(MetricWeightsMissing, match=ALEXNET_FILE) as err:
        LPIPSMetric()
    assert "\n" not in str(err.value) and "REPAINT_ALEXNET" in str(err.value)
    monkeypatch.setenv("REPAINT_ALEXNET", str(tmp_path / "nowhere.pth"))
    with pytest.raises(MetricWeightsMissing, match="nowhere.pth"):
        lpips_distance(images(1), images(1))


def test_lpips_loads_local_backbone(tmp_path, monkeypatch):
    """A torchvision-layout AlexNet state dict (features.* and classifier.*) loads from $REPAINT_ALEXNET."""
    donor = build_lpips(random_backbone=True, seed=5)
    state = {f"features.{k.split('.', 1)[1]}": v for k, v in donor.net.state_dict().items()}
    state["classifier.1.weight"] = torch.zeros(4096, 9216)
    torch.save(state, tmp_path / ALEXNET_FILE)
    monkeypatch.setenv("REPAINT_ALEXNET", str(tmp_path / ALEXNET_FILE))
    a, b = images(2), noisy(images(2), 0.3)
    assert torch.allclose(lpips_distance(a, b), lpips_distance(a, b, random_backbone=True, seed=5))


# ------------------------------------------------------------------------------------------------ PSNR, SSIM

def test_psnr_hand_computed_and_identical():
    a = torch.zeros(1, 3, 4, 4)                    # 0.5 in [0, 1]
    b = a.clone()
    b[0, :, 0, 0] = 1.0                            # one pixel off by 0.5 in [0, 1]: MSE = 0.25 / 16
    assert psnr(a, b).item() == pytest.approx(10 * np.log10(16 / 0.25))
    assert psnr(a, a).item() == float("inf")


def test_psnr_mask_ignores_outside():
    a = images(2)
    b = a.clone()
    b[:, :, :, 32:] = -b[:, :, :, 32:]             # damage the right half only
    left = torch.zeros(64, 64)
    left[:, :32] = 1
    assert torch.isinf(psnr(a, b, mask=left)).all()
    right = 1 - left
    sq = ((a - b)[:, :, :, 32:] / 2) ** 2
    expected = 10 * torch.log10(1 / sq.double().mean(dim=(1, 2, 3)))
    assert torch.allclose(psnr(a, b, mask=right), expected)
    assert torch.allclose(psnr(a, b, mask=right[None, None].expand(2, 1, 64, 64)), expected)
    with pytest.raises(ValueError, match="empty"):
        psnr(a, b, mask=torch.zeros(64, 64))


def test_ssim_identical_one_and_decreasing():
    a = images()
    assert torch.allclose(ssim(a, a), torch.ones(3, dtype=torch.float64))
    s = [ssim(a, noisy(a, sigma)) for sigma in (0.05, 0.2, 0.5)]
    assert (s[0] < 1).all() and (s[0] > s[1]).all() and (s[1] > s[2]).all()


def test_ssim_mask():
    a = images(2)
    b = a.clone()
    b[:, :, :, 40:] = noisy(a, 0.5)[:, :, :, 40:]
    left = torch.zeros(64, 64)
    left[:, :28] = 1                                # more than the 5-px window radius away from the damage
    assert torch.allclose(ssim(a, b, mask=left), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(ssim(a, b, mask=torch.ones(64, 64)), ssim(a, b))
    assert (ssim(a, b, mask=1 - left) < ssim(a, b)).all()


def test_input_checks():
    with pytest.raises(ValueError, match="in \\[-1, 1\\]"):
        psnr(images(1) * 3, images(1))
    with pytest.raises(ValueError, match="one shape"):
        ssim(images(1), images(2))


# ------------------------------------------------------------------------------------------------------ FID

def test_frechet_distance_closed_form():
    """Two Gaussians with covariances I and 4I in 3-d: ||mu||^2 + 3 * (1 + 4 - 2 * 2)."""
    mu = np.array([1.0, 2.0, 0.0])
    assert frechet_distance(np.zeros(3), np.eye(3), mu, 4 * np.eye(3)) == pytest.approx(5 + 3)
    rng = np.random.default_rng(0)
    f1, f2 = rng.normal(size=(4000, 4)), rng.normal(size=(4000, 4)) + np.array([1.0, 0, 0, 0])
    assert fid_from_features(f1, f2) == pytest.approx(1.0, abs=0.1)
    assert fid_from_features(f1, f1) == pytest.approx(0.0, abs=1e-8)


def test_fid_few_samples_route_equals_covariance_route():
    rng = np.random.default_rng(1)
    f1, f2 = rng.normal(size=(12, 40)), 0.5 * rng.normal(size=(9, 40)) + 0.3
    full = frechet_distance(*feature_stats(f1), *feature_stats(f2))
    assert fid_from_features(f1, f2) == pytest.approx(full, rel=1e-6)
    assert fid_from_features(f1, f1) == pytest.approx(0.0, abs=1e-9)


def test_fid_random_inception():
    extractor = InceptionFeatures(random_backbone=True)
    a = images(4, 32)
    fa, f_shift, f_near = extractor(a), extractor((a + 0.6).clamp(-1, 1)), extractor(noisy(a, 0.02))
    assert fa.shape == (4, 2048)
    same, shifted, near = fid_from_features(fa, fa), fid_from_features(fa, f_shift), fid_from_features(fa, f_near)
    assert shifted > 0 and abs(same) < 1e-6 * shifted
    assert near < shifted
    assert fid(a[:2], a[:2], extractor=extractor) == pytest.approx(0.0, abs=1e-6 * shifted)


def test_fid_missing_weights_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("REPAINT_INCEPTION", raising=False)
    with pytest.raises(MetricWeightsMissing, match=INCEPTION_FILE):
        fid(images(2), images(2))


# ------------------------------------------------------------------------------------------------------ CI

def test_mean_ci95():
    mean, half = mean_ci95([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert half == pytest.approx(3.182446 * np.std([1, 2, 3, 4], ddof=1) / 2, rel=1e-5)   # t(0.975, 3)
    rng = np.random.default_rng(0)
    widths = [mean_ci95(rng.normal(size=n))[1] for n in (10, 100, 1000)]
    assert widths[0] > widths[1] > widths[2]
    with pytest.raises(ValueError):
        mean_ci95([1.0])

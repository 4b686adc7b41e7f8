"""Quality metrics of the RePaint paper: LPIPS (AlexNet), PSNR, SSIM, FID, and mean +- 95 % confidence interval.

Images are float tensors [N, 3, H, W] in [-1, 1] (the project's range); values are per image unless said otherwise.

Weights are never downloaded. Missing files raise `MetricWeightsMissing` with one line naming the file and where to
put it:
    LPIPS backbone  torchvision's AlexNet `alexnet-owt-7be5be79.pth`: `alexnet_weights=`, $REPAINT_ALEXNET, or
                    torch.hub.get_dir()/checkpoints/. The LPIPS v0.1 linear layers ship inside the `lpips` package.
    FID Inception   torch-fidelity's `weights-inception-2015-12-05-6726825d.pth` (TF FID Inception):
                    `inception_weights=`, $REPAINT_INCEPTION, or torch.hub.get_dir()/checkpoints/.

`lpips` and `torch_fidelity` are not imported as packages when they cannot be: both import torchvision, whose PyPI
wheels are CUDA builds that fail to load next to a CPU-only torch. We read lpips's weight file and re-implement its
forward pass (Zhang et al. 2018, eq. 1) on our own AlexNet module, and load torch-fidelity's Inception module file
without running the package's `__init__`.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import io
import math
import os
import sys
import types
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import scipy.stats
import torch
from torch import nn

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
ALEXNET_ENV = "REPAINT_ALEXNET"
INCEPTION_ENV = "REPAINT_INCEPTION"


class MetricWeightsMissing(FileNotFoundError):
    """A metric network's weight file is not on disk (it is never downloaded)."""


class MetricWeightsError(ValueError):
    """A metric network's weight file exists but cannot be used (damaged, or another network's weights)."""


def _hub_checkpoint(filename: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def find_weights(filename: str, path: str | os.PathLike | None, env: str) -> Path:
    """The weight file: `path` if given, else $`env` if set, else the torch hub cache; never a download."""
    chosen = path if path is not None else os.environ.get(env) or None
    candidate = Path(chosen) if chosen is not None else _hub_checkpoint(filename)
    if candidate.is_file():
        return candidate
    where = "there" if candidate == _hub_checkpoint(filename) else f"at {_hub_checkpoint(filename)}"
    raise MetricWeightsMissing(f"{filename} not found at {candidate}: put it {where} or point ${env} to it")


# ---------------------------------------------------------------------------------------------------------------
# Inputs.
# ---------------------------------------------------------------------------------------------------------------


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3:
        raise ValueError(f"expected two image batches [N, 3, H, W] of one shape, got {list(a.shape)}, {list(b.shape)}")
    for x in (a, b):
        if not torch.isfinite(x).all() or x.min() < -1.001 or x.max() > 1.001:
            raise ValueError("images must be finite and in [-1, 1]")


def _region(mask: torch.Tensor | None, n: int, h: int, w: int) -> torch.Tensor | None:
    """A region mask ([H, W], [N, H, W] or [N, 1, H, W], 1 = evaluate) as bool [N, H, W]."""
    if mask is None:
        return None
    m = torch.as_tensor(mask)
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    m = (m.expand(n, h, w) if m.ndim == 2 else m).detach().cpu()
    if m.shape != (n, h, w):
        raise ValueError(f"mask must be [H, W], [N, H, W] or [N, 1, H, W] for images {n} x {h} x {w}")
    if not bool(((m == 0) | (m == 1)).all()):
        raise ValueError("a region mask must hold only 0 and 1")
    m = m.bool()
    if not m.flatten(1).any(1).all():
        raise ValueError("a region mask is empty for some image")
    return m


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    return ((x.detach().cpu().double() + 1) / 2).clamp(0, 1)


# ---------------------------------------------------------------------------------------------------------------
# PSNR and SSIM.
# ---------------------------------------------------------------------------------------------------------------


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR in dB per image, [N] float64, on images mapped from [-1, 1] to [0, 1] (peak 1).

    With `mask` (1 = evaluate) the MSE is the mean over the region's pixels and all channels. Identical images give
    +inf (no cap).
    """
    _check_pair(a, b)
    sq = (_to_unit(a) - _to_unit(b)) ** 2
    region = _region(mask, a.shape[0], a.shape[2], a.shape[3])
    if region is None:
        mse = sq.mean(dim=(1, 2, 3))
    else:
        weight = region[:, None].double()
        mse = (sq * weight).sum(dim=(1, 2, 3)) / (weight.sum(dim=(1, 2, 3)) * a.shape[1])
    return 10 * torch.log10(1 / mse)


SSIM_SIGMA = 1.5      # Wang et al. 2004: 11 x 11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03
SSIM_PAD = 5          # scikit-image leaves out (win_size - 1) // 2 border pixels when averaging the map


def ssim(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """SSIM per image, [N] float64, on images mapped to [0, 1] (scikit-image, Gaussian window, sigma 1.5).

    Without `mask` it is scikit-image's mean SSIM (the map averaged over channels and the interior, a 5-pixel border
    left out). With `mask` (1 = evaluate) it is the mean of the same SSIM map over the region's interior pixels, so an
    all-ones mask gives the unmasked value.
    """
    from skimage.metrics import structural_similarity

    _check_pair(a, b)
    n, _, h, w = a.shape
    if min(h, w) < 2 * SSIM_PAD + 1:
        raise ValueError(f"SSIM needs images of at least {2 * SSIM_PAD + 1} x {2 * SSIM_PAD + 1}")
    region = _region(mask, n, h, w)
    ua, ub = _to_unit(a).numpy(), _to_unit(b).numpy()
    values = []
    for i in range(n):
        _, smap = structural_similarity(ua[i], ub[i], channel_axis=0, data_range=1.0, gaussian_weights=True,
                                        sigma=SSIM_SIGMA, use_sample_covariance=False, full=True)
        inner = np.zeros((h, w), bool)
        inner[SSIM_PAD:h - SSIM_PAD, SSIM_PAD:w - SSIM_PAD] = True
        if region is not None:
            inner &= region[i].numpy()
            if not inner.any():
                raise ValueError("the region mask lies entirely in the SSIM border")
        values.append(smap[:, inner].mean())
    return torch.tensor(values, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------------------------
# LPIPS (Zhang et al. 2018), AlexNet backbone, linear layers v0.1.
# ---------------------------------------------------------------------------------------------------------------


class AlexNetFeatures(nn.Module):
    """torchvision's AlexNet `features` (same indices, so its state dict loads), tapped after ReLU 1-5."""

    TAPS = (1, 4, 7, 9, 11)
    CHANNELS = (64, 192, 384, 256, 256)

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(),      # 0, 1: relu1
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(),               # 3, 4: relu2
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(),              # 6, 7: relu3
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),              # 8, 9: relu4
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(),              # 10, 11: relu5
            nn.MaxPool2d(kernel_size=3, stride=2),
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for i, layer in enumerate(self.features[:self.TAPS[-1] + 1]):
            x = layer(x)
            if i in self.TAPS:
                taps.append(x)
        return taps


def _lpips_linear_file() -> Path:
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("LPIPS needs the `lpips` package for its linear-layer weights: pip install lpips==0.1.4")
    return Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / "alex.pth"


class LPIPS(nn.Module):
    """d(x, x0) = sum_l mean_hw || w_l * (y_l - y0_l) ||^2 over unit-normalised AlexNet activations y_l (eq. 1)."""

    SHIFT = (-0.030, -0.088, -0.188)   # lpips's ScalingLayer: inputs in [-1, 1] to ImageNet statistics
    SCALE = (0.458, 0.448, 0.450)

    def __init__(self):
        super().__init__()
        self.net = AlexNetFeatures()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in AlexNetFeatures.CHANNELS)
        self.register_buffer("shift", torch.tensor(self.SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(self.SCALE).view(1, 3, 1, 1))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fa, fb = self.net((a - self.shift) / self.scale), self.net((b - self.shift) / self.scale)
        total = 0
        for lin, xa, xb in zip(self.lins, fa, fb):
            diff = (_unit_channels(xa) - _unit_channels(xb)) ** 2
            total = total + lin(diff).mean(dim=(2, 3))
        return total[:, 0]


def _unit_channels(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def build_lpips(alexnet_weights: str | os.PathLike | None = None, random_backbone: bool = False,
                seed: int = 0) -> LPIPS:
    """LPIPS-Alex v0.1 in eval mode; `random_backbone=True` keeps a seeded random AlexNet (for tests only)."""
    model = LPIPS()
    lin = torch.load(_lpips_linear_file(), map_location="cpu", weights_only=True)
    model.lins.load_state_dict({k.replace("lin", "", 1).replace(".model.1", ""): v for k, v in lin.items()})
    if random_backbone:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model.net = AlexNetFeatures()
    else:
        path = find_weights(ALEXNET_FILE, alexnet_weights, ALEXNET_ENV)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.net.load_state_dict({k: v for k, v in state.items() if k.startswith("features.")})
        except Exception as err:  # a damaged download, another network's file
            reason = " ".join(str(err).split()).split(". ")[0][:160] or type(err).__name__
            raise MetricWeightsError(f"cannot use {path} as the AlexNet weights of LPIPS ({ALEXNET_FILE} of "
                                     f"torchvision): {type(err).__name__}: {reason}") from None
    return model.eval().requires_grad_(False)


@functools.lru_cache(maxsize=4)
def _cached_lpips(weights: str | None, random_backbone: bool, seed: int) -> LPIPS:
    return build_lpips(weights, random_backbone, seed)


class LPIPSMetric:
    """LPIPS with its network built once per (weights, backbone) and shared between instances."""

    def __init__(self, alexnet_weights: str | os.PathLike | None = None, random_backbone: bool = False,
                 seed: int = 0, batch_size: int = 32):
        weights = None if random_backbone else str(find_weights(ALEXNET_FILE, alexnet_weights, ALEXNET_ENV))
        self.model = _cached_lpips(weights, random_backbone, seed)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-image distances [N] for images [N, 3, H, W] in [-1, 1]."""
        _check_pair(a, b)
        out = [self.model(a[i:i + self.batch_size].float().cpu(), b[i:i + self.batch_size].float().cpu())
               for i in range(0, a.shape[0], self.batch_size)]
        return torch.cat(out)


def lpips_distance(a: torch.Tensor, b: torch.Tensor, alexnet_weights: str | os.PathLike | None = None,
                   random_backbone: bool = False, seed: int = 0) -> torch.Tensor:
    """LPIPS-Alex per image, [N], for images [N, 3, H, W] in [-1, 1] (lower is closer)."""
    return LPIPSMetric(alexnet_weights, random_backbone, seed)(a, b)


# ---------------------------------------------------------------------------------------------------------------
# FID (Heusel et al. 2017) on torch-fidelity's TF-compatible Inception pool features.
# ---------------------------------------------------------------------------------------------------------------


def _inception_class() -> type:
    try:
        import torch_fidelity.feature_extractor_inceptionv3 as module
    except (ImportError, RuntimeError, OSError) as err:   # torchvision missing or a CUDA build next to CPU torch
        if importlib.util.find_spec("torch_fidelity") is None:
            raise ImportError("FID needs torch-fidelity: pip install --no-deps torch-fidelity==0.4.0") from err
        module = _load_without_package_init("torch_fidelity", "feature_extractor_inceptionv3")
    return module.FeatureExtractorInceptionV3


def _load_without_package_init(package: str, submodule: str) -> types.ModuleType:
    """Import package.submodule while skipping package/__init__.py (torch-fidelity's imports torchvision)."""
    spec = importlib.util.find_spec(package)
    stub = types.ModuleType(package)
    stub.__path__ = list(spec.submodule_search_locations)
    saved = sys.modules.get(package)
    sys.modules[package] = stub
    try:
        return importlib.import_module(f"{package}.{submodule}")
    finally:
        if saved is None:
            del sys.modules[package]
        else:
            sys.modules[package] = saved


class InceptionFeatures:
    """2048-d pool features of the TF FID Inception, for images [N, 3, H, W] in [-1, 1] (quantised to uint8 and
    resized to 299 inside, as torch-fidelity does)."""

    def __init__(self, inception_weights: str | os.PathLike | None = None, random_backbone: bool = False,
                 seed: int = 0, batch_size: int = 16):
        cls = _inception_class()
        if random_backbone:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.net = _random_init(cls)
        else:
            path = find_weights(INCEPTION_FILE, inception_weights, INCEPTION_ENV)
            self.net = cls("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [N, 3, H, W], got {list(images.shape)}")
        u8 = ((images.detach().cpu().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        out = [self.net(u8[i:i + self.batch_size])[0] for i in range(0, len(u8), self.batch_size)]
        return torch.cat(out).double().numpy()


def _random_init(cls: type) -> nn.Module:
    """The Inception with PyTorch's default random initialisation: its constructor always loads a state dict, so it
    is given an empty one and strict loading is switched off for that call only."""
    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    random_cls = type("RandomInception", (cls,), {"load_state_dict": lambda self, sd, strict=True: None})
    return random_cls("inception-v3-compat", ["2048"], feature_extractor_weights_path=empty)


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] (float64) of features [N, D]."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need features [N >= 2, D], got {list(f.shape)}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians (Heusel et al. 2017, Sec. 3).

    Tr (S1 S2)^(1/2) = Tr (S1^(1/2) S2 S1^(1/2))^(1/2) (similar matrices), computed with symmetric eigensolvers:
    exact for covariance matrices, singular ones included, with no complex parts to discard."""
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ sigma2 @ root1), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID between two feature sets [N1, D], [N2, D].

    With fewer samples than dimensions it uses centred features X_i: Tr S_i = ||X_i||_F^2 / (N_i - 1) and
    Tr (S1 S2)^(1/2) = ||X1 X2^T||_* / sqrt((N1 - 1)(N2 - 1)) (nuclear norm), equal to the D x D route but fast."""
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"need features [N1, D] and [N2, D], got {list(f1.shape)}, {list(f2.shape)}")
    if min(len(f1), len(f2)) >= f1.shape[1]:
        return frechet_distance(*feature_stats(f1), *feature_stats(f2))
    x1, x2 = f1 - f1.mean(axis=0), f2 - f2.mean(axis=0)
    n1, n2 = len(x1) - 1, len(x2) - 1
    if min(n1, n2) < 1:
        raise ValueError("need at least 2 samples per feature set")
    tr_covmean = np.linalg.svd(x1 @ x2.T, compute_uv=False).sum() / math.sqrt(n1 * n2)
    diff = f1.mean(axis=0) - f2.mean(axis=0)
    return float(diff @ diff + (x1 ** 2).sum() / n1 + (x2 ** 2).sum() / n2 - 2 * tr_covmean)


def fid(images_a: torch.Tensor, images_b: torch.Tensor, extractor: Callable[[torch.Tensor], np.ndarray] | None = None,
        inception_weights: str | os.PathLike | None = None) -> float:
    """FID between two image sets [N, 3, H, W] in [-1, 1]; `extractor` defaults to `InceptionFeatures`."""
    extractor = extractor or InceptionFeatures(inception_weights)
    return fid_from_features(extractor(images_a), extractor(images_b))


# ---------------------------------------------------------------------------------------------------------------
# Reports.
# ---------------------------------------------------------------------------------------------------------------


def mean_ci95(values: Sequence[float] | np.ndarray | torch.Tensor) -> tuple[float, float]:
    """(mean, half-width) of the two-sided 95 % confidence interval of the mean, Student t with n - 1 d.o.f."""
    v = np.asarray(values.cpu() if isinstance(values, torch.Tensor) else values, np.float64).ravel()
    if v.size < 2 or not np.isfinite(v).all():
        raise ValueError(f"mean_ci95 needs at least 2 finite values, got {v.size}")
    t = scipy.stats.t.ppf(0.975, v.size - 1)
    return float(v.mean()), float(t * v.std(ddof=1) / math.sqrt(v.size))

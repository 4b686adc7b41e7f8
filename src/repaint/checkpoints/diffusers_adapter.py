"""Hugging Face diffusers DDPMs (``UNet2DModel`` + a DDPM-type scheduler config) as RePaint denoisers.

A diffusers model folder is what ``save_pretrained`` writes: a pipeline folder (``unet/`` and ``scheduler/``) or a
bare ``UNet2DModel`` folder with its ``scheduler_config.json`` beside it (in the folder itself or in a sibling
``scheduler/``). This module is the adapter layer for them, so the samplers only ever see ``model(x, t) -> eps`` (and
the learned-range variance value when the scheduler says ``learned_range``):

* :func:`scheduler_settings` maps the scheduler's settings onto :class:`~repaint.models.config.DiffusionSettings` (beta
  schedule and range, number of training steps, variance type, clipping) and returns its ``prediction_type``; any
  setting this project cannot reproduce exactly is one :class:`~repaint.checkpoints.CheckpointError` naming it.
* :class:`DiffusersDenoiser` wraps the ``UNet2DModel`` and converts its ``v_prediction`` / ``sample`` output to
  epsilon (below), so every sampler works unchanged.
* :func:`load_diffusers` reads a folder, never downloading anything.

The ``diffusers`` package is an optional extra and imported lazily; importing this module does not need it.

Prediction types, with ``abar`` = alphas_cumprod at the network's (original-process) timestep and
``x_t = sqrt(abar) x0 + sqrt(1 - abar) eps`` (DDPM eq. 4):

* ``epsilon``: the output is eps.
* ``sample``: the output is x0, so ``eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)``.
* ``v_prediction`` (Salimans & Ho 2022, Sec. 4): ``v = sqrt(abar) eps - sqrt(1 - abar) x0``, so
  ``eps = sqrt(abar) v + sqrt(1 - abar) x_t``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..diffusion import beta_schedule
from ..models.config import DiffusionSettings
from .formats import CheckpointError

__all__ = [
    "MISSING_PACKAGE",
    "DiffusersDenoiser",
    "DiffusersModelConfig",
    "is_diffusers_folder",
    "load_diffusers",
    "locate",
    "scheduler_settings",
]

MISSING_PACKAGE = "diffusers folders need `pip install 'repaint[diffusers]'`"

# diffusers beta_schedule -> ours (diffusion.beta_schedule)
_BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine"}
# diffusers variance_type -> (learn_sigma, fixed_variance). "fixed_small_log" samples the same distribution as
# "fixed_small" in DDPMScheduler.step (it adds exp(0.5 log beta~) * z); "learned" and "fixed_large_log" are left out.
_VARIANCE_TYPES = {
    "fixed_small": (False, "small"), "fixed_small_log": (False, "small"),
    "fixed_large": (False, "large"), "learned_range": (True, "large"),
}
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
# Scheduler settings that only choose how a scheduler *walks* the process at inference time: our samplers choose that
# themselves (respacing, jump schedule, eta), so these are read past.
_INFERENCE_ONLY = {
    "timestep_spacing", "steps_offset", "set_alpha_to_one", "eta",
    "skip_prk_steps", "sample_max_value", "dynamic_thresholding_ratio",
    "tensor_format", "timestep_values",  # written by early diffusers releases (2022), unused since
}
_MAPPED = {
    "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "variance_type",
    "prediction_type", "clip_sample", "clip_sample_range", "thresholding", "rescale_betas_zero_snr",
}
# What each scheduler assumes when its config leaves a key out (DDPMScheduler's defaults).
_DEFAULTS = {
    "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
    "trained_betas": None, "variance_type": "fixed_small", "prediction_type": "epsilon", "clip_sample": True,
    "clip_sample_range": 1.0, "thresholding": False, "rescale_betas_zero_snr": False,
}
_SCHEDULER_FILE = "scheduler_config.json"
_UNET_FILE = "config.json"


def _diffusers():
    try:
        import diffusers
    except ImportError:
        raise CheckpointError(MISSING_PACKAGE) from None
    return diffusers


# ----------------------------------------------------------------------------------------------
# Finding the parts of a folder


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot read {path}: {error}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    return data


def _is_unet_dir(path: Path) -> bool:
    config = path / _UNET_FILE
    return config.is_file() and '"_class_name"' in config.read_text()[:100_000]


def is_diffusers_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder that looks like a diffusers pipeline or model folder (no diffusers needed)."""
    path = Path(path)
    return path.is_dir() and (_is_unet_dir(path / "unet") or _is_unet_dir(path))


def locate(path: str | Path) -> tuple[Path, Path]:
    """(UNet folder, scheduler config file) of a pipeline folder or a bare UNet folder; one-line error otherwise."""
    path = Path(path)
    if _is_unet_dir(path / "unet"):
        unet_dir, candidates = path / "unet", [path / "scheduler" / _SCHEDULER_FILE, path / _SCHEDULER_FILE]
    elif _is_unet_dir(path):
        unet_dir, candidates = path, [path / _SCHEDULER_FILE, path.parent / "scheduler" / _SCHEDULER_FILE]
    else:
        raise CheckpointError(f"{path} is not a diffusers folder (no unet/config.json or config.json with _class_name)")
    scheduler = next((c for c in candidates if c.is_file()), None)
    if scheduler is None:
        tried = " or ".join(str(c) for c in candidates)
        raise CheckpointError(f"{path}: no scheduler config ({tried}); the noise schedule cannot be guessed")
    return unet_dir, scheduler


# ----------------------------------------------------------------------------------------------
# The scheduler's settings


def scheduler_settings(config: Mapping[str, Any]) -> tuple[DiffusionSettings, str]:
    """(training diffusion, prediction type) of a diffusers scheduler config (the dict of scheduler_config.json).

    Every setting is either mapped exactly, read past as inference-only (timestep spacing, offsets, eta: our samplers
    set those), or refused: the one error lists every unsupported setting at once.
    """
    config = _modernised(config)
    unknown = sorted(k for k in set(config) - _MAPPED - _INFERENCE_ONLY if not k.startswith("_"))  # "_": bookkeeping
    c = {**_DEFAULTS, **{k: v for k, v in config.items() if k in _MAPPED}}
    problems = [f"{k}={config[k]!r} (unknown setting)" for k in unknown]
    if c["beta_schedule"] not in _BETA_SCHEDULES:
        problems.append(f"beta_schedule={c['beta_schedule']!r} (supported: {', '.join(_BETA_SCHEDULES)})")
    if c["trained_betas"] is not None:
        problems.append("trained_betas (an explicit beta table)")
    if c["variance_type"] not in _VARIANCE_TYPES:
        problems.append(f"variance_type={c['variance_type']!r} (supported: {', '.join(_VARIANCE_TYPES)})")
    if c["prediction_type"] not in PREDICTION_TYPES:
        problems.append(f"prediction_type={c['prediction_type']!r} (supported: {', '.join(PREDICTION_TYPES)})")
    if c["thresholding"]:
        problems.append("thresholding=True (dynamic thresholding)")
    if c["clip_sample"] and float(c["clip_sample_range"]) != 1.0:
        problems.append(f"clip_sample_range={c['clip_sample_range']} (only 1.0, the image range)")
    if c["rescale_betas_zero_snr"]:
        problems.append("rescale_betas_zero_snr=True")
    if not isinstance(c["num_train_timesteps"], int) or c["num_train_timesteps"] < 1:
        problems.append(f"num_train_timesteps={c['num_train_timesteps']!r}")
    if problems:
        name = config.get("_class_name", "scheduler")
        raise CheckpointError(f"unsupported {name} setting(s): {'; '.join(problems)}")
    learn_sigma, fixed = _VARIANCE_TYPES[c["variance_type"]]
    schedule = _BETA_SCHEDULES[c["beta_schedule"]]
    linear = schedule != "cosine"
    try:
        settings = DiffusionSettings(
            steps=c["num_train_timesteps"], noise_schedule=schedule, learn_sigma=learn_sigma,
            beta_start=float(c["beta_start"]) if linear else None, beta_end=float(c["beta_end"]) if linear else None,
            fixed_variance=fixed, clip_sample=bool(c["clip_sample"]),
        )
    except ValueError as error:
        raise CheckpointError(f"unsupported scheduler settings: {error}") from None
    return settings, c["prediction_type"]


def _modernised(config: Mapping[str, Any]) -> dict[str, Any]:
    """Early diffusers configs said ``predict_epsilon: true/false`` where later ones say ``prediction_type``."""
    config = dict(config)
    if "predict_epsilon" in config:
        legacy = config.pop("predict_epsilon")
        config.setdefault("prediction_type", "epsilon" if legacy else "sample")
    return config


def _alphas_cumprod(trained: DiffusionSettings) -> torch.Tensor:
    """abar of the original (training) process, float32 [steps]."""
    betas = beta_schedule(trained.noise_schedule, trained.steps, trained.beta_start, trained.beta_end)
    return torch.from_numpy(np.cumprod(1.0 - betas)).float()


# ----------------------------------------------------------------------------------------------
# The denoiser


@dataclass(frozen=True)
class DiffusersModelConfig:
    """What the Inpainter needs to know of a diffusers UNet (the ``config`` of an :class:`Inpainter`)."""

    image_size: int
    in_channels: int
    prediction_type: str
    variance_type: str
    class_cond: bool = False
    num_classes: int = 0
    unet: dict = field(default_factory=dict)        # the UNet2DModel's own config.json
    scheduler: dict = field(default_factory=dict)   # the scheduler_config.json

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DiffusersDenoiser(nn.Module):
    """``UNet2DModel`` -> ``model(x, t, y=None)``: eps [B, C, H, W], or [eps, v] [B, 2C, H, W] for learned_range.

    ``x`` float [B, C, H, W] in [-1, 1]; ``t`` int64 [B] original-process timesteps (what diffusers' schedulers hand
    the network); ``y`` int64 [B] class labels for a class-conditional UNet.
    """

    def __init__(self, unet: nn.Module, trained: DiffusionSettings, prediction_type: str):
        super().__init__()
        self.unet = unet
        self.prediction_type = prediction_type
        self.learn_sigma = trained.learn_sigma
        self.register_buffer("alphas_cumprod", _alphas_cumprod(trained), persistent=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        out = self.unet(x, t, class_labels=y).sample
        channels = x.shape[1]
        pred, rest = out[:, :channels], out[:, channels:]
        if self.learn_sigma and rest.shape[1] != channels:
            raise ValueError(f"a learned_range UNet must give {2 * channels} channels, this one gives {out.shape[1]}")
        eps = self._to_eps(pred.float(), x, t)
        return torch.cat([eps, rest.float()], dim=1) if self.learn_sigma else eps

    def _to_eps(self, pred: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The module docstring's conversions, with abar at the network's timestep ``t``."""
        if self.prediction_type == "epsilon":
            return pred
        abar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        signal, noise = abar.sqrt(), (1 - abar).sqrt()
        if self.prediction_type == "sample":
            return (x - signal * pred) / noise
        return signal * pred + noise * x  # v_prediction


def _unet_facts(unet_config: Mapping[str, Any], path: Path, trained: DiffusionSettings) -> dict[str, Any]:
    """image_size, in_channels and class conditioning of a UNet2DModel config; one-line errors for what cannot run."""
    name = unet_config.get("_class_name")
    if name != "UNet2DModel":
        raise CheckpointError(f"{path}: a {name} is not supported; RePaint needs a pixel-space UNet2DModel")
    size = unet_config.get("sample_size")
    if size is None:
        raise CheckpointError(f"{path}: the UNet config has no sample_size (the image size it was trained at)")
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            raise CheckpointError(f"{path}: sample_size {size} is not square")
        size = size[0]
    channels = int(unet_config.get("in_channels", 3))
    out = int(unet_config.get("out_channels", 3))
    if out != channels * (2 if trained.learn_sigma else 1):
        kind = "learned_range" if trained.learn_sigma else "fixed"
        raise CheckpointError(f"{path}: a {kind}-variance UNet needs out_channels "
                              f"{channels * (2 if trained.learn_sigma else 1)}, this one has {out}")
    if unet_config.get("class_embed_type") is not None:
        raise CheckpointError(f"{path}: class_embed_type={unet_config['class_embed_type']!r} is not supported")
    classes = unet_config.get("num_class_embeds")
    return dict(image_size=int(size), in_channels=channels, class_cond=classes is not None, num_classes=classes or 0)


def load_diffusers(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[DiffusersDenoiser, DiffusersModelConfig, DiffusionSettings]:
    """(denoiser in eval mode on ``device``, its config, its training diffusion) of a diffusers folder.

    Reads local files only (``local_files_only=True``); float32 weights.
    """
    unet_dir, scheduler_file = locate(path)
    scheduler = _read_json(scheduler_file)
    unet_config = _read_json(unet_dir / _UNET_FILE)
    trained, prediction = scheduler_settings(scheduler)
    facts = _unet_facts(unet_config, unet_dir, trained)
    diffusers = _diffusers()
    try:
        unet = diffusers.UNet2DModel.from_pretrained(str(unet_dir), local_files_only=True, torch_dtype=torch.float32,
                                                     low_cpu_mem_usage=False)
    except Exception as error:  # diffusers raises OSError, ValueError, EnvironmentError... for a damaged folder
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"cannot load the UNet in {unet_dir}: {reason}") from None
    variance = _modernised(scheduler).get("variance_type", _DEFAULTS["variance_type"])
    config = DiffusersModelConfig(**facts, prediction_type=prediction, variance_type=variance,
                                  unet=dict(unet_config), scheduler=dict(scheduler))
    denoiser = DiffusersDenoiser(unet, trained, prediction).to(device).eval()
    return denoiser, config, trained

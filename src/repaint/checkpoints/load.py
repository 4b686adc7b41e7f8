"""Loading a checkpoint into a network: the architecture from a preset, the stored config or inference; the
config file beside it and explicit settings on top; strict weights; a warning naming every guessed setting."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
import os
from typing import Any

import torch
from torch import nn

from ..models.config import Config, DiffusionSettings, build_model, config_kind
from .formats import (
    KINDS, CheckpointError, _shapes, _summary, config_from_record, describe_mismatch, expected_shapes,
    read_checkpoint, read_sidecar,
)
from .infer import apply_overrides, detect_kind, guessed_settings, infer_classifier_config, infer_unet_config
from ..home import home_dir
from .presets import PRESETS, Preset, closest, default_model_path, get_preset

__all__ = ["load_denoiser", "load_classifier", "load_checkpoint", "resolve_checkpoint", "default_model_path",
           "search_dirs", "CHECKPOINT_DIRS_ENV"]

CHECKPOINT_DIRS_ENV = "REPAINT_CHECKPOINTS"


def _choose_config(state_dict, stored, preset, kind, overrides) -> tuple[Config, str]:
    """Explicit preset > stored config > inference; returns (config, how it was chosen)."""
    if preset is not None:
        chosen = get_preset(preset) if isinstance(preset, str) else preset
        if kind is not None and kind != chosen.kind:
            raise CheckpointError(f"preset {chosen.name!r} is a {chosen.kind}, not a {kind}")
        return apply_overrides(chosen.config, overrides), f"preset {chosen.name!r}"
    if stored is not None:
        return apply_overrides(config_from_record(stored, kind or detect_kind(state_dict)), overrides), "stored config"
    kind = kind or detect_kind(state_dict)
    size = overrides.pop("image_size", None)
    infer = infer_unet_config if kind == "unet" else infer_classifier_config
    return infer(state_dict, image_size=size, **overrides), "inferred config"


def load_checkpoint(
    path: str | Path,
    preset: str | Preset | None = None,
    kind: str | None = None,
    map_location: Any = "cpu",
    contents: tuple[dict[str, torch.Tensor], Any] | None = None,
    **overrides: Any,
) -> tuple[nn.Module, Config]:
    """Load a guided-diffusion / RePaint checkpoint into a freshly built network (eval mode, float32).

    ``contents`` is what :func:`read_checkpoint` returned for ``path``, when the caller has read it already.

    The architecture comes from ``preset`` if given, else from the config stored in the file,
    else from :func:`infer_unet_config` / :func:`infer_classifier_config`; the settings of a config file beside
    the checkpoint (:func:`read_sidecar`), then ``overrides`` (config fields), are applied on top. When inference
    had to guess attention-head settings (:data:`UNET_UNDETERMINED`: the weights fit any of them, the outputs do
    not) a warning names the guesses and how to set them. ``kind`` ("unet" | "classifier") is detected when omitted.
    Weights are loaded with ``strict=True``; any mismatch is a one-line :class:`CheckpointError`.
    For the reference's fp16 behaviour call ``model.convert_torso(torch.float16)`` afterwards.
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    state_dict, stored = contents if contents is not None else read_checkpoint(path, map_location)
    try:
        found = detect_kind(state_dict)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
    if kind is not None and kind != found:
        raise CheckpointError(f"{path} holds a {found} state dict, not a {kind}")
    given = {**read_sidecar(path), **overrides}
    try:
        config, source = _choose_config(state_dict, stored, preset, kind, dict(given))
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
    if config_kind(config) != found:
        raise CheckpointError(f"{path} holds a {found} state dict, but {source} is a {config_kind(config)}")
    problem = describe_mismatch(_shapes(state_dict), expected_shapes(config))
    if problem:
        raise CheckpointError(f"{path} does not fit {source} {_summary(config)}: {problem}")
    guessed = guessed_settings(config, given) if source == "inferred config" else ()
    if guessed:
        values = ", ".join(f"{name}={getattr(config, name)}" for name in guessed)
        warnings.warn(
            f"{path}: the weights do not determine {values}; these are guesses (the released guided-diffusion "
            f"models' settings), and a checkpoint trained with others loads but gives wrong outputs. Set them in "
            f"{Path(path).with_suffix('.json').name} beside it (e.g. {{\"num_heads\": 4}}) or with "
            f"--unet-config KEY=VALUE", stacklevel=2)
    with torch.device("meta"):  # no memory for weights that are about to be replaced
        model = build_model(config)
    # the file's tensors become the parameters (no second copy of the weights); float32 as the contract says
    state_dict = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.eval(), config


def search_dirs() -> list[Path]:
    """Where a known model's file is looked for, in order: ``$REPAINT_CHECKPOINTS``, the current folder,
    ./data/pretrained (RePaint's download.sh puts them there), the repaint cache and its ``models/`` folder (where
    ``repaint download`` puts them)."""
    from .download import models_dir

    dirs = [Path(p) for p in os.environ.get(CHECKPOINT_DIRS_ENV, "").split(os.pathsep) if p]
    return dirs + [Path.cwd(), Path.cwd() / "data" / "pretrained", home_dir(), models_dir()]


def resolve_checkpoint(name_or_path: str) -> tuple[Path, str | None]:
    """(file or diffusers folder, preset name or None) for "default", a model name of :data:`PRESETS`, an
    ``hf:ORG/NAME[@REVISION]`` Hub model or a path; one-line error if not found.

    A known model that is on no search folder (:func:`search_dirs`) is downloaded now, with a progress bar, unless
    ``REPAINT_OFFLINE`` / ``HF_HUB_OFFLINE`` is set (then the error names the command that fetches it).
    """
    from . import download

    if name_or_path == "default":
        path = default_model_path()
        if not path.exists():
            raise CheckpointError(f"the bundled model {path} is missing from this installation")
        return path, None
    if name_or_path.startswith("hf:"):
        return download.fetch_hub(name_or_path), None
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path, None
    if name_or_path in PRESETS:
        preset = get_preset(name_or_path)
        if preset.kind == "diffusers":
            return download.fetch_hub(preset.source), None
        found = download.find_on_disk(preset, search_dirs())
        return (found or download.fetch_on_first_use(preset)), preset.name
    raise CheckpointError(
        f"no checkpoint file {name_or_path!r} and no model of that name{closest(name_or_path)} (`repaint models` "
        "lists them; hf:ORG/NAME names a Hub model)"
    )


def load_denoiser(
    model: str = "default", *, preset: str | Preset | None = None, unet_config: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, Any, DiffusionSettings]:
    """The one way a denoiser is loaded: (network on the CPU, its config, the diffusion it was trained with).

    ``model`` is a model name ("default" is the bundled face model; a known model not on disk is downloaded on first
    use), ``hf:ORG/NAME[@REVISION]`` (a Hub DDPM), a checkpoint file or a diffusers folder.
    ``preset`` forces a preset's architecture on a checkpoint file. ``unet_config`` sets UNetConfig fields a
    checkpoint file does not determine (the attention-head settings of an inferred architecture, see
    :func:`load_checkpoint`); they win over a config file beside it. Diffusers folders carry their own config
    (giving either for one is an error).
    """
    path, found_preset = resolve_checkpoint(str(model))
    if path.is_dir():
        if unet_config:
            raise CheckpointError(f"{path} is a diffusers folder, whose config.json sets the architecture; "
                                  "UNet settings (--unet-config) apply to checkpoint files only")
        if preset is not None:
            raise CheckpointError(f"{path} is a diffusers folder; it brings its own configuration (drop the preset)")
        from .diffusers_adapter import load_diffusers

        return load_diffusers(path)
    preset = preset or found_preset
    contents = read_checkpoint(path)
    unet, config = load_checkpoint(path, preset=preset, kind="unet", contents=contents, **(unet_config or {}))
    chosen = get_preset(preset) if isinstance(preset, str) else preset
    trained = chosen.diffusion if chosen is not None else _stored_diffusion(contents[1])
    return unet, config, trained or DiffusionSettings(learn_sigma=config.learn_sigma)


def load_classifier(name: str, *, preset: str | Preset | None = None) -> nn.Module:
    """A noisy-image classifier by preset name or file (on the CPU); ``preset`` forces an architecture."""
    path, found = resolve_checkpoint(str(name))
    classifier, _ = load_checkpoint(path, preset=preset or found, kind="classifier", map_location="cpu")
    return classifier


def _stored_diffusion(stored) -> DiffusionSettings | None:
    """Diffusion settings stored with our own checkpoints (absent in the official .pt files)."""
    if isinstance(stored, dict) and isinstance(stored.get("diffusion"), dict):
        return DiffusionSettings.from_dict(stored["diffusion"])
    return None

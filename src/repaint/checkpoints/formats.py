"""Checkpoint files: reading (``.pt`` without unpickling code, ``.safetensors``), writing, the config stored with
the weights, the config file beside a checkpoint, and comparing weights with an architecture.

Every failure is a one-line :class:`CheckpointError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.config import (
    ClassifierConfig, Config, DiffusionSettings, OFFICIAL_NAMES, UNetConfig, build_model, config_kind,
)

__all__ = [
    "CheckpointError", "METADATA_KEY", "KINDS", "Shapes", "read_checkpoint", "save_checkpoint", "config_record",
    "config_from_record", "expected_shapes", "describe_mismatch", "sidecar_path", "read_sidecar",
]

METADATA_KEY = "repaint_config"  # safetensors metadata entry holding the config as JSON
KINDS = ("unet", "classifier")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or whose weights do not fit the configuration tried."""


Shapes = dict[str, tuple[int, ...]]


def _shapes(state_dict: Mapping[str, torch.Tensor]) -> Shapes:
    return {key: tuple(value.shape) for key, value in state_dict.items()}


def expected_shapes(config: Config) -> Shapes:
    """state_dict key -> shape of the model ``config`` builds (on the meta device, no memory)."""
    with torch.device("meta"):
        return _shapes(build_model(config).state_dict())


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _unwrap(obj: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """A loaded ``.pt`` -> (state dict, stored config or None).

    Accepts a plain state dict, or a dict with ``"ema"`` (preferred), ``"state_dict"`` or ``"model"``
    holding one and an optional ``"config"``.
    """
    if _is_state_dict(obj):
        return dict(obj), None
    if isinstance(obj, Mapping):
        for key in ("ema", "state_dict", "model"):
            if _is_state_dict(obj.get(key)):
                return dict(obj[key]), obj.get("config")
        raise CheckpointError(f"no state dict found in the checkpoint (top-level keys: {sorted(map(str, obj))[:8]})")
    raise CheckpointError(f"expected a state dict, got {type(obj).__name__}")


def _read_safetensors(path: Path, map_location: Any) -> tuple[dict[str, torch.Tensor], Any]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = load_file(str(path), device=str(map_location))
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    stored = json.loads(metadata[METADATA_KEY]) if METADATA_KEY in metadata else None
    return tensors, stored


def _torch_load(path: Path, map_location: Any):
    """``torch.load`` with safe unpickling, memory-mapped where the file allows it (the zip format of every torch
    since 1.6): the weights are paged in from the file, not copied into memory first."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    except RuntimeError as error:
        if "mmap" not in str(error):
            raise
        return torch.load(path, map_location=map_location, weights_only=True)  # the legacy format


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> tuple[dict[str, torch.Tensor], Any]:
    """(state dict, stored config record or None) of a ``.pt`` or ``.safetensors`` file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            return _read_safetensors(path, map_location)
        return _unwrap(_torch_load(path, map_location))
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
    except Exception as error:  # torch/safetensors/json raise many types for a damaged file
        reason = str(error).strip().split(". ")[0].splitlines()[0] if str(error).strip() else ""
        raise CheckpointError(f"cannot read checkpoint {path}: {type(error).__name__}: {reason}") from error


def config_record(config: Config, diffusion: "DiffusionSettings | None" = None) -> dict[str, Any]:
    """What is stored next to the weights: ``{"kind": ..., "config": {...}}`` (+ ``"diffusion"`` for UNets)."""
    record = {"kind": config_kind(config), "config": config.to_dict()}
    if diffusion is not None:
        record["diffusion"] = diffusion.to_dict()
    return record


def config_from_record(record: Mapping[str, Any], kind: str | None = None) -> Config:
    """Inverse of :func:`config_record`; a bare config dict needs ``kind``."""
    if "kind" in record and "config" in record:
        kind, record = record["kind"], record["config"]
    if kind not in KINDS:
        raise CheckpointError(f"stored config has no valid kind ({kind!r}); expected one of {KINDS}")
    config_class = UNetConfig if kind == "unet" else ClassifierConfig
    try:
        return config_class.from_dict(record)
    except ValueError as error:
        raise CheckpointError(f"invalid stored config: {error}") from None


def _first(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def describe_mismatch(found: Shapes, expected: Shapes) -> str | None:
    """One line: counts and first few missing / unexpected / wrong-shape keys; None if they agree."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [f"{k} {list(found[k])} vs {list(expected[k])}" for k in expected if k in found and found[k] != expected[k]]
    parts = [
        f"{len(items)} {label} ({_first(items)})"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape (file vs model)", wrong))
        if items
    ]
    return "; ".join(parts) or None


def _summary(config: Config) -> str:
    data = config.to_dict()
    keep = ("image_size", "model_channels", "width", "num_res_blocks", "depth", "channel_mult",
            "attention_resolutions", "class_cond", "learn_sigma", "resblock_updown", "use_scale_shift_norm")
    return f"{type(config).__name__}(" + ", ".join(f"{k}={data[k]}" for k in keep if k in data) + ")"


SIDECAR_SUFFIXES = (".json", ".yaml", ".yml")


def sidecar_path(path: str | Path) -> Path | None:
    """The config file beside a checkpoint (``ckpt.pt`` -> ``ckpt.json``, ``ckpt.yaml`` or ``ckpt.yml``), if any."""
    found = [Path(path).with_suffix(suffix) for suffix in SIDECAR_SUFFIXES if Path(path).with_suffix(suffix).is_file()]
    if len(found) > 1:
        raise CheckpointError(f"two config files beside {path}: {', '.join(p.name for p in found)}; keep one")
    return found[0] if found else None


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """Architecture settings from the config file beside a checkpoint (see :func:`sidecar_path`); {} if none.

    The file is a JSON or YAML mapping of config fields (``num_heads: 4``); guided-diffusion's flag names
    (``num_channels``, ``classifier_width``, ...) are accepted too. Unknown names are an error when applied.
    """
    side = sidecar_path(path)
    if side is None:
        return {}
    import yaml

    try:
        data = json.loads(side.read_text()) if side.suffix == ".json" else yaml.safe_load(side.read_text())
    except (OSError, ValueError, yaml.YAMLError) as error:
        reason = " ".join(str(error).split())[:160]
        raise CheckpointError(f"cannot read the config file {side}: {reason}") from None
    if not isinstance(data, Mapping):
        raise CheckpointError(f"the config file {side} must hold a mapping of settings (e.g. num_heads: 4), "
                              f"not a {type(data).__name__}")
    return {OFFICIAL_NAMES.get(str(key), str(key)): value for key, value in data.items()}


def save_checkpoint(
    model: nn.Module, config: Config, path: str | Path, half: bool = False,
    diffusion: DiffusionSettings | None = None, extra: Mapping[str, str] | None = None,
) -> Path:
    """Write ``model``'s weights as safetensors with ``config`` (and the training ``diffusion``) in the metadata.

    ``half`` stores float16; ``extra`` adds further string metadata (e.g. training step).
    """
    from safetensors.torch import save

    from ..files import atomic_write

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    problem = describe_mismatch(_shapes(state), expected_shapes(config))
    if problem:
        raise CheckpointError(f"model does not match {_summary(config)}: {problem}")
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    path = Path(path)
    metadata = {METADATA_KEY: json.dumps(config_record(config, diffusion)), **(extra or {})}
    return atomic_write(path, save(state, metadata=metadata))


"""Checkpoints: from a model name, a file or a folder to a network and its configuration.

* :mod:`.presets`: the models known by name (the bundled face model, the paper's, OpenAI's).
* :mod:`.formats`: reading and writing ``.pt`` / ``.safetensors`` files safely, the config stored with the weights.
* :mod:`.infer`: an architecture from a state dict's shapes.
* :mod:`.load`: the loader (architecture from a preset, the file or inference; strict weights) and name resolution.
* :mod:`.download`: fetching a known model, a URL, a Drive file or a Hub model (resumed, verified, locked).
* :mod:`.diffusers_adapter`, :mod:`.diffusers_export`: Hugging Face diffusers DDPMs in and out.
"""

from __future__ import annotations

from .formats import (
    KINDS, METADATA_KEY, CheckpointError, config_from_record, config_record, describe_mismatch, expected_shapes,
    read_checkpoint, read_sidecar, save_checkpoint, sidecar_path,
)
from .infer import UNET_UNDETERMINED, detect_kind, guessed_settings, infer_classifier_config, infer_unet_config
from .load import (
    CHECKPOINT_DIRS_ENV, default_model_path, load_checkpoint, load_classifier, load_denoiser, resolve_checkpoint,
    search_dirs,
)
from .presets import FACE64_DIFFUSION, FACE64_UNET, PRESETS, Preset, get_preset

__all__ = [
    "CheckpointError", "KINDS", "METADATA_KEY", "PRESETS", "Preset", "get_preset", "FACE64_UNET", "FACE64_DIFFUSION",
    "read_checkpoint", "save_checkpoint", "load_checkpoint", "load_denoiser", "load_classifier", "resolve_checkpoint",
    "default_model_path",
    "config_record", "config_from_record", "describe_mismatch", "expected_shapes", "read_sidecar", "sidecar_path",
    "detect_kind", "infer_unet_config", "infer_classifier_config", "guessed_settings", "UNET_UNDETERMINED",
    "CHECKPOINT_DIRS_ENV", "search_dirs",
]

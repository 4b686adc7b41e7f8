"""The reference RePaint's YAML configs (``confs/test_*.yml`` of andreas128/RePaint), read into our settings.

A reference config is one flat mapping of guided-diffusion arguments plus RePaint's own keys. We map

* the architecture keys (``num_channels``, ``attention_resolutions``, ...) to a :class:`UNetConfig`, the
  ``classifier_*`` keys to a :class:`ClassifierConfig`, ``diffusion_steps`` / ``noise_schedule`` / ``learn_sigma`` to
  :class:`DiffusionSettings`; ``model_path`` / ``classifier_path`` name the files (a missing file whose name is an
  official checkpoint's is looked up like a preset);
* ``timestep_respacing``, ``schedule_jump_params``, ``clip_denoised``, ``classifier_scale``, ``cond_y`` to
  :class:`SamplerSettings` and the sampling call;
* ``data.eval.<name>``: ``gt_path`` / ``mask_path`` folders paired file by file in sorted order (as the reference's
  loader), ``offset`` / ``max_len`` to choose a slice, ``batch_size``, and ``paths`` (srs, lrs, gts, gt_keep_masks) to
  the output folders (inpainted, gt_masked, gt, gt_keep_mask).

Keys that we know but that do not change sampling (training losses, logging, data-loader plumbing) are accepted
silently (:data:`IGNORED_KEYS`, :data:`IGNORED_DATA_KEYS`). Keys that would change the result in a way we do not
implement must keep the value the released configs use (:data:`REQUIRED_VALUES`), else the config is refused.
Anything else is reported in one warning, so a typo never passes unnoticed.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from .accel import Accel
from .images import OutputDirs
from .files import IMAGE_SUFFIXES
from .inpainter import Inpainter, recommended_settings
from .checkpoints import resolve_checkpoint
from .schedule import JUMP_FIELDS
from .settings import SamplerSettings
from .checkpoints import PRESETS, CheckpointError, Preset
from .models.config import ClassifierConfig, DiffusionSettings, UNetConfig, config_from_official_kwargs

__all__ = ["ConfError", "ReferenceConf", "EvalData", "read_conf", "parse_conf", "inpainter_from_conf", "IGNORED_KEYS"]


class ConfError(ValueError):
    """A reference config that cannot be read or asks for something we do not implement."""


# Architecture: guided-diffusion create_model / create_classifier arguments
# (see repaint.models.config.config_from_official_kwargs).
UNET_KEYS = (
    "image_size", "num_channels", "num_res_blocks", "channel_mult", "learn_sigma", "class_cond",
    "attention_resolutions", "num_heads", "num_head_channels", "num_heads_upsample", "use_scale_shift_norm",
    "dropout", "resblock_updown", "use_fp16", "use_new_attention_order",
)
CLASSIFIER_KEYS = (
    "classifier_width", "classifier_depth", "classifier_attention_resolutions", "classifier_use_scale_shift_norm",
    "classifier_resblock_updown", "classifier_pool", "classifier_use_fp16",
)
# Keys this module reads itself.
USED_KEYS = (
    "model_path", "classifier_path", "classifier_scale", "diffusion_steps", "noise_schedule", "timestep_respacing",
    "schedule_jump_params", "clip_denoised", "cond_y", "name", "data", "device",
)
SCHEDULE_KEYS = ("t_T", *JUMP_FIELDS)

# Known keys that do not affect sampling: key -> why it is ignored.
IGNORED_KEYS: dict[str, str] = {
    "use_checkpoint":        "gradient checkpointing: memory during training only",
    "use_kl":                "training loss",
    "rescale_learned_sigmas": "training loss",
    "print_estimated_vars":  "debug printing",
    "show_progress":         "a progress bar is always shown",
    "lr_kernel_n_std":       "unused by the reference's sampling",
    "num_samples":           "unused by the reference's test.py (the data slice decides)",
    "n_jobs":                "the reference's job count on its cluster",
    "latex_name":            "plot label",
    "method_name":           "plot label",
}
IGNORED_DATA_KEYS: dict[str, str] = {
    "mask_loader":       "always true for inpainting",
    "deterministic":     "files are always read in sorted order",
    "return_dict":       "data-loader plumbing",
    "return_dataloader": "data-loader plumbing",
    "drop_last":         "every image is inpainted",
    "ds_conf":           "names the mask family the folder was made with",
    "class_cond":        "labels come from cond_y / --class-label",
    "random_crop":       "test configs never crop randomly (must be false)",
    "random_flip":       "test configs never flip (must be false)",
}
# Keys whose other values change the result in ways not implemented here: key -> the value we require.
REQUIRED_VALUES: dict[str, Any] = {
    "predict_xstart": False,               # the network predicts eps
    "rescale_timesteps": False,            # the network gets 0..999
    "use_ddim": False,                     # DDPM sampling (RePaint)
    "inpa_inj_sched_prev": True,           # inject the noised known region before each step (reference injection)
    "inpa_inj_sched_prev_cumnoise": False,  # ... with fresh noise, not accumulated noise
}
PATH_KEYS = {"srs": "inpainted", "lrs": "gt_masked", "gts": "gt", "gt_keep_masks": "gt_keep_mask"}


@dataclass
class EvalData:
    """One ``data.eval.<name>`` entry: image/mask folders and where to write."""

    name: str
    gt_path: Path
    mask_path: Path
    image_size: int | None = None
    offset: int = 0
    max_len: int | None = None
    batch_size: int | None = None
    paths: dict[str, Path] = field(default_factory=dict)   # our output-folder names -> folder

    def pairs(self) -> list[tuple[str, Path, Path]]:
        """(name, image file, mask file), paired in sorted order as the reference's loader does."""
        images, masks = _image_files(self.gt_path, "gt_path"), _image_files(self.mask_path, "mask_path")
        end = None if not self.max_len else self.offset + self.max_len
        images, masks = images[self.offset:end], masks[self.offset:end]
        if len(masks) < len(images):
            raise ConfError(f"data {self.name!r}: {len(images)} images in {self.gt_path} but only {len(masks)} "
                            f"masks in {self.mask_path}")
        return [(image.stem, image, mask) for image, mask in zip(images, masks)]

    def output_dirs(self, root: str | os.PathLike) -> OutputDirs:
        return OutputDirs.under(root, self.paths)


@dataclass
class ReferenceConf:
    """What we understood of a reference config."""

    name: str
    model_path: str | None
    unet: UNetConfig
    diffusion: DiffusionSettings
    settings: SamplerSettings
    classifier_path: str | None = None
    classifier: ClassifierConfig | None = None
    classifier_scale: float = 1.0
    class_label: int | None = None
    device: str | None = None
    data: list[EvalData] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)     # dotted names of keys we did not understand


def _image_files(folder: Path, key: str) -> list[Path]:
    if not folder.is_dir():
        raise ConfError(f"{key} folder not found: {folder}")
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
             and not p.name.startswith(".")]
    if not files:
        raise ConfError(f"{key} folder {folder} holds no images")
    return sorted(files)


def read_conf(path: str | os.PathLike) -> dict[str, Any]:
    """The YAML mapping of ``path``; one-line :class:`ConfError` if it is missing or not a mapping."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfError(f"cannot read config {path}: {err}") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ConfError(f"config {path} is not valid YAML{line}: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise ConfError(f"config {path} must be a mapping of keys to values, got {type(data).__name__}")
    return data


def _check_required(conf: Mapping[str, Any]) -> None:
    for key, value in REQUIRED_VALUES.items():
        if key in conf and conf[key] is not None and bool(conf[key]) != value:
            raise ConfError(f"config sets {key}: {conf[key]}, which repaint does not implement (needs {value})")


def _schedule(params: Mapping[str, Any], unknown: list[str]) -> dict[str, int]:
    if not isinstance(params, Mapping):
        raise ConfError(f"schedule_jump_params must be a mapping, got {params!r}")
    unknown += [f"schedule_jump_params.{k}" for k in params if k not in SCHEDULE_KEYS]
    return {k: v for k, v in params.items() if k in SCHEDULE_KEYS}


def _sampler_settings(conf: Mapping[str, Any], unknown: list[str]) -> SamplerSettings:
    jump = _schedule(conf.get("schedule_jump_params") or {}, unknown)
    respacing = str(conf.get("timestep_respacing") or "")
    t_T = jump.pop("t_T", None)
    steps = int(respacing) if respacing.isdigit() else None
    if t_T is not None and steps is not None and int(t_T) != steps:
        raise ConfError(f"schedule_jump_params.t_T={t_T} differs from timestep_respacing={respacing!r}; "
                        "repaint starts the schedule at the top of the respaced process")
    if t_T is not None and not respacing:
        respacing = str(t_T)
    try:
        return SamplerSettings(timestep_respacing=respacing, clip_denoised=bool(conf.get("clip_denoised", True)),
                               injection="reference", **jump)
    except TypeError as err:
        raise ConfError(f"schedule_jump_params: {err}") from None


def _eval_data(conf: Mapping[str, Any], unknown: list[str]) -> list[EvalData]:
    data = conf.get("data") or {}
    if not isinstance(data, Mapping):
        raise ConfError("data must be a mapping with an 'eval' entry")
    unknown += [f"data.{k}" for k in data if k not in ("eval", "train")]
    entries = []
    for name, entry in (data.get("eval") or {}).items():
        where = f"data.eval.{name}"
        if not isinstance(entry, Mapping) or "gt_path" not in entry or "mask_path" not in entry:
            raise ConfError(f"{where} needs gt_path and mask_path")
        used = {"gt_path", "mask_path", "image_size", "offset", "max_len", "batch_size", "paths"}
        unknown += [f"{where}.{k}" for k in entry if k not in used and k not in IGNORED_DATA_KEYS]
        for flag in ("random_crop", "random_flip"):
            if entry.get(flag):
                warnings.warn(f"{where}.{flag} is true; repaint reads test data deterministically (no {flag})",
                              stacklevel=3)
        paths = entry.get("paths") or {}
        unknown += [f"{where}.paths.{k}" for k in paths if k not in PATH_KEYS and k != "root"]
        entries.append(EvalData(
            name=str(name), gt_path=Path(entry["gt_path"]).expanduser(),
            mask_path=Path(entry["mask_path"]).expanduser(),
            image_size=entry.get("image_size"), offset=int(entry.get("offset") or 0), max_len=entry.get("max_len"),
            batch_size=entry.get("batch_size"),
            paths={PATH_KEYS[k]: Path(v).expanduser() for k, v in paths.items() if k in PATH_KEYS and v},
        ))
    return entries


def parse_conf(conf: Mapping[str, Any]) -> ReferenceConf:
    """Map a reference config (as read by :func:`read_conf`) to our settings; see the module docstring."""
    _check_required(conf)
    known = set(UNET_KEYS) | set(CLASSIFIER_KEYS) | set(USED_KEYS) | set(IGNORED_KEYS) | set(REQUIRED_VALUES)
    unknown = [k for k in conf if k not in known]
    try:
        unet = config_from_official_kwargs({k: conf[k] for k in UNET_KEYS if k in conf})
        classifier = None
        if conf.get("classifier_path"):
            kwargs = {k: conf[k] for k in CLASSIFIER_KEYS if k in conf}
            classifier = (config_from_official_kwargs({"image_size": unet.image_size, **kwargs}) if kwargs
                          else ClassifierConfig(image_size=unet.image_size))
        diffusion = DiffusionSettings(steps=int(conf.get("diffusion_steps", 1000)),
                                      noise_schedule=str(conf.get("noise_schedule", "linear")),
                                      learn_sigma=unet.learn_sigma)
    except (TypeError, KeyError, ValueError) as err:
        raise ConfError(f"config architecture: {err}") from None
    settings = _sampler_settings(conf, unknown)
    data = _eval_data(conf, unknown)
    cond_y = conf.get("cond_y")
    return ReferenceConf(
        name=str(conf.get("name") or "conf"), model_path=conf.get("model_path"), unet=unet, diffusion=diffusion,
        settings=settings, classifier_path=conf.get("classifier_path") or None, classifier=classifier,
        classifier_scale=float(conf.get("classifier_scale", 1.0)),
        class_label=None if cond_y is None else int(cond_y), device=conf.get("device"), data=data, unknown=unknown,
    )


def _find(path: str) -> tuple[Path, str | None]:
    """A config's file path; if missing, an official checkpoint of the same file name is looked up as a preset."""
    if Path(path).expanduser().exists():
        return Path(path).expanduser(), None
    for preset in PRESETS.values():
        if preset.filename == Path(path).name:
            return resolve_checkpoint(preset.name)
    raise CheckpointError(f"checkpoint not found: {path}")


def inpainter_from_conf(conf: ReferenceConf, device: str | torch.device = "cpu", model: str | None = None,
                   classifier: str | None = None, accel: Accel | None = None) -> Inpainter:
    """The Inpainter a config describes: its architecture, its diffusion, its files (``model`` / ``classifier``
    replace ``model_path`` / ``classifier_path``), loaded the one way every model is (:meth:`Inpainter.load`)."""
    device = torch.device(device)
    model_path = model or conf.model_path
    if not model_path:
        raise ConfError("the config has no model_path; pass --model")
    path, _ = resolve_checkpoint(model) if model else _find(model_path)
    arch = Preset(conf.name, path.name, "from a reference config", str(path), conf.unet, conf.diffusion)
    clf_path = classifier or (conf.classifier_path if conf.classifier_scale > 0 else None)
    clf_file, clf_arch = None, None
    if clf_path:
        clf_file, _ = resolve_checkpoint(classifier) if classifier else _find(clf_path)
        clf_config = conf.classifier or ClassifierConfig(image_size=conf.unet.image_size)
        clf_arch = Preset(f"{conf.name}_classifier", clf_file.name, "from a reference config", str(clf_file),
                          clf_config)
    if accel is None:  # the reference ran use_fp16 configs with a float16 torso on the GPU
        accel = Accel(precision="reference-fp16") if conf.unet.use_fp16 and device.type == "cuda" else Accel()
    return Inpainter.load(str(path), preset=arch, classifier=None if clf_file is None else str(clf_file),
                          classifier_preset=clf_arch, device=device, accel=accel)


# ----------------------------------------------------------------------------------------------
# A config meets the command line (or any caller's choices)


@dataclass(frozen=True)
class RunChoices:
    """What a run uses when a reference config and a caller's choices meet (:func:`merge_choices`)."""

    settings: SamplerSettings        # the base settings the caller's schedule options then override
    device: str                      # as asked ("auto", "cpu", "cuda:1", ...), not yet resolved
    class_label: int | None
    classifier_scale: float
    random_labels: bool              # no label for a class-conditional model: one per seed, as the reference draws


def merge_choices(conf: ReferenceConf | None, choices: Mapping[str, Any], explicit: Collection[str]) -> RunChoices:
    """The one rule for a config and the caller's ``choices`` (keys ``model``, ``device``, ``class_label``,
    ``classifier_scale``): a choice in ``explicit`` (given by the caller) wins, then the config's value, then the
    choice's default. Without a config the base settings are the model's recommendation."""
    if conf is None:
        return RunChoices(recommended_settings(choices["model"]), choices["device"], choices["class_label"],
                          choices["classifier_scale"], random_labels=False)

    def pick(key: str, conf_value):
        return choices[key] if key in explicit or conf_value is None else conf_value

    return RunChoices(conf.settings, pick("device", conf.device), pick("class_label", conf.class_label),
                      pick("classifier_scale", conf.classifier_scale), random_labels=True)


def load_for_run(conf: ReferenceConf | None, choices: Mapping[str, Any], explicit: Collection[str], device: str,
                 accel: Accel) -> Inpainter:
    """The model of a run: the config's (its architecture and files; ``--model``/``--classifier`` replace the files)
    unless the caller named a model, which then loads as any model does. ``accel`` applies to a config's model only
    when the caller chose one of its fields; otherwise the config's own precision rule does."""
    classifier = choices.get("classifier")
    if conf is not None and "model" not in explicit:
        chose_accel = {"precision", "compile_net", "cuda_graphs"} & set(explicit)
        return inpainter_from_conf(conf, device, classifier=classifier, accel=accel if chose_accel else None)
    conf_classifier = conf.classifier_path if conf is not None and conf.classifier_scale > 0 else None
    return Inpainter.load(choices["model"], classifier=classifier or conf_classifier, device=device,
                          preset=choices.get("preset"), accel=accel, unet_config=choices.get("unet_config") or None)

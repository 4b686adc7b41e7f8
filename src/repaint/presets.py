"""Typed configurations of the official checkpoints, and checkpoint loading.

* :class:`UNetConfig`, :class:`ClassifierConfig`: pure architecture, frozen, ``to_dict``/``from_dict``
  (unknown keys are an error); :class:`DiffusionSettings`: the noise process a UNet was trained with.
* :data:`PRESETS`: the five released checkpoints RePaint uses, by name (:func:`get_preset`).
* :func:`infer_unet_config`, :func:`infer_classifier_config`: architecture from a state dict's keys and shapes.
* :func:`load_checkpoint`, :func:`save_checkpoint`: ``.pt`` / ``.safetensors`` in, model + config out;
  every failure is a one-line :class:`CheckpointError`.
* :func:`config_from_official_kwargs`: guided-diffusion ``create_model`` / ``create_classifier`` keyword
  arguments (``num_channels``, ``"32,16,8"`` strings, ``classifier_*``) -> our configs.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn

from .diffusion import DiffusionConfig
from .models import EncoderUNetModel, UNetModel

# Official default widths per level, by image size (used when channel_mult is empty).
DEFAULT_CHANNEL_MULT: dict[int, tuple[float, ...]] = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}
METADATA_KEY = "repaint_config"  # safetensors metadata entry holding the config as JSON
KINDS = ("unet", "classifier")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or whose weights do not fit the configuration tried."""


# ----------------------------------------------------------------------------------------------
# Configurations


def _number(value: Any) -> float | int:
    value = float(value)
    return int(value) if value.is_integer() else value


def _numbers(values: Any) -> tuple:
    """``"1,1,2"`` / ``[1, 1, 2]`` / ``None`` -> ``(1, 1, 2)`` / ``()`` (ints where integral)."""
    if values is None:
        return ()
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    return tuple(_number(v) for v in values)


def default_channel_mult(image_size: int) -> tuple[float, ...]:
    """The official per-level widths for ``image_size`` (64, 128, 256 or 512)."""
    if image_size not in DEFAULT_CHANNEL_MULT:
        sizes = ", ".join(map(str, sorted(DEFAULT_CHANNEL_MULT)))
        raise ValueError(f"no default channel_mult for image_size={image_size} (defaults exist for {sizes}); pass channel_mult")
    return DEFAULT_CHANNEL_MULT[image_size]


class _ConfigDict:
    """``to_dict`` / ``from_dict`` for the frozen config dataclasses; unknown keys are an error."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (tuples become lists)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; valid keys: {names}")
        try:
            return cls(**data)
        except TypeError as error:
            raise ValueError(f"{cls.__name__}: {error}") from None

    def replace(self, **changes: Any):
        """A copy with some fields changed; unknown field names are an error."""
        return self.from_dict({**self.to_dict(), **changes})

    def _normalise(self, *names: str) -> None:
        for name in names:
            object.__setattr__(self, name, _numbers(getattr(self, name)))
        if not self.channel_mult:
            object.__setattr__(self, "channel_mult", default_channel_mult(self.image_size))
        if any(int(r) != r for r in self.attention_resolutions):
            raise ValueError(f"attention_resolutions must be integers, got {self.attention_resolutions}")


@dataclass(frozen=True)
class UNetConfig(_ConfigDict):
    """Architecture of an ADM UNet. Defaults are guided-diffusion's ``model_and_diffusion_defaults``."""

    image_size: int                               # training resolution (places attention)
    model_channels: int                           # base width ("num_channels")
    num_res_blocks: int                           # ResBlocks per level
    attention_resolutions: tuple[int, ...]        # feature-map sizes with attention, e.g. (32, 16, 8)
    channel_mult: tuple[float, ...] = ()          # per-level widths; () = official default by image_size
    in_channels: int = 3                          # image channels
    learn_sigma: bool = False                     # output 2*in_channels (epsilon and variance)
    class_cond: bool = False                      # class-conditional (label_emb)
    num_classes: int = 1000                       # label_emb rows when class_cond
    num_heads: int = 4                            # heads when num_head_channels == -1
    num_head_channels: int = -1                   # fixed head width (overrides num_heads)
    num_heads_upsample: int = -1                  # decoder heads; -1 = num_heads
    use_scale_shift_norm: bool = True             # FiLM-style embedding in ResBlocks
    resblock_updown: bool = False                 # ResBlocks resample instead of plain convs
    use_new_attention_order: bool = False         # q/k/v split before heads
    dropout: float = 0.0                          # dropout inside ResBlocks
    use_fp16: bool = False                        # the reference's flag: torso convs in float16 (precision
                                                  # "reference-fp16" of repaint.accel when sampling on CUDA)

    def __post_init__(self):
        self._normalise("attention_resolutions", "channel_mult")

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`UNetModel`."""
        return dict(
            image_size=self.image_size,
            in_channels=self.in_channels,
            model_channels=self.model_channels,
            out_channels=self.out_channels,
            num_res_blocks=self.num_res_blocks,
            attention_resolutions=self.attention_resolutions,
            channel_mult=self.channel_mult,
            num_classes=self.num_classes if self.class_cond else None,
            num_heads=self.num_heads,
            num_head_channels=self.num_head_channels,
            num_heads_upsample=self.num_heads_upsample,
            use_scale_shift_norm=self.use_scale_shift_norm,
            resblock_updown=self.resblock_updown,
            use_new_attention_order=self.use_new_attention_order,
            dropout=self.dropout,
        )


@dataclass(frozen=True)
class ClassifierConfig(_ConfigDict):
    """Architecture of the noisy-image classifier. Defaults are guided-diffusion's ``classifier_defaults``."""

    image_size: int                               # input resolution
    width: int = 128                              # base width ("classifier_width")
    depth: int = 2                                # ResBlocks per level ("classifier_depth")
    attention_resolutions: tuple[int, ...] = (32, 16, 8)  # feature-map sizes with attention
    use_scale_shift_norm: bool = True             # FiLM-style embedding in ResBlocks
    resblock_updown: bool = True                  # ResBlocks downsample instead of plain convs
    pool: str = "attention"                       # pooling head: "attention" or "adaptive"
    use_fp16: bool = False                        # the reference ran the torso's convs in float16
    channel_mult: tuple[float, ...] = ()          # () = official (fixed) widths by image_size
    in_channels: int = 3                          # image channels
    num_classes: int = 1000                       # number of logits
    num_head_channels: int = 64                   # head width of every attention layer

    def __post_init__(self):
        self._normalise("attention_resolutions", "channel_mult")

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`EncoderUNetModel`."""
        return dict(
            image_size=self.image_size,
            in_channels=self.in_channels,
            model_channels=self.width,
            num_classes=self.num_classes,
            num_res_blocks=self.depth,
            attention_resolutions=self.attention_resolutions,
            channel_mult=self.channel_mult,
            num_head_channels=self.num_head_channels,
            use_scale_shift_norm=self.use_scale_shift_norm,
            resblock_updown=self.resblock_updown,
            pool=self.pool,
        )


@dataclass(frozen=True)
class DiffusionSettings(_ConfigDict):
    """The forward process a UNet checkpoint was trained with (the fields of :class:`DiffusionConfig` but respacing)."""

    steps: int = 1000                             # length of the training noise schedule
    noise_schedule: str = "linear"                # "linear", "cosine" or "scaled_linear"
    learn_sigma: bool = True                      # the UNet also predicts the variance
    beta_start: float | None = None               # linear / scaled_linear range; None = DDPM's (scaled to steps)
    beta_end: float | None = None
    fixed_variance: str = "large"                 # without learn_sigma: "large" (beta_t) or "small" (beta~_t)
    clip_sample: bool = True                      # False: the model's x0 estimate must not be clamped to [-1, 1]

    def __post_init__(self):
        self.diffusion_config()  # one error for an invalid schedule, at construction

    def to_dict(self) -> dict[str, Any]:
        """As stored with checkpoints; the fields added for diffusers models are left out at their defaults, so the
        records (and evaluation identities) of every earlier checkpoint stay byte-identical."""
        data = super().to_dict()
        for name in ("beta_start", "beta_end", "fixed_variance", "clip_sample"):
            if data[name] == _DIFFUSION_DEFAULTS[name]:
                del data[name]
        return data

    def diffusion_config(self, respacing: str = "") -> DiffusionConfig:
        """The respaced diffusion of this training process."""
        return DiffusionConfig(
            steps=self.steps, noise_schedule=self.noise_schedule, timestep_respacing=respacing,
            learn_sigma=self.learn_sigma, beta_start=self.beta_start, beta_end=self.beta_end,
            fixed_variance=self.fixed_variance,
        )


_DIFFUSION_DEFAULTS = {f.name: f.default for f in dataclasses.fields(DiffusionSettings)}
Config = Union[UNetConfig, ClassifierConfig]


def config_kind(config: Config) -> str:
    if isinstance(config, UNetConfig):
        return "unet"
    if isinstance(config, ClassifierConfig):
        return "classifier"
    raise TypeError(f"expected a UNetConfig or ClassifierConfig, got {type(config).__name__}")


def build_model(config: Config) -> nn.Module:
    """A freshly initialised network for ``config`` (build under ``torch.device(...)`` to place it)."""
    model_class = UNetModel if config_kind(config) == "unet" else EncoderUNetModel
    return model_class(**config.model_kwargs())


# ----------------------------------------------------------------------------------------------
# Official keyword arguments

_UNET_KWARGS = {  # guided-diffusion create_model name -> UNetConfig field
    "image_size": "image_size", "num_channels": "model_channels", "num_res_blocks": "num_res_blocks",
    "channel_mult": "channel_mult", "learn_sigma": "learn_sigma", "class_cond": "class_cond",
    "attention_resolutions": "attention_resolutions", "num_heads": "num_heads",
    "num_head_channels": "num_head_channels", "num_heads_upsample": "num_heads_upsample",
    "use_scale_shift_norm": "use_scale_shift_norm", "dropout": "dropout", "resblock_updown": "resblock_updown",
    "use_fp16": "use_fp16", "use_new_attention_order": "use_new_attention_order",
}
_CLASSIFIER_KWARGS = {  # create_classifier name -> ClassifierConfig field
    "image_size": "image_size", "classifier_width": "width", "classifier_depth": "depth",
    "classifier_attention_resolutions": "attention_resolutions",
    "classifier_use_scale_shift_norm": "use_scale_shift_norm",
    "classifier_resblock_updown": "resblock_updown", "classifier_pool": "pool",
    "classifier_use_fp16": "use_fp16",
}
_NOT_ARCHITECTURE = {"use_checkpoint"}  # gradient checkpointing: changes memory, not the weights


def config_from_official_kwargs(kwargs: Mapping[str, Any]) -> Config:
    """guided-diffusion ``create_model(**kwargs)`` / ``create_classifier(**kwargs)`` -> our config.

    Comma-separated strings (``attention_resolutions="32,16,8"``, ``channel_mult=""``) are parsed;
    ``use_checkpoint`` is accepted and dropped; any other unknown key is an error.
    """
    is_classifier = any(key.startswith("classifier_") for key in kwargs)
    names, config_class = (_CLASSIFIER_KWARGS, ClassifierConfig) if is_classifier else (_UNET_KWARGS, UNetConfig)
    unknown = sorted(set(kwargs) - set(names) - _NOT_ARCHITECTURE)
    if unknown:
        raise ValueError(f"unknown {'create_classifier' if is_classifier else 'create_model'} arguments {unknown}")
    return config_class.from_dict({names[k]: v for k, v in kwargs.items() if k in names})


# ----------------------------------------------------------------------------------------------
# Presets


@dataclass(frozen=True)
class Preset:
    """A released checkpoint: file name, provenance and the configuration that rebuilds it."""

    name: str
    filename: str
    description: str
    published: str                                # where the file can be downloaded (not fetched here)
    config: Config
    diffusion: DiffusionSettings | None = None    # UNets only

    def __post_init__(self):
        if self.diffusion is not None and self.diffusion.learn_sigma != getattr(self.config, "learn_sigma", None):
            raise ValueError(f"preset {self.name!r}: diffusion.learn_sigma disagrees with the UNet config")

    @property
    def kind(self) -> str:
        return config_kind(self.config)


_REPAINT_DRIVE = "RePaint README: download.sh fetches it from the authors' Google Drive folder into data/pretrained/"
_OPENAI = "openai/guided-diffusion README (openaipublic.blob.core.windows.net/diffusion/jul-2021/)"
_ADM256 = dict(  # the 256x256 ADM architecture shared by every released 256px UNet
    image_size=256, model_channels=256, num_res_blocks=2, attention_resolutions=(32, 16, 8),
    channel_mult=(1, 1, 2, 2, 4, 4), learn_sigma=True, num_heads=4, num_head_channels=64,
    num_heads_upsample=-1, use_scale_shift_norm=True, resblock_updown=True,
    use_new_attention_order=False, dropout=0.0,
)
_LINEAR_1000 = DiffusionSettings(steps=1000, noise_schedule="linear", learn_sigma=True)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("celeba256", "celeba256_250000.pt",
               "CelebA-HQ 256x256 unconditional face model (RePaint confs/test_c256_*.yml)",
               _REPAINT_DRIVE, UNetConfig(**_ADM256, use_fp16=False), _LINEAR_1000),
        Preset("places256", "places256_300000.pt",
               "Places2 256x256 unconditional scene model (RePaint confs/test_p256_*.yml)",
               _REPAINT_DRIVE, UNetConfig(**_ADM256, use_fp16=False), _LINEAR_1000),
        Preset("imagenet256", "256x256_diffusion.pt",
               "ImageNet 256x256 class-conditional model (RePaint confs/test_inet256_*.yml)",
               f"{_OPENAI}; RePaint's download.sh also fetches a copy",
               UNetConfig(**_ADM256, class_cond=True, use_fp16=True), _LINEAR_1000),
        Preset("imagenet256_classifier", "256x256_classifier.pt",
               "ImageNet 256x256 noisy-image classifier for guidance (RePaint confs/test_inet256_*.yml)",
               f"{_OPENAI}; RePaint's download.sh also fetches a copy",
               ClassifierConfig(image_size=256, width=128, depth=2, attention_resolutions=(32, 16, 8),
                                use_scale_shift_norm=True, resblock_updown=True, pool="attention",
                                use_fp16=False)),
        Preset("openai256_uncond", "256x256_diffusion_uncond.pt",
               "ImageNet 256x256 unconditional model of guided-diffusion",
               _OPENAI, UNetConfig(**_ADM256, use_fp16=True), _LINEAR_1000),
    ]
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a ValueError lists the valid names otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return PRESETS[name]


# ----------------------------------------------------------------------------------------------
# Inference from a state dict

Shapes = dict[str, tuple[int, ...]]


def _shapes(state_dict: Mapping[str, torch.Tensor]) -> Shapes:
    return {key: tuple(value.shape) for key, value in state_dict.items()}


def expected_shapes(config: Config) -> Shapes:
    """state_dict key -> shape of the model ``config`` builds (on the meta device, no memory)."""
    with torch.device("meta"):
        return _shapes(build_model(config).state_dict())


def _require(shapes: Shapes, *keys: str) -> None:
    missing = [k for k in keys if k not in shapes]
    if missing:
        raise CheckpointError(f"not a guided-diffusion network state dict: no {', '.join(missing)}")


def _count(shapes: Shapes, prefix: str) -> int:
    """Number of blocks ``prefix.<i>.`` present."""
    indices = {int(k.split(".")[1]) for k in shapes if k.startswith(prefix + ".")}
    return max(indices) + 1 if indices else 0


def _has_upsampler(shapes: Shapes, block: int) -> bool:
    """Whether ``output_blocks.<block>`` ends with an Upsample conv or an up-ResBlock."""
    prefix = f"output_blocks.{block}."
    return any(
        k.startswith(prefix) and k.split(".")[2] != "0" and (".conv." in k or ".in_layers." in k) for k in shapes
    )


def _level_layout(shapes: Shapes, model_channels: int, per_level: int, levels: int) -> dict[str, Any]:
    """Per-level facts read off the encoder: widths, attention levels, resampling and norm style."""
    first = [1 + level * per_level for level in range(levels)]  # first ResBlock of every level
    widths = [shapes[f"input_blocks.{i}.0.out_layers.3.weight"][0] for i in first]
    emb_width = shapes["input_blocks.1.0.emb_layers.1.weight"][0]
    return dict(
        channel_mult=tuple(_number(w / model_channels) for w in widths),
        attention_levels=[lv for lv, i in enumerate(first) if f"input_blocks.{i}.1.qkv.weight" in shapes],
        resblock_updown=levels > 1 and f"input_blocks.{per_level}.0.in_layers.2.weight" in shapes,
        use_scale_shift_norm=emb_width == 2 * widths[0],
    )


def _guess_image_size(channel_mult: tuple, attention_levels: list[int]) -> int:
    """Official layouts: the default channel_mult of a size, or attention down to 8x8 ("32,16,8")."""
    for size, mult in DEFAULT_CHANNEL_MULT.items():
        if mult == channel_mult:
            return size
    if attention_levels:
        return 8 * 2 ** max(attention_levels)
    raise CheckpointError("cannot guess image_size from the weights (no attention, non-default channel_mult); pass "
                          "image_size (--unet-config image_size=N, or in a config file beside the checkpoint)")


def _official_heads(model_channels: int, layout: dict[str, Any], num_res_blocks: int) -> dict[str, Any]:
    """Head settings are invisible in the weights; reproduce the released models' flags.

    128x128_diffusion.pt (C=256, mult 1,1,2,3,4): num_heads=4. 64x64_diffusion.pt (C=192, mult 1,2,3,4,
    3 blocks): num_head_channels=64 with the new q/k/v order. Everything else released: 64-wide heads.
    Layouts with attention widths that are not multiples of 64 fall back to 4 heads (or 1).
    """
    mult = layout["channel_mult"]
    widths = [int(mult[lv] * model_channels) for lv in layout["attention_levels"]] + [int(mult[-1] * model_channels)]
    new_order = model_channels == 192 and mult == (1, 2, 3, 4) and num_res_blocks == 3
    if (model_channels, mult) == (256, (1, 1, 2, 3, 4)) or any(w % 64 for w in widths):
        heads = 4 if all(w % 4 == 0 for w in widths) else 1
        return dict(num_heads=heads, num_head_channels=-1, use_new_attention_order=new_order)
    return dict(num_heads=4, num_head_channels=64, use_new_attention_order=new_order)


def _attention_resolutions(image_size: int, attention_levels: list[int]) -> tuple[int, ...]:
    return tuple(image_size // 2**level for level in attention_levels)


def _apply(config: Config, overrides: Mapping[str, Any]) -> Config:
    try:
        return config.replace(**overrides) if overrides else config
    except ValueError as error:
        raise CheckpointError(str(error)) from None


def infer_unet_config(state_dict: Mapping[str, torch.Tensor], image_size: int | None = None, **overrides: Any) -> UNetConfig:
    """The UNetConfig of any guided-diffusion UNet state dict, read off its keys and shapes.

    Read from the weights: widths (model_channels, channel_mult), num_res_blocks, attention levels,
    resblock_updown, use_scale_shift_norm, class_cond/num_classes, learn_sigma, in_channels.
    Not in the weights: ``image_size`` (argument, else guessed from the official layouts), the head
    settings and ``use_new_attention_order`` (the released models' flags, see :func:`_official_heads`),
    dropout and use_fp16. ``overrides`` (UNetConfig fields) replace any inferred value.
    """
    shapes = _shapes(state_dict)
    _require(shapes, "time_embed.0.weight", "input_blocks.0.0.weight", "out.2.weight", "output_blocks.0.0.in_layers.0.weight")
    model_channels = shapes["time_embed.0.weight"][1]
    in_channels = shapes["input_blocks.0.0.weight"][1]
    blocks = _count(shapes, "output_blocks")
    first_up = next((j for j in range(blocks) if _has_upsampler(shapes, j)), blocks - 1)
    per_level = first_up + 1
    layout = _level_layout(shapes, model_channels, per_level, blocks // per_level)
    size = image_size or _guess_image_size(layout["channel_mult"], layout["attention_levels"])
    config = UNetConfig(
        image_size=size,
        model_channels=model_channels,
        num_res_blocks=per_level - 1,
        attention_resolutions=_attention_resolutions(size, layout["attention_levels"]),
        channel_mult=layout["channel_mult"],
        in_channels=in_channels,
        learn_sigma=shapes["out.2.weight"][0] == 2 * in_channels,
        class_cond="label_emb.weight" in shapes,
        num_classes=shapes.get("label_emb.weight", (1000,))[0],
        use_scale_shift_norm=layout["use_scale_shift_norm"],
        resblock_updown=layout["resblock_updown"],
        **_official_heads(model_channels, layout, per_level - 1),
    )
    return _apply(config, overrides)


def _classifier_candidate(shapes: Shapes, size: int, mult: tuple, overrides: Mapping[str, Any]) -> ClassifierConfig | None:
    """The classifier config for one (image_size, channel_mult) hypothesis, if the weights fit it."""
    width = shapes["time_embed.0.weight"][1]
    levels = len(mult)
    blocks = _count(shapes, "input_blocks")
    if blocks % levels or blocks // levels < 2:
        return None
    per_level = blocks // levels
    try:
        layout = _level_layout(shapes, width, per_level, levels)
    except KeyError:
        return None
    pool = "attention" if "out.2.c_proj.weight" in shapes else "adaptive"
    logits = shapes.get("out.2.c_proj.weight", shapes.get("out.3.weight", (1000,)))[0]
    config = ClassifierConfig(
        image_size=size, width=width, depth=per_level - 1,
        attention_resolutions=_attention_resolutions(size, layout["attention_levels"]),
        use_scale_shift_norm=layout["use_scale_shift_norm"], resblock_updown=layout["resblock_updown"],
        pool=pool, channel_mult=mult, in_channels=shapes["input_blocks.0.0.weight"][1], num_classes=logits,
    )
    try:
        config = config.replace(**overrides)
        return config if expected_shapes(config) == shapes else None
    except ValueError:
        return None


def infer_classifier_config(state_dict: Mapping[str, torch.Tensor], image_size: int | None = None, **overrides: Any) -> ClassifierConfig:
    """The ClassifierConfig of a guided-diffusion classifier state dict.

    The classifier has no decoder to reveal its level structure, so every official
    (image_size, channel_mult) pair (or the given ``image_size`` / ``channel_mult``) is tried and
    the one whose model has exactly these keys and shapes is returned; ambiguity is an error.
    """
    shapes = _shapes(state_dict)
    _require(shapes, "time_embed.0.weight", "input_blocks.0.0.weight", "input_blocks.1.0.in_layers.0.weight")
    sizes = [image_size] if image_size else list(DEFAULT_CHANNEL_MULT)
    given_mult = _numbers(overrides.pop("channel_mult", None))
    hypotheses = [(s, given_mult or DEFAULT_CHANNEL_MULT.get(s, ())) for s in sizes]
    found = [c for s, m in hypotheses if m and (c := _classifier_candidate(shapes, s, m, overrides))]
    if len(found) != 1:
        what = "no" if not found else "several"
        raise CheckpointError(f"{what} classifier layout fits these weights (tried image_size {sizes}); pass image_size/channel_mult")
    return found[0]


_NETWORK_KEYS = ("time_embed.0.weight", "input_blocks.0.0.weight")  # every ADM UNet and classifier has these


def detect_kind(state_dict: Mapping[str, torch.Tensor]) -> str:
    """"unet" if the weights have a decoder (output_blocks), "classifier" if they are an encoder with a head;
    a :class:`CheckpointError` for weights of anything else (naming a few of their keys)."""
    keys = list(state_dict)
    if not all(k in state_dict for k in _NETWORK_KEYS):
        raise CheckpointError(f"not a guided-diffusion UNet or classifier: no {' / '.join(_NETWORK_KEYS)} among "
                              f"its {len(keys)} tensors (first keys: {_first(sorted(keys))})")
    if any(k.startswith("output_blocks.") for k in keys):
        return "unet"
    if any(k.startswith("out.") for k in keys):
        return "classifier"
    raise CheckpointError(f"not a guided-diffusion UNet or classifier: an encoder without output_blocks or an out "
                          f"head ({len(keys)} tensors)")


# ----------------------------------------------------------------------------------------------
# Reading and writing checkpoints


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


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> tuple[dict[str, torch.Tensor], Any]:
    """(state dict, stored config record or None) of a ``.pt`` or ``.safetensors`` file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            return _read_safetensors(path, map_location)
        return _unwrap(torch.load(path, map_location=map_location, weights_only=True))
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


# Settings that change a UNet's outputs but leave no trace in its weights: inference can only guess them.
UNET_UNDETERMINED = ("num_heads", "num_head_channels", "num_heads_upsample", "use_new_attention_order")
SIDECAR_SUFFIXES = (".json", ".yaml", ".yml")


def guessed_settings(config: Config, given: Mapping[str, Any]) -> tuple[str, ...]:
    """The attention-head settings of an inferred UNet ``config`` that were guessed, not ``given``.

    With ``num_head_channels`` given (not -1) the head count follows from it, so num_heads and num_heads_upsample
    do not matter; otherwise every head setting not given is a guess.
    """
    if not isinstance(config, UNetConfig):
        return ()
    missing = [name for name in UNET_UNDETERMINED if name not in given]
    if "num_head_channels" in given and config.num_head_channels != -1:
        missing = [name for name in missing if name not in ("num_heads", "num_heads_upsample")]
    return tuple(missing)


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
    aliases = {**_UNET_KWARGS, **_CLASSIFIER_KWARGS}
    return {aliases.get(str(key), str(key)): value for key, value in data.items()}


def _choose_config(state_dict, stored, preset, kind, overrides) -> tuple[Config, str]:
    """Explicit preset > stored config > inference; returns (config, how it was chosen)."""
    if preset is not None:
        chosen = get_preset(preset) if isinstance(preset, str) else preset
        if kind is not None and kind != chosen.kind:
            raise CheckpointError(f"preset {chosen.name!r} is a {chosen.kind}, not a {kind}")
        return _apply(chosen.config, overrides), f"preset {chosen.name!r}"
    if stored is not None:
        return _apply(config_from_record(stored, kind or detect_kind(state_dict)), overrides), "stored config"
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
    with torch.device(map_location):
        model = build_model(config)
    model.load_state_dict(state_dict, strict=True)
    return model.eval(), config


def save_checkpoint(
    model: nn.Module, config: Config, path: str | Path, half: bool = False,
    diffusion: DiffusionSettings | None = None, extra: Mapping[str, str] | None = None,
) -> Path:
    """Write ``model``'s weights as safetensors with ``config`` (and the training ``diffusion``) in the metadata.

    ``half`` stores float16; ``extra`` adds further string metadata (e.g. training step).
    """
    from safetensors.torch import save

    from .files import atomic_write

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    problem = describe_mismatch(_shapes(state), expected_shapes(config))
    if problem:
        raise CheckpointError(f"model does not match {_summary(config)}: {problem}")
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    path = Path(path)
    metadata = {METADATA_KEY: json.dumps(config_record(config, diffusion)), **(extra or {})}
    return atomic_write(path, save(state, metadata=metadata))

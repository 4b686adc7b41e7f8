"""Typed configurations of the networks, and the noise process a network was trained with.

* :class:`UNetConfig`, :class:`ClassifierConfig`: pure architecture, frozen, ``to_dict``/``from_dict`` (unknown keys
  are an error); :func:`build_model` makes the network of one.
* :class:`DiffusionSettings`: the forward process a UNet was trained with (stored with its weights).
* :func:`config_from_official_kwargs`: guided-diffusion ``create_model`` / ``create_classifier`` keyword arguments
  (``num_channels``, ``"32,16,8"`` strings, ``classifier_*``) -> our configs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

from torch import nn

from ..diffusion import DiffusionConfig
from .classifier import EncoderUNetModel
from .unet import UNetModel

__all__ = [
    "DEFAULT_CHANNEL_MULT", "UNetConfig", "ClassifierConfig", "DiffusionSettings", "Config", "config_kind",
    "build_model", "default_channel_mult", "config_from_official_kwargs", "OFFICIAL_NAMES",
]

# Official default widths per level, by image size (used when channel_mult is empty).
DEFAULT_CHANNEL_MULT: dict[int, tuple[float, ...]] = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}


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
        raise ValueError(
            f"no default channel_mult for image_size={image_size} (defaults exist for {sizes}); pass channel_mult")
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
    required = {f.name for f in dataclasses.fields(config_class)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    given = {names[k] for k in kwargs if k in names}
    missing = [official for official, ours in names.items() if ours in required - given]
    if missing:
        raise ValueError(f"the architecture is not given: {', '.join(missing)} missing (the arguments of "
                         f"guided-diffusion's {'create_classifier' if is_classifier else 'create_model'})")
    return config_class.from_dict({names[k]: v for k, v in kwargs.items() if k in names})


OFFICIAL_NAMES = {**_UNET_KWARGS, **_CLASSIFIER_KWARGS}  # guided-diffusion flag name -> config field

"""An architecture from a state dict's keys and shapes: :func:`infer_unet_config`, :func:`infer_classifier_config`,
:func:`detect_kind`, and which head settings an inference had to guess (:func:`guessed_settings`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..models.config import DEFAULT_CHANNEL_MULT, ClassifierConfig, Config, UNetConfig, _number, _numbers
from .formats import CheckpointError, Shapes, _first, _shapes, expected_shapes

__all__ = ["infer_unet_config", "infer_classifier_config", "detect_kind", "guessed_settings", "UNET_UNDETERMINED",
           "apply_overrides"]


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


def apply_overrides(config: Config, overrides: Mapping[str, Any]) -> Config:
    try:
        return config.replace(**overrides) if overrides else config
    except ValueError as error:
        raise CheckpointError(str(error)) from None


def infer_unet_config(state_dict: Mapping[str, torch.Tensor], image_size: int | None = None,
                      **overrides: Any) -> UNetConfig:
    """The UNetConfig of any guided-diffusion UNet state dict, read off its keys and shapes.

    Read from the weights: widths (model_channels, channel_mult), num_res_blocks, attention levels,
    resblock_updown, use_scale_shift_norm, class_cond/num_classes, learn_sigma, in_channels.
    Not in the weights: ``image_size`` (argument, else guessed from the official layouts), the head
    settings and ``use_new_attention_order`` (the released models' flags, see :func:`_official_heads`),
    dropout and use_fp16. ``overrides`` (UNetConfig fields) replace any inferred value.
    """
    shapes = _shapes(state_dict)
    _require(shapes, "time_embed.0.weight", "input_blocks.0.0.weight", "out.2.weight",
             "output_blocks.0.0.in_layers.0.weight")
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
    return apply_overrides(config, overrides)


def _classifier_candidate(shapes: Shapes, size: int, mult: tuple,
                          overrides: Mapping[str, Any]) -> ClassifierConfig | None:
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


def infer_classifier_config(state_dict: Mapping[str, torch.Tensor], image_size: int | None = None,
                            **overrides: Any) -> ClassifierConfig:
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
        raise CheckpointError(
            f"{what} classifier layout fits these weights (tried image_size {sizes}); pass image_size/channel_mult")
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


# Settings that change a UNet's outputs but leave no trace in its weights: inference can only guess them.
UNET_UNDETERMINED = ("num_heads", "num_head_channels", "num_heads_upsample", "use_new_attention_order")


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

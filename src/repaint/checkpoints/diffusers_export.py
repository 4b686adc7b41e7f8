"""Our ADM UNet checkpoints written as diffusers folders (``unet/`` + ``scheduler/``) that ``UNet2DModel`` loads.

The ADM UNet (guided-diffusion) and diffusers' ``UNet2DModel`` are the same network family: per level
``num_res_blocks`` ResBlocks (+ attention) and a resampler on the way down, one block more on the way up, skip
connections between them, a ResBlock-attention-ResBlock middle, sinusoidal timestep features laid out as
[cos, sin] with frequencies ``10000^(-i/half)``. The export maps every weight one to one:

==========================================  =====================================================
ours                                        UNet2DModel
==========================================  =====================================================
time_embed.0 / .2, label_emb                time_embedding.linear_1 / linear_2, class_embedding
input_blocks.0.0                            conv_in
ResBlock in/emb/out layers, skip            resnets.i norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut
AttentionBlock norm, qkv, proj_out          attentions.i group_norm, to_q/to_k/to_v, to_out.0
Downsample op / Upsample conv               downsamplers.0.conv / upsamplers.0.conv
out.0 / out.2                               conv_norm_out / conv_out
==========================================  =====================================================

The qkv weight is split per head: the legacy order groups the 3C rows as (q, k, v) blocks of one head after another,
the new order as q of every head, then k, then v; diffusers wants q, k and v as three C x C matrices whose row blocks
are the heads. What ``UNet2DModel`` cannot express is refused with one :class:`CheckpointError`: a first level wider
than ``model_channels`` (its timestep features are ``block_out_channels[0]`` wide) and attention layers of different
head widths (it has one ``attention_head_dim``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .diffusers_adapter import _diffusers
from ..models.config import DiffusionSettings, UNetConfig
from ..models.nn import AttentionBlock, Downsample, ResBlock, Upsample
from .formats import CheckpointError

__all__ = ["diffusers_state_dict", "diffusers_unet_config", "export_diffusers", "scheduler_config"]

_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}


def _attention_layers(model: nn.Module) -> list[AttentionBlock]:
    return [m for m in model.modules() if isinstance(m, AttentionBlock)]


def diffusers_unet_config(config: UNetConfig, model: nn.Module) -> dict[str, Any]:
    """``UNet2DModel(**kwargs)`` for the ADM UNet ``model`` built from ``config``; CheckpointError if inexpressible."""
    widths = [int(m * config.model_channels) for m in config.channel_mult]
    if any(w != m * config.model_channels for w, m in zip(widths, config.channel_mult)):
        raise CheckpointError(
            f"channel_mult {config.channel_mult} gives fractional widths; UNet2DModel cannot express it")
    if widths[0] != config.model_channels:
        raise CheckpointError(f"the first level is {widths[0]} wide but the timestep features are "
                              f"{config.model_channels}; UNet2DModel ties the two (channel_mult[0] must be 1)")
    head_dims = sorted({m.norm.num_channels // m.heads for m in _attention_layers(model)})
    if len(head_dims) != 1:
        raise CheckpointError(f"attention layers with head widths {head_dims}; UNet2DModel has one attention_head_dim")
    attention = {level for level, _ in _levels_with_attention(model, config.num_res_blocks + 1)}
    updown = config.resblock_updown
    down = [("AttnDownBlock2D" if lv in attention else "ResnetDownsampleBlock2D" if updown else "DownBlock2D")
            for lv in range(len(widths))]
    up = [("AttnUpBlock2D" if lv in attention else "ResnetUpsampleBlock2D" if updown else "UpBlock2D")
          for lv in reversed(range(len(widths)))]
    return dict(
        sample_size=config.image_size, in_channels=config.in_channels, out_channels=config.out_channels,
        layers_per_block=config.num_res_blocks, block_out_channels=widths,
        down_block_types=down, up_block_types=up,
        attention_head_dim=head_dims[0], norm_num_groups=32, norm_eps=1e-5, attn_norm_num_groups=32,
        resnet_time_scale_shift="scale_shift" if config.use_scale_shift_norm else "default",
        flip_sin_to_cos=True, freq_shift=0, time_embedding_type="positional", act_fn="silu",
        downsample_padding=1, downsample_type="resnet" if updown else "conv",
        upsample_type="resnet" if updown else "conv", dropout=config.dropout,
        num_class_embeds=config.num_classes if config.class_cond else None,
    )


def _levels_with_attention(model: nn.Module, per_level: int) -> list[tuple[int, int]]:
    """(level, index in level) of every encoder block holding attention."""
    return [(lv, i) for lv, i, block in _encoder_blocks(model, per_level)
            if any(isinstance(m, AttentionBlock) for m in block)]


def _encoder_blocks(model: nn.Module, per_level: int):
    """(level, index within the level, block) of input_blocks[1:]: ``per_level - 1`` ResBlocks then a resampler."""
    for n, block in enumerate(model.input_blocks[1:]):
        level, i = divmod(n, per_level)
        yield level, i, block


def _resamples(layer: nn.Module) -> bool:
    return isinstance(layer, ResBlock) and not isinstance(layer.resample_h, nn.Identity)


def _resnet(prefix: str, block: ResBlock) -> dict[str, torch.Tensor]:
    names = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
             "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}
    out = {}
    for key, value in block.state_dict().items():
        module, param = key.rsplit(".", 1)
        if module not in names:
            raise CheckpointError(f"ResBlock weight {key} has no UNet2DModel counterpart")
        out[f"{prefix}.{names[module]}.{param}"] = value
    return out


def _attention(prefix: str, block: AttentionBlock) -> dict[str, torch.Tensor]:
    channels, heads = block.norm.num_channels, block.heads
    width = channels // heads
    qkv_w, qkv_b = block.qkv.weight[:, :, 0], block.qkv.bias
    if block.legacy_order:  # rows: head 0 (q, k, v), head 1 (q, k, v), ...
        parts_w = qkv_w.reshape(heads, 3, width, channels).transpose(0, 1).reshape(3, channels, channels)
        parts_b = qkv_b.reshape(heads, 3, width).transpose(0, 1).reshape(3, channels)
    else:  # rows: q (all heads), k, v
        parts_w, parts_b = qkv_w.reshape(3, channels, channels), qkv_b.reshape(3, channels)
    out = {f"{prefix}.group_norm.weight": block.norm.weight, f"{prefix}.group_norm.bias": block.norm.bias,
           f"{prefix}.to_out.0.weight": block.proj_out.weight[:, :, 0], f"{prefix}.to_out.0.bias": block.proj_out.bias}
    for n, name in enumerate(("to_q", "to_k", "to_v")):
        out[f"{prefix}.{name}.weight"], out[f"{prefix}.{name}.bias"] = parts_w[n], parts_b[n]
    return out


def _layers(prefix: str, index: int, block: nn.Module, resampler: str) -> dict[str, torch.Tensor]:
    """One EmbedSequential of ResBlock [+ attention] [+ resampler] (or a lone resampler)."""
    out = {}
    for layer in block:
        if _resamples(layer):
            out |= _resnet(f"{prefix}.{resampler}.0", layer)
        elif isinstance(layer, ResBlock):
            out |= _resnet(f"{prefix}.resnets.{index}", layer)
        elif isinstance(layer, AttentionBlock):
            out |= _attention(f"{prefix}.attentions.{index}", layer)
        elif isinstance(layer, (Downsample, Upsample)):
            out |= {f"{prefix}.{resampler}.0.conv.{k.split('.')[-1]}": v for k, v in layer.state_dict().items()}
        else:
            raise CheckpointError(f"{type(layer).__name__} has no UNet2DModel counterpart")
    return out


def diffusers_state_dict(config: UNetConfig, model: nn.Module) -> dict[str, torch.Tensor]:
    """Our UNet's weights under UNet2DModel's names (the table in the module docstring)."""
    te = model.time_embed
    out = {"time_embedding.linear_1.weight": te[0].weight, "time_embedding.linear_1.bias": te[0].bias,
           "time_embedding.linear_2.weight": te[2].weight, "time_embedding.linear_2.bias": te[2].bias,
           "conv_in.weight": model.input_blocks[0][0].weight, "conv_in.bias": model.input_blocks[0][0].bias,
           "conv_norm_out.weight": model.out[0].weight, "conv_norm_out.bias": model.out[0].bias,
           "conv_out.weight": model.out[2].weight, "conv_out.bias": model.out[2].bias}
    if config.class_cond:
        out["class_embedding.weight"] = model.label_emb.weight
    for level, i, block in _encoder_blocks(model, config.num_res_blocks + 1):
        out |= _layers(f"down_blocks.{level}", i, block, "downsamplers")
    mid = model.middle_block
    out |= _resnet("mid_block.resnets.0", mid[0]) | _attention("mid_block.attentions.0", mid[1])
    out |= _resnet("mid_block.resnets.1", mid[2])
    per_level = config.num_res_blocks + 1
    for n, block in enumerate(model.output_blocks):
        out |= _layers(f"up_blocks.{n // per_level}", n % per_level, block, "upsamplers")
    return {k: v.detach().float().contiguous() for k, v in out.items()}


def scheduler_config(trained: DiffusionSettings) -> dict[str, Any]:
    """The DDPMScheduler config of our training diffusion (what :func:`scheduler_settings` maps back)."""
    linear = trained.noise_schedule != "cosine"
    scale = 1000 / trained.steps
    return dict(
        num_train_timesteps=trained.steps, beta_schedule=_SCHEDULES[trained.noise_schedule],
        beta_start=(trained.beta_start if trained.beta_start is not None else scale * 0.0001) if linear else 0.0001,
        beta_end=(trained.beta_end if trained.beta_end is not None else scale * 0.02) if linear else 0.02,
        variance_type="learned_range" if trained.learn_sigma else f"fixed_{trained.fixed_variance}",
        prediction_type="epsilon", clip_sample=trained.clip_sample,
    )


def export_diffusers(source: str | Path, out_dir: str | Path) -> Path:
    """Write our UNet ``source`` ("default", a preset name or a checkpoint file, as ``--model`` takes) as a diffusers
    pipeline-style folder ``out_dir``: ``unet/`` (``config.json`` + ``diffusion_pytorch_model.safetensors``) and
    ``scheduler/scheduler_config.json`` (a DDPMScheduler of the model's training diffusion).

    The folder is assembled beside ``out_dir`` and moved into place only when complete; an existing ``out_dir`` is an
    error. Returns ``out_dir``. Load it with ``UNet2DModel.from_pretrained(out_dir / "unet")`` or ``--model out_dir``.
    """
    from .load import load_denoiser

    out_dir = Path(out_dir)
    if out_dir.exists():
        raise CheckpointError(f"{out_dir} exists; choose a new folder")
    diffusers = _diffusers()
    model, config, trained = load_denoiser(str(source))
    if not isinstance(config, UNetConfig):
        raise CheckpointError(f"{source} is already a diffusers folder")
    unet = diffusers.UNet2DModel(**diffusers_unet_config(config, model))
    weights = diffusers_state_dict(config, model)
    missing, unexpected = _compare(unet.state_dict(), weights)
    if missing or unexpected:
        raise CheckpointError(
            f"the export does not fill UNet2DModel: missing {missing[:3]}, unexpected {unexpected[:3]}")
    unet.load_state_dict(weights, strict=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.") as tmp:
        staging = Path(tmp) / "folder"
        unet.save_pretrained(staging / "unet")
        diffusers.DDPMScheduler(**scheduler_config(trained)).save_pretrained(staging / "scheduler")
        shutil.move(str(staging), str(out_dir))
    return out_dir


def _compare(expected: dict, got: dict) -> tuple[list[str], list[str]]:
    missing = sorted(k for k in expected if k not in got or tuple(expected[k].shape) != tuple(got[k].shape))
    return missing, sorted(k for k in got if k not in expected)

"""Building blocks shared by the ADM UNet and the noisy-image classifier.

Module and attribute names are chosen so that ``state_dict()`` keys match the
released guided-diffusion / RePaint checkpoints (``in_layers.2``, ``emb_layers.1``,
``out_layers.3``, ``skip_connection``, ``qkv``, ``proj_out``, ``op``, ``conv``).
Tensors are NCHW; ``emb`` is the [B, E] timestep (+ class) embedding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

GROUPS = 32  # every normalisation layer is a 32-group GroupNorm


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32, C) evaluated in float32 whatever the input or parameter dtype."""

    def __init__(self, channels: int):
        super().__init__(GROUPS, channels, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float()
        bias = self.bias.float()
        out = F.group_norm(x.float(), self.num_groups, weight, bias, self.eps)
        return out.to(x.dtype)


class GroupNormForCompile(GroupNorm32):
    """:class:`GroupNorm32` written so that ``torch.compile`` makes fast kernels of it on channels-last tensors.

    The same function (float32 statistics, biased variance, output in the input's dtype), computed from per-channel
    moments: a reduction over H x W for each (image, channel) reads a channels-last tensor with unit stride across
    channels, where the group-wise reduction of ``F.group_norm`` strides through memory (on an H200, half of a
    compiled 256x256 ADM call went to those). Two passes (mean, then squared deviations from the group mean), so the
    variance is as accurate as the library's. Used only by :func:`repaint.accel.accelerate` for compiled calls;
    the eager and reference paths keep :class:`GroupNorm32`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        per_group = c // self.num_groups
        xf = x.float()
        dims = tuple(range(2, x.dim()))
        mean = xf.mean(dim=dims).view(n, self.num_groups, per_group).mean(-1, keepdim=True)  # [N, G, 1]
        mean_c = mean.expand(n, self.num_groups, per_group).reshape(n, c)
        deviation = xf - mean_c.view(n, c, *(1,) * len(dims))
        var = (deviation * deviation).mean(dim=dims).view(n, self.num_groups, per_group).mean(-1, keepdim=True)
        rstd = torch.rsqrt(var + self.eps).expand(n, self.num_groups, per_group).reshape(n, c)
        scale = rstd * self.weight.float()
        shift = self.bias.float() - mean_c * scale
        view = (n, c, *(1,) * len(dims))
        return (xf * scale.view(view) + shift.view(view)).to(x.dtype)


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [B] -> [B, dim] float32, laid out as ``[cos(t f), sin(t f)]``.

    ``f_i = max_period ** (-i / half)`` for ``i = 0 .. half-1``, ``half = dim // 2``;
    an odd ``dim`` gets one trailing zero column.
    """
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    freqs = torch.exp(-math.log(max_period) * exponent)
    angles = timesteps.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def time_mlp(model_channels: int) -> nn.Sequential:
    """Linear -> SiLU -> Linear, ``model_channels`` -> ``4 * model_channels``."""
    width = 4 * model_channels
    return nn.Sequential(nn.Linear(model_channels, width), nn.SiLU(), nn.Linear(width, width))


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


class EmbedSequential(nn.Sequential):
    """A sequence of layers; those that take the embedding (ResBlock) receive it."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class Downsample(nn.Module):
    """Halve H and W: stride-2 3x3 conv (``op``) or, without weights, 2x2 average pooling."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.op = conv3x3(channels, channels, stride=2) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour x2, then a 3x3 conv (``conv``) if ``use_conv``."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.conv = conv3x3(channels, channels) if use_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return x if self.conv is None else self.conv(x)


def _resample(channels: int, up: bool, down: bool) -> nn.Module:
    if up:
        return Upsample(channels, use_conv=False)
    if down:
        return Downsample(channels, use_conv=False)
    return nn.Identity()


class ResBlock(nn.Module):
    """Residual block conditioned on the embedding.

    in_layers:  GroupNorm -> SiLU -> [resample] -> conv3x3
    emb_layers: SiLU -> Linear (2*cout for scale-shift, else cout)
    out_layers: GroupNorm -> (x(1+scale)+shift | +emb before the norm) -> SiLU -> Dropout -> conv3x3
    The skip path is resampled likewise and projected by a 1x1 conv when the width changes.
    """

    def __init__(
        self,
        channels: int,                # input width
        emb_channels: int,            # width of the timestep embedding
        out_channels: int,            # output width
        dropout: float = 0.0,         # dropout before the last conv
        use_scale_shift_norm: bool = False,  # FiLM (scale, shift) instead of an additive embedding
        up: bool = False,             # nearest x2 upsampling inside the block
        down: bool = False,           # 2x2 average pooling inside the block
    ):
        super().__init__()
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(), conv3x3(channels, out_channels))
        self.resample_h = _resample(channels, up, down)
        self.resample_x = _resample(channels, up, down)
        emb_out = 2 * out_channels if use_scale_shift_norm else out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_out))
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels), nn.SiLU(), nn.Dropout(dropout), conv3x3(out_channels, out_channels)
        )
        same = out_channels == channels
        self.skip_connection = nn.Identity() if same else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        norm_act, conv = self.in_layers[:-1], self.in_layers[-1]
        h = conv(self.resample_h(norm_act(x)))
        x = self.resample_x(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        norm, rest = self.out_layers[0], self.out_layers[1:]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = rest(norm(h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


def attention_heads(channels: int, num_heads: int, num_head_channels: int) -> int:
    """Head count: ``channels // num_head_channels`` unless that is -1, then ``num_heads``."""
    if num_head_channels == -1:
        heads = num_heads
    else:
        if channels % num_head_channels:
            raise ValueError(f"{channels} channels are not a multiple of num_head_channels={num_head_channels}")
        heads = channels // num_head_channels
    if heads < 1 or channels % heads:
        raise ValueError(f"{channels} channels cannot be split into {heads} attention heads")
    return heads


def qkv_attention(qkv: torch.Tensor, heads: int, legacy_order: bool) -> torch.Tensor:
    """Multi-head self-attention over the last axis: [B, 3*C, T] -> [B, C, T].

    ``legacy_order``: the 3*C channels are grouped per head as (q, k, v) blocks
    (heads split first); otherwise they are (q, k, v) blocks each split into heads.
    The scale is SDPA's default 1/sqrt(head width) (= (ch**-0.25)**2 on q and k).
    """
    batch, width, length = qkv.shape
    ch = width // (3 * heads)
    if legacy_order:
        q, k, v = qkv.reshape(batch, heads, 3 * ch, length).split(ch, dim=2)
    else:
        q, k, v = qkv.reshape(batch, 3, heads, ch, length).unbind(dim=1)
    # [B, heads, T, ch], made contiguous: SDPA's fused (flash / memory-efficient) kernels need the last dimension
    # at stride 1 and silently fall back to the unfused maths kernel otherwise.
    q, k, v = (t.transpose(-1, -2).contiguous() for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(-1, -2).reshape(batch, heads * ch, length)


class AttentionBlock(nn.Module):
    """Residual spatial self-attention: x + proj_out(attention(qkv(norm(x))))."""

    def __init__(
        self,
        channels: int,                # width of the feature map
        num_heads: int = 1,           # used when num_head_channels == -1
        num_head_channels: int = -1,  # fixed head width, overrides num_heads
        new_order: bool = False,      # q/k/v split before heads (QKVAttention) vs legacy
    ):
        super().__init__()
        self.heads = attention_heads(channels, num_heads, num_head_channels)
        self.legacy_order = not new_order
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        h = qkv_attention(self.qkv(self.norm(x)), self.heads, self.legacy_order)
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


class AttentionPool2d(nn.Module):
    """Attention pooling: the spatial-mean token attends to all tokens; returns [B, out_channels].

    A learned positional embedding [C, 1 + S*S] is added, q/k/v come from a 1x1 conv and
    are split in the new (q, k, v first) order, then a 1x1 conv projects token 0.
    """

    def __init__(self, spatial_size: int, channels: int, num_head_channels: int, out_channels: int):
        super().__init__()
        tokens = spatial_size**2 + 1
        self.positional_embedding = nn.Parameter(torch.randn(channels, tokens) / channels**0.5)
        self.qkv_proj = nn.Conv1d(channels, 3 * channels, 1)
        self.c_proj = nn.Conv1d(channels, out_channels, 1)
        self.heads = attention_heads(channels, 1, num_head_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        x = x.reshape(b, c, -1)
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1)
        x = x + self.positional_embedding[None].to(x.dtype)
        x = qkv_attention(self.qkv_proj(x), self.heads, legacy_order=False)
        return self.c_proj(x)[:, :, 0]


def module_dtype(module: nn.Module) -> torch.dtype:
    """dtype of a module's first parameter (float32 if it has none)."""
    param = next(module.parameters(), None)
    return torch.float32 if param is None else param.dtype


def convert_convs(module: nn.Module, dtype: torch.dtype) -> None:
    """Cast the weights and biases of every Conv1d/Conv2d inside ``module`` to ``dtype``.

    This is the reference's ``use_fp16`` mode: only the torso's convolutions run in half
    precision, normalisation and the embedding MLPs stay in float32.
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Conv1d, nn.Conv2d)):
            layer.to(dtype)

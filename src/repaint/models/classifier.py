"""The noisy-image classifier of guided diffusion: the UNet encoder plus a pooling head.

``forward(x, timesteps)`` -> logits [B, num_classes]. Same encoder and middle block as
:class:`~repaint.models.unet.UNetModel` (same state_dict names), then
``out`` = GroupNorm -> SiLU -> pooling head:

* ``"attention"``: :class:`AttentionPool2d` (``out.2.positional_embedding``, ``out.2.qkv_proj``,
  ``out.2.c_proj``), as in the released 256x256_classifier.pt;
* ``"adaptive"``: global average pooling -> 1x1 conv (``out.3``) -> flatten.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .nn import (
    AttentionBlock,
    AttentionPool2d,
    Downsample,
    EmbedSequential,
    GroupNorm32,
    ResBlock,
    conv3x3,
    convert_convs,
    module_dtype,
    time_mlp,
    timestep_embedding,
)
from .unet import attention_rates

POOLS = ("attention", "adaptive")


def pooling_head(pool: str, channels: int, spatial_size: int, num_head_channels: int,
                 num_classes: int) -> nn.Sequential:
    """GroupNorm -> SiLU -> pooling to [B, num_classes]."""
    if pool == "attention":
        head = [AttentionPool2d(spatial_size, channels, num_head_channels, num_classes)]
    elif pool == "adaptive":
        head = [nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, num_classes, 1), nn.Flatten()]
    else:
        raise ValueError(f"unknown pool {pool!r}; expected one of {POOLS}")
    return nn.Sequential(GroupNorm32(channels), nn.SiLU(), *head)


class EncoderUNetModel(nn.Module):
    """Timestep-aware classifier: [B, in_channels, S, S] x [B] -> logits [B, num_classes]."""

    def __init__(
        self,
        image_size: int,                        # input resolution S (sizes the positional embedding)
        in_channels: int,                       # image channels
        model_channels: int,                    # base width C ("classifier_width")
        num_classes: int,                       # number of logits
        num_res_blocks: int,                    # ResBlocks per level ("classifier_depth")
        attention_resolutions: Sequence[int],   # feature-map sizes (pixels) with self-attention
        channel_mult: Sequence[float],          # width of each level, in units of C
        num_head_channels: int = 64,            # head width of every attention layer
        use_scale_shift_norm: bool = False,     # FiLM-style embedding in ResBlocks
        resblock_updown: bool = False,          # ResBlocks (not plain convs) downsample
        pool: str = "attention",                # pooling head, see POOLS
        dropout: float = 0.0,                   # dropout inside ResBlocks
    ):
        super().__init__()
        self.model_channels = model_channels
        emb_ch = 4 * model_channels
        rates = attention_rates(image_size, attention_resolutions)
        widths = [int(m * model_channels) for m in channel_mult]

        def res(cin: int, cout: int, **resample) -> ResBlock:
            return ResBlock(cin, emb_ch, cout, dropout, use_scale_shift_norm, **resample)

        def attn(ch: int) -> AttentionBlock:
            return AttentionBlock(ch, 1, num_head_channels)

        def down(ch: int) -> nn.Module:
            return res(ch, ch, down=True) if resblock_updown else Downsample(ch, use_conv=True)

        self.time_embed = time_mlp(model_channels)
        ch = widths[0]
        self.input_blocks = nn.ModuleList([EmbedSequential(conv3x3(in_channels, ch))])
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                layers = [res(ch, width)]
                ch = width
                if 2**level in rates:
                    layers.append(attn(ch))
                self.input_blocks.append(EmbedSequential(*layers))
            if level < len(widths) - 1:
                self.input_blocks.append(EmbedSequential(down(ch)))
        self.middle_block = EmbedSequential(res(ch, ch), attn(ch), res(ch, ch))
        final_size = image_size // 2 ** (len(widths) - 1)
        self.out = pooling_head(pool, ch, final_size, num_head_channels, num_classes)

    def convert_torso(self, dtype: torch.dtype) -> "EncoderUNetModel":
        """The reference's ``use_fp16`` mode: encoder/middle convs in ``dtype``."""
        convert_convs(self.input_blocks, dtype)
        convert_convs(self.middle_block, dtype)
        return self

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x [B, in_channels, S, S], timesteps [B] int -> logits [B, num_classes] in x.dtype."""
        t_emb = timestep_embedding(timesteps, self.model_channels)
        emb = self.time_embed(t_emb.to(module_dtype(self.time_embed)))
        h = x.to(module_dtype(self.input_blocks))
        for block in self.input_blocks:
            h = block(h, emb)
        h = self.middle_block(h, emb)
        return self.out(h.to(module_dtype(self.out))).to(x.dtype)

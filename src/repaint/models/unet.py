"""The ADM UNet of "Diffusion Models Beat GANs on Image Synthesis" (Dhariwal & Nichol, 2021).

Pure architecture: ``forward(x, timesteps, y=None)`` maps a noisy image and integer
timesteps (on the original 0..999 scale) to the raw network output; splitting the
learned variance off, timestep maps and guidance live elsewhere.

Layout (state_dict names of the released checkpoints):
  time_embed           sinusoidal(t) -> Linear -> SiLU -> Linear           [B, 4C]
  label_emb            class embedding added to it (class-conditional only)
  input_blocks.0       3x3 conv to int(channel_mult[0] * C)
  input_blocks.k       per level: num_res_blocks x (ResBlock [+ attention]), then a
                       downsampler (except at the last level)
  middle_block         ResBlock, attention, ResBlock
  output_blocks.k      per level, deepest first: (num_res_blocks + 1) x (ResBlock on the
                       concatenated skip [+ attention]), the last one followed by an upsampler
  out                  GroupNorm -> SiLU -> 3x3 conv to out_channels
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .nn import (
    AttentionBlock,
    Downsample,
    EmbedSequential,
    GroupNorm32,
    ResBlock,
    Upsample,
    conv3x3,
    convert_convs,
    module_dtype,
    time_mlp,
    timestep_embedding,
)


def attention_rates(image_size: int, attention_resolutions: Sequence[int]) -> set[int]:
    """Downsampling rates that get attention: ``image_size // r`` per resolution ``r``."""
    return {image_size // int(r) for r in attention_resolutions}


class UNetModel(nn.Module):
    """ADM UNet: [B, in_channels, H, W] x [B] (x [B] labels) -> [B, out_channels, H, W]."""

    def __init__(
        self,
        image_size: int,                        # training resolution; only used to place attention
        in_channels: int,                       # image channels
        model_channels: int,                    # base width C
        out_channels: int,                      # 2*in_channels when the variance is learned
        num_res_blocks: int,                    # ResBlocks per level on the way down
        attention_resolutions: Sequence[int],   # feature-map sizes (pixels) with self-attention
        channel_mult: Sequence[float] = (1, 2, 4, 8),  # width of each level, in units of C
        num_classes: int | None = None,         # class-conditional when set
        num_heads: int = 1,                     # heads when num_head_channels == -1
        num_head_channels: int = -1,            # fixed head width (overrides num_heads)
        num_heads_upsample: int = -1,           # heads in the decoder; -1 = num_heads
        use_scale_shift_norm: bool = False,     # FiLM-style embedding in ResBlocks
        resblock_updown: bool = False,          # ResBlocks (not plain convs) resample
        use_new_attention_order: bool = False,  # q/k/v split before heads
        dropout: float = 0.0,                   # dropout inside ResBlocks
    ):
        super().__init__()
        self.model_channels = model_channels
        self.num_classes = num_classes
        emb_ch = 4 * model_channels
        rates = attention_rates(image_size, attention_resolutions)
        widths = [int(m * model_channels) for m in channel_mult]

        def res(cin: int, cout: int, **resample) -> ResBlock:
            return ResBlock(cin, emb_ch, cout, dropout, use_scale_shift_norm, **resample)

        def attn(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(ch, heads, num_head_channels, use_new_attention_order)

        def down(ch: int) -> nn.Module:
            return res(ch, ch, down=True) if resblock_updown else Downsample(ch, use_conv=True)

        def up(ch: int) -> nn.Module:
            return res(ch, ch, up=True) if resblock_updown else Upsample(ch, use_conv=True)

        decoder_heads = num_heads if num_heads_upsample == -1 else num_heads_upsample
        self.time_embed = time_mlp(model_channels)
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb_ch)

        # Encoder: remember every block's output width; the decoder consumes them in reverse.
        ch = widths[0]
        self.input_blocks = nn.ModuleList([EmbedSequential(conv3x3(in_channels, ch))])
        skips = [ch]
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                layers = [res(ch, width)]
                ch = width
                if 2**level in rates:
                    layers.append(attn(ch, num_heads))
                self.input_blocks.append(EmbedSequential(*layers))
                skips.append(ch)
            if level < len(widths) - 1:
                self.input_blocks.append(EmbedSequential(down(ch)))
                skips.append(ch)

        self.middle_block = EmbedSequential(res(ch, ch), attn(ch, num_heads), res(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level in reversed(range(len(widths))):
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skips.pop(), widths[level])]
                ch = widths[level]
                if 2**level in rates:
                    layers.append(attn(ch, decoder_heads))
                if level > 0 and i == num_res_blocks:
                    layers.append(up(ch))
                self.output_blocks.append(EmbedSequential(*layers))

        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), conv3x3(widths[0], out_channels))

    def convert_torso(self, dtype: torch.dtype) -> "UNetModel":
        """The reference's ``use_fp16`` mode: encoder/middle/decoder convs in ``dtype``."""
        for part in (self.input_blocks, self.middle_block, self.output_blocks):
            convert_convs(part, dtype)
        return self

    def embed(self, timesteps: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """[B] timesteps (+ [B] labels) -> [B, 4C] embedding."""
        if self.num_classes is not None and y is None:
            raise ValueError("this UNet is class-conditional: pass class labels y of shape [B]")
        if self.num_classes is None and y is not None:
            raise ValueError("this UNet is not class-conditional: y must be None")
        t_emb = timestep_embedding(timesteps, self.model_channels)
        emb = self.time_embed(t_emb.to(module_dtype(self.time_embed)))
        if y is not None:
            emb = emb + self.label_emb(y)
        return emb

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, in_channels, H, W], timesteps [B] int, y [B] int -> [B, out_channels, H, W] in x.dtype."""
        emb = self.embed(timesteps, y)
        h = x.to(module_dtype(self.input_blocks))
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.to(module_dtype(self.out[2]))).to(x.dtype)

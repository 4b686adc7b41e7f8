"""``repaint train`` and ``repaint export``: thin click commands over :mod:`repaint.training`.

Every default shown here is read from :class:`repaint.training.TrainConfig` (and the face64 architecture), so the
library stays the one place where a training default is declared.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import click

from ..accel import TRAINING_PRECISIONS
from .common import handles_errors

TRAIN_EXAMPLES = """
\b
Examples:
  repaint train my_images/ --out runs/mine --image-size 64          a folder (searched recursively) or a .tar
  repaint train my_images/ --out runs/mine                          again: resumes from the newest checkpoint
  repaint train faces.tar --out runs/faces --steps 20000 --precision bf16 --max-minutes 120
  torchrun --nproc_per_node 8 -m repaint train my_images/ --out runs/mine      (--batch-size is per process)
"""

EXPORT_EXAMPLES = """
\b
Examples:
  repaint export runs/mine/ckpt_00020000.pt mine.safetensors
  repaint inpaint photo.png mask.png --model mine.safetensors
  repaint export default face64-diffusers --format diffusers      (the bundled model as a diffusers folder)
"""

# Help for each TrainConfig field (defaults come from TrainConfig itself). The help test checks that every field
# has an option here, so a new field cannot be forgotten.
TRAIN_HELP = {
    "batch_size": "Images per step and process.",
    "lr": "AdamW learning rate.",
    "lr_warmup": "Steps of linear learning-rate warm-up.",
    "weight_decay": "AdamW decoupled weight decay.",
    "grad_clip": "Largest global gradient norm (0 = no clipping).",
    "vlb_weight": "Weight lambda of the variational bound term (IDDPM eq. 16).",
    "ema_rate": "EMA decay of the weights that are exported.",
    "ema_warmup": "Ramp the EMA decay up as (1 + n) / (10 + n) at first.",
    "steps": "Total optimiser steps.",
    "log_interval": "Steps per line of log.jsonl.",
    "sample_interval": "Steps per sample grid under samples/ (0 = never).",
    "sample_count": "Images per sample grid.",
    "sample_steps": "Respaced DDPM steps used for a sample grid.",
    "save_interval": "Steps per checkpoint (0 = only at the end).",
    "save_minutes": "Also checkpoint after this many minutes (0 = off).",
    "keep_checkpoints": "Newest checkpoints kept on disk.",
    "max_minutes": "Stop, with a checkpoint, after this many minutes (0 = no limit).",
    "seed": "Seeds the data order, flips, timesteps and noise.",
    "precision": "fp32; bf16 (autocast); fp16 (autocast and gradient scaling, CUDA only).",
    "channels_last": "NHWC memory format (faster convolutions on some devices).",
    "flip": "Random horizontal flips.",
    "num_workers": "DataLoader worker processes.",
    "device": "auto (CUDA when available), cpu or cuda.",
    "resume": "auto (newest readable checkpoint in --out), a checkpoint file, or none (start over).",
}
_CHOICES = {"precision": TRAINING_PRECISIONS}
_NOT_OPTIONS = ("data", "out", "model", "diffusion")


def _train_options(command):
    """One option per TrainConfig field, then the architecture options, with the library's defaults."""
    from ..training import FACE64_DIFFUSION, FACE64_UNET, TrainConfig

    defaults = TrainConfig(data="", out="")
    arch = FACE64_UNET

    def csv(values) -> str:
        return ",".join(str(v) for v in values)

    def numbers(ctx, param, value: str) -> str:
        try:
            [float(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise click.BadParameter(f"expected comma-separated numbers such as 1,2,2,2, got {value!r}") from None
        return value

    options = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in _NOT_OPTIONS:
            continue
        value, flag = getattr(defaults, f.name), "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            options.append(click.option(f"{flag}/--no-{flag[2:]}", default=value, show_default=True,
                                        help=TRAIN_HELP[f.name]))
        else:
            kind = click.Choice(_CHOICES[f.name]) if f.name in _CHOICES else type(value)
            options.append(click.option(flag, type=kind, default=value, show_default=True, help=TRAIN_HELP[f.name]))
    options += [
        click.option("--image-size", type=click.IntRange(min=8), default=arch.image_size, show_default=True,
                     help="Training resolution (images are centre-cropped to a square and resized)."),
        click.option("--model-channels", type=click.IntRange(min=32), default=arch.model_channels,
                     show_default=True, help="Base width of the UNet."),
        click.option("--num-res-blocks", type=click.IntRange(min=1), default=arch.num_res_blocks, show_default=True,
                     help="ResBlocks per level."),
        click.option("--channel-mult", default=csv(arch.channel_mult), show_default=True, callback=numbers,
                     help="Width of each level, as multiples of --model-channels."),
        click.option("--attention-resolutions", default=csv(arch.attention_resolutions), show_default=True,
                     callback=numbers,
                     help="Feature-map sizes with self-attention."),
        click.option("--num-head-channels", type=int, default=arch.num_head_channels, show_default=True,
                     help="Width of each attention head."),
        click.option("--dropout", type=click.FloatRange(0, 1), default=arch.dropout, show_default=True),
        click.option("--noise-schedule", type=click.Choice(["linear", "cosine"]),
                     default=FACE64_DIFFUSION.noise_schedule, show_default=True),
        click.option("--diffusion-steps", type=click.IntRange(min=2), default=FACE64_DIFFUSION.steps,
                     show_default=True, help="Length T of the training noise schedule."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.command(epilog=TRAIN_EXAMPLES)
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run folder: checkpoints, log.jsonl, samples/; rerun to resume.")
@_train_options
@handles_errors
def train(data: Path, out: Path, image_size: int, model_channels: int, num_res_blocks: int, channel_mult: str,
          attention_resolutions: str, num_head_channels: int, dropout: float, noise_schedule: str,
          diffusion_steps: int, **scalars) -> None:
    """Train (or resume) an ADM UNet on DATA, a folder or .tar of images (guided-diffusion's hybrid loss, EMA)."""
    from ..models.config import DiffusionSettings
    from ..training import FACE64_UNET, TrainConfig, train as run_training

    model = FACE64_UNET.replace(
        image_size=image_size, model_channels=model_channels, num_res_blocks=num_res_blocks,
        channel_mult=channel_mult, attention_resolutions=attention_resolutions, num_head_channels=num_head_channels,
        dropout=dropout,
    )
    diffusion = DiffusionSettings(steps=diffusion_steps, noise_schedule=noise_schedule, learn_sigma=True)
    config = TrainConfig(data=str(data), out=str(out), model=model, diffusion=diffusion, **scalars)
    result = run_training(config)
    if result.checkpoint is not None:
        click.echo(f"step {result.step}: {result.checkpoint}")


@click.command(epilog=EXPORT_EXAMPLES)
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["safetensors", "diffusers"]), default="safetensors",
              show_default=True,
              help="safetensors: our file (weights + config); diffusers: a folder with unet/ and scheduler/ that "
                   "diffusers' UNet2DModel loads (needs the diffusers extra).")
@click.option("--fp32", is_flag=True, help="Keep float32 weights (default: float16, half the size).")
@click.option("--raw", is_flag=True, help="Export the raw weights instead of their EMA.")
@handles_errors
def export(checkpoint: Path, output: Path, fmt: str, fp32: bool, raw: bool) -> None:
    """Write a model as OUTPUT: a training CHECKPOINT's EMA weights and config as .safetensors for repaint inpaint
    --model, or (--format diffusers) any model --model takes, training checkpoints included, as a diffusers folder."""
    from ..training import export_ema

    if fmt == "safetensors":
        click.echo(f"wrote {export_ema(checkpoint, output, half=not fp32, use_ema=not raw)}")
        return
    from ..checkpoints.diffusers_export import export_diffusers

    if checkpoint.suffix == ".pt" and _is_training_checkpoint(checkpoint):
        with tempfile.TemporaryDirectory() as tmp:
            weights = export_ema(checkpoint, Path(tmp) / "ema.safetensors", half=False, use_ema=not raw)
            click.echo(f"wrote {export_diffusers(weights, output)}")
        return
    click.echo(f"wrote {export_diffusers(str(checkpoint), output)}")


def _is_training_checkpoint(path: Path) -> bool:
    """A file written by repaint train (its state holds the optimiser and EMA weights), not a bare state dict."""
    from ..training import load_training_checkpoint

    try:
        load_training_checkpoint(path)
    except (OSError, ValueError):
        return False
    return True

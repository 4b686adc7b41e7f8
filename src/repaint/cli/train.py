"""``repaint train`` and ``repaint export``."""

from __future__ import annotations

import click

from .common import handles_errors


# ---------------------------------------------------------------------------------------------------------------
# repaint train / export  (options are those of repaint.training's parser, passed through)
# ---------------------------------------------------------------------------------------------------------------

_PASS_THROUGH = dict(ignore_unknown_options=True, allow_extra_args=True, help_option_names=[])


@click.command(context_settings=_PASS_THROUGH, add_help_option=False)
@click.pass_context
@handles_errors
def train(ctx: click.Context) -> None:
    """Train (or resume) an ADM UNet on a folder or .tar of images: repaint train DATA --out DIR [...]; --help."""
    from ..training import main as training_main

    raise click.exceptions.Exit(training_main(["train", *ctx.args]))


@click.command(context_settings=_PASS_THROUGH, add_help_option=False)
@click.pass_context
@handles_errors
def export(ctx: click.Context) -> None:
    """Write a training checkpoint's EMA weights as .safetensors: repaint export CHECKPOINT OUT [--fp32]."""
    from ..training import main as training_main

    raise click.exceptions.Exit(training_main(["export", *ctx.args]))

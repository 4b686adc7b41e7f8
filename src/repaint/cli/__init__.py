"""The ``repaint`` command line: a thin front end over the library.

Each command lives in its own module and parses options for one library call. Bad input ends in one line on stderr,
``repaint: error: ...``, with exit status 2 (input or usage) or 1 (the run itself failed), and no traceback.
"""

from __future__ import annotations

import click

from .evaluate import ablate, evaluate_command
from .inpaint import inpaint
from .tools import masks, presets, schedule, validate
from .train import export, train

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="repaint")
def cli() -> None:
    """RePaint: fill the black region of a mask in an image with a denoising diffusion model."""


for _command in (inpaint, schedule, presets, masks, validate, train, export, ablate):
    cli.add_command(_command)
cli.add_command(evaluate_command, "evaluate")
cli.add_command(evaluate_command, "eval")  # the short name used in the docs


def main() -> None:
    cli(prog_name="repaint")

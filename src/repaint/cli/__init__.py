"""The ``repaint`` command line: a thin front end over the library.

Each command lives in its own module and parses options for one library call. Bad input ends in one line on stderr,
``repaint: error: ...``, with exit status 2 (input or usage) or 1 (the run itself failed), and no traceback.
"""

from __future__ import annotations

import sys

import click

from ..study.cli import study
from .common import one_line
from .evaluate import ablate, evaluate_command
from .inpaint import inpaint
from .models import download, models
from .serve import serve
from .tools import masks, presets, schedule, validate
from .train import export, train

__all__ = ["cli", "main"]


class _Group(click.Group):
    """The ``repaint`` group, run the way the ``repaint`` program runs it (also under click's test runner):
    click's own usage errors (a missing argument, a value out of range) are one line ``repaint: error: ...`` with
    exit status 2 like the library's, and Ctrl-C exits 130 (128 + SIGINT) with one line. ``evaluate`` is accepted as
    another name of ``eval`` without being listed twice in ``repaint --help``."""

    aliases = {"evaluate": "eval"}

    def get_command(self, ctx, cmd_name):
        return super().get_command(ctx, self.aliases.get(cmd_name, cmd_name))

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("repaint: interrupted", err=True)
            sys.exit(130)
        except click.exceptions.NoArgsIsHelpError as err:  # a bare "repaint" or group: the help, as click shows it
            err.show()
            sys.exit(err.exit_code)
        except click.UsageError as err:
            where = err.ctx.command_path if err.ctx is not None else "repaint"
            click.echo(f"repaint: error: {one_line(err.format_message())} (see: {where} --help)", err=True)
            sys.exit(err.exit_code)
        except click.ClickException as err:
            click.echo(f"repaint: error: {one_line(err.format_message())}", err=True)
            sys.exit(err.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="repaint-inpaint")
def cli() -> None:
    """RePaint: fill the black region of a mask in an image with a denoising diffusion model."""


for _command in (inpaint, models, download, schedule, presets, masks, validate, train, export, ablate, study, serve):
    cli.add_command(_command)
cli.add_command(evaluate_command, "eval")


def main() -> None:
    """The ``repaint`` program (one-line errors, Ctrl-C exits 130: see ``_Group``), with glibc's malloc set to keep
    freed memory for the next network call (:func:`repaint.accel.keep_freed_memory`)."""
    from ..accel import keep_freed_memory

    keep_freed_memory()
    cli.main(prog_name="repaint")

"""What every command shares: one-line errors and warnings, the device choice, which options were given."""

from __future__ import annotations

import functools
import warnings

import click
import torch

from ..sampler import SamplingError

__all__ = ["InputError", "handles_errors", "device_of", "fit_mode", "explicit_options", "unet_config_option",
           "parse_settings"]


class InputError(ValueError):
    """Bad input found by the CLI itself (exit status 2)."""


def one_line(err: BaseException | str) -> str:
    """A message on one line (white space runs, newlines included, become one space)."""
    text = str(err).strip() or type(err).__name__
    return " ".join(text.split())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"repaint: warning: {one_line(message)}", err=True)


def handles_errors(command):
    """Library errors -> one line on stderr and exit status 2 (input) or 1 (runtime); warnings as one line."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("default")
                warnings.showwarning = _show_warning
                return command(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except (SamplingError, RuntimeError, OSError, MemoryError) as err:
            click.echo(f"repaint: error: {one_line(err)}", err=True)
            raise click.exceptions.Exit(1) from None
        except (ValueError, TypeError) as err:  # ImageError, MaskError, CheckpointError, ConfError are ValueErrors
            click.echo(f"repaint: error: {one_line(err)}", err=True)
            raise click.exceptions.Exit(2) from None

    return wrapper


def device_of(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    return name


def fit_mode(resize: bool, crop: bool) -> str:
    return {(False, False): "error", (True, False): "resize", (False, True): "center-crop",
            (True, True): "resize-crop"}[(resize, crop)]


def explicit_options(ctx: click.Context) -> set[str]:
    from click.core import ParameterSource

    return {name for name in ctx.params if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}


def parse_settings(pairs: tuple[str, ...], option: str = "--unet-config") -> dict:
    """``("num_heads=4", "use_new_attention_order=true")`` -> ``{"num_heads": 4, ...}`` (values read as YAML
    scalars: numbers, true/false, strings such as 32,16,8). Names are checked where they are applied."""
    import yaml

    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{option} takes KEY=VALUE (e.g. {option} num_heads=4), got {pair!r}")
        try:
            settings[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            raise InputError(f"{option} {pair!r}: cannot read the value {value!r}") from None
    return settings


def unet_config_option(command):
    return click.option(
        "--unet-config", "unet_config", multiple=True, metavar="KEY=VALUE",
        help="Set a UNet setting the checkpoint does not determine, e.g. num_heads=4, num_head_channels=-1, "
             "num_heads_upsample=-1, use_new_attention_order=true (repeatable; wins over a CKPT.json/.yaml "
             "beside the checkpoint).")(command)

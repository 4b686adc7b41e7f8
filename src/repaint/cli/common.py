"""What every command shares: one-line errors and warnings, the device choice, which options were given."""

from __future__ import annotations

import functools
import sys
import warnings

import click

from ..samplers.common import SamplingError

__all__ = [
    "InputError", "handles_errors", "device_of", "explicit_options", "schedule_options", "settings_from", "check_seed",
    "one_line", "unet_config_option", "parse_settings", "SCHEDULE_OPTIONS",
]


class InputError(ValueError):
    """Bad input found by the CLI itself (exit status 2)."""


def one_line(err: BaseException | str) -> str:
    """A message on one line (white space runs, newlines included, become one space)."""
    if isinstance(err, OSError) and err.strerror:  # without the "[Errno N]" prefix, with the file where there is one
        text = f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    else:
        text = str(err).strip() or type(err).__name__
    return " ".join(text.split())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    echo(f"repaint: warning: {one_line(message)}", err=True)


def echo(message: str, err: bool = False) -> None:
    """A line on stdout/stderr that does not break a running progress bar (tqdm clears and redraws it), flushed at
    once: a plan and its estimate must show before the sampling they describe, also when stdout is a pipe."""
    from tqdm import tqdm

    stream = sys.stderr if err else sys.stdout
    with tqdm.external_write_mode(file=stream):   # tqdm.write, flushed before the bar is drawn again
        stream.write(message + "\n")
        stream.flush()


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
    """--device through the library's rule (:func:`repaint.accel.resolve_device`), its errors in the option's words."""
    from ..accel import resolve_device

    try:
        return resolve_device(name)
    except ValueError as err:
        raise InputError(f"--{err}".replace("use cpu", "use --device cpu")) from None


def explicit_options(ctx: click.Context) -> set[str]:
    from click.core import ParameterSource

    return {name for name in ctx.params if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}


def schedule_options(command):
    """The sampler and schedule options of ``inpaint`` and ``eval`` (one declaration for both)."""
    from ..samplers import SAMPLERS
    from ..settings import MAX_AVERAGE

    options = [
        click.option("--paper", is_flag=True,
                     help="The paper's schedule: T=250, j=10, r=10 (2,410 network calls); sets every schedule field."),
        click.option("--fast", is_flag=True,
                     help="The fast preset: T=50, j=5, r=10, resampling only at t<=20 (230 calls); sets every "
                          "schedule field."),
        click.option("--sampler", type=click.Choice(list(SAMPLERS)), default=None,
                     help="Sampler (default: the model's recommendation: lanpaint for the bundled face model, "
                          "repaint for the others)."),
        click.option("--steps", type=click.IntRange(min=1), default=None,
                     help="Respaced diffusion steps T. Default: the model's recommended schedule."),
        click.option("--jump-length", type=click.IntRange(min=1), default=None, help="Jump length j."),
        click.option("--jump-n-sample", "--resamplings", "jump_n_sample", type=click.IntRange(min=1), default=None,
                     help="Resamplings r."),
        click.option("--start-resampling", type=click.IntRange(min=0), default=None,
                     help="Resample only at t <= this (the reference's start_resampling)."),
        click.option("--eta", type=click.FloatRange(min=0), default=None, help="DDIM eta of ddim_repaint / ddnm."),
        click.option("--average", type=click.IntRange(1, MAX_AVERAGE), default=None, metavar="K",
                     help="Make each sample the mean of K draws (K times the network calls): closer to the original "
                          "by PSNR and smoother, for restoring rather than inventing.  [default: 1]"),
        click.option("--option", "sampler_options", multiple=True, metavar="KEY=VALUE",
                     help="A setting of the chosen sampler, e.g. --sampler smc --option particles=20 (repeatable; "
                          "docs/fidelity.md lists them)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


SCHEDULE_OPTIONS = ("paper", "fast", "sampler", "steps", "jump_length", "jump_n_sample", "start_resampling", "eta",
                    "average")


def settings_from(recommended, opts: dict, **extra):
    """The run's SamplerSettings: the schedule rule of :func:`repaint.settings.resolve_settings` over ``opts``."""
    from ..settings import resolve_settings

    fields = {k: opts.pop(k) for k in SCHEDULE_OPTIONS}
    named = [name for name in ("paper", "fast") if fields.pop(name)]
    if len(named) > 1:
        raise InputError("--paper and --fast are two different schedules; give one")
    options = sampler_options(opts.pop("sampler_options", ()))
    return resolve_settings(recommended, named[0] if named else None, **fields, options=options or None, **extra)


def sampler_options(pairs) -> dict:
    """``("particles=20", "lookahead=2")`` -> ``{"particles": 20, "lookahead": 2}``; values read as YAML scalars."""
    import yaml

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--option takes KEY=VALUE, got {pair!r}")
        try:
            options[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            options[key.strip()] = value
    return options


def check_seed(seed: int, count: int = 1) -> None:
    """Seeds are 0 .. 2**63 - 1 (torch.Generator.manual_seed); checked before any model is loaded."""
    from ..api import MAX_SEED

    if not 0 <= seed <= MAX_SEED - count + 1:
        raise InputError(f"--seed {seed} is out of range 0..{MAX_SEED - count + 1}")


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

"""``repaint schedule``, ``presets``, ``masks`` and ``validate``: small tools over the library."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from ..masks import MASK_KINDS, make_masks, mask_preview_grid, save_mask
from ..checkpoints import PRESETS
from ..schedule import JumpSchedule
from ..evaluation.groundtruth import PROBLEMS
from .common import InputError, handles_errors, schedule_options, settings_from
from ..samplers import describe


# ---------------------------------------------------------------------------------------------------------------
# repaint schedule / presets
# ---------------------------------------------------------------------------------------------------------------

def _jump_options(command):
    """One option per JumpSchedule field, with the dataclass's default and help."""
    ordered = sorted(dataclasses.fields(JumpSchedule), key=lambda f: f.name != "t_T")   # the starting point first
    for f in reversed(ordered):  # T is --steps as everywhere else; --t-T (the reference's name) still works
        names = ("--steps", "--t-T") if f.name == "t_T" else ("--" + f.name.replace("_", "-"),)
        command = click.option(*names, f.name, type=int, default=f.default, show_default=True,
                               help=f.metadata["help"] + ".")(command)
    return command


@click.command(epilog="\b\nExample:\n"
                      "  repaint schedule --steps 250 --jump-length 10 --jump-n-sample 10 --plot schedule.png")
@_jump_options
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a PNG of t over the transition index (needs matplotlib).")
@handles_errors
def schedule(plot: Path | None, **params) -> None:
    """Print the network-call count of a RePaint jump schedule."""
    jumps = JumpSchedule(**params)
    times = jumps.times()
    transitions = len(times) - 1
    calls = jumps.network_calls()
    click.echo(f"network calls: {calls}")
    click.echo(f"transitions: {transitions} ({transitions - calls} forward re-noising steps)")
    if plot is not None:
        _plot_schedule(times, plot, params)
        click.echo(f"plot: {plot}")


def _plot_schedule(times: list[int], path: Path, params: dict) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("--plot needs matplotlib: pip install 'repaint[plot]'") from None
    fig, ax = plt.subplots(figsize=(8, 3), dpi=100)
    ax.plot(range(len(times)), times, linewidth=0.8)
    ax.set_xlabel("transition")
    ax.set_ylabel("t")
    ax.set_title(f"t_T={params['t_T']}, jump_length={params['jump_length']}, jump_n_sample={params['jump_n_sample']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)


@click.command()
def presets() -> None:
    """List the models known by name, their files and where they are published (`repaint models` adds sizes,
    licences, default runs and what is on disk)."""
    for p in PRESETS.values():
        click.echo(f"{p.name:24s} {p.kind:10s} {p.filename:28s} {p.description}")
        click.echo(f"{'':24s} published: {p.published}")


# ---------------------------------------------------------------------------------------------------------------
# repaint masks
# ---------------------------------------------------------------------------------------------------------------

@click.command(epilog="\b\nExamples:\n  repaint masks wide --n 100 --size 256 --seed 0 --out masks/wide\n"
                    "  repaint masks half --n 1 --size 64 --side top --out masks/top")
@click.argument("kind", type=click.Choice(sorted(MASK_KINDS)))
@click.option("--n", "count", type=click.IntRange(min=1), default=100, show_default=True, help="Number of masks.")
@click.option("--size", type=click.IntRange(min=8), default=256, show_default=True, help="Side of the square mask.")
@click.option("--seed", type=int, default=0, show_default=True, help="Mask i uses seed (SEED, i): sets are stable.")
@click.option("--side", type=click.Choice(["left", "right", "top", "bottom"]), default=None,
              help="For 'half': the half that is kept (default left).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for 000000.png, 000001.png, ... (white = keep) and preview.png.")
@click.option("--preview/--no-preview", default=True, show_default=True, help="Also write a grid of the masks.")
@handles_errors
def masks(kind: str, count: int, size: int, seed: int, side: str | None, out_dir: Path, preview: bool) -> None:
    """Write a deterministic set of masks of one of the paper's six settings."""
    kwargs = {"side": side} if side is not None else {}
    if side is not None and kind != "half":
        raise InputError("--side only applies to the 'half' masks")
    made = make_masks(kind, count, size, seed, **kwargs)
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, mask in enumerate(made):
        save_mask(mask, out_dir / f"{i:06d}.png")
    filled = 1 - made.mean().item()
    click.echo(f"wrote {count} {kind} masks ({size}x{size}, {filled:.1%} to fill on average) to {out_dir}")
    if preview:
        mask_preview_grid(made[:64], out_dir / "preview.png")
        click.echo(f"preview: {out_dir / 'preview.png'}")


# ---------------------------------------------------------------------------------------------------------------
# repaint validate
# ---------------------------------------------------------------------------------------------------------------

@click.command(epilog="\b\nExamples:\n"
                    "  repaint validate --paper                    (the paper's setting: 2,410 calls)\n"
                    "  repaint validate --fast --problem hard8\n"
                    "  repaint validate --sampler smc --steps 25 --option particles=20 --problem hard12 --n 2000")
@schedule_options
@click.option("--problem", default=None, metavar="NAME",
              help=f"A problem of the ground-truth suite (docs/fidelity.md): {', '.join(PROBLEMS)}, or random-SEED "
                   "(a hard problem drawn at random); default: the original easy mixture.")
@click.option("--n", "count", type=click.IntRange(min=10), default=1000, show_default=True,
              help="Fills drawn (one seed each).")
@click.option("--seed", type=int, default=0, show_default=True)
@handles_errors
def validate(problem: str | None, count: int, seed: int, **opts) -> None:
    """Score a sampler against the exact answer on a Gaussian-mixture inpainting problem (docs/fidelity.md)."""
    from ..evaluation.gmm import validate as run_validation
    from ..evaluation.groundtruth import get_problem
    from ..settings import PAPER

    settings = settings_from(PAPER, opts)
    result = run_validation(settings, n=count, seed=seed, problem=get_problem(problem) if problem else None)
    click.echo(f"{describe(settings)}: {result['calls']} network calls per image, {result['seconds']:.1f} s")
    click.echo(f"  wrong-component share (TV of weights): {result['component_tv']:.4f}")
    click.echo(f"  error of the conditional mean:         {result['mean_error']:.4f}")
    click.echo(f"  sliced Wasserstein to exact samples:   {result['sliced_w2']:.4f}")

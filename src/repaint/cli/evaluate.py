"""``repaint evaluate`` (alias ``eval``) and ``repaint ablate ...``: thin commands over :mod:`repaint.evaluation` and
:mod:`repaint.evaluation.experiments`."""

from __future__ import annotations

import importlib
from pathlib import Path

import click

from ..api import FIT_STRATEGIES, MAX_SAMPLES
from .common import (check_seed, device_of, handles_errors, parse_settings, schedule_options, settings_from,
                     unet_config_option)
from ..samplers import describe

EVAL_EXAMPLES = """
\b
Examples:
  repaint evaluate test100/ --model celeba256 --masks all --published celebahq --out eval/celebahq
  repaint evaluate test100/ --model imagenet256 --classifier imagenet256_classifier --masks wide --masks half \
      --class-label 207 --out eval/imagenet
  repaint eval faces/ --masks all --fast --out eval/faces       (the bundled model with its own fast schedule)
  torchrun --nproc_per_node 8 -m repaint eval test100/ --model celeba256 --masks all --out eval/celebahq
"""


def _common(command):
    options = [
        click.argument("images", type=click.Path(exists=True, file_okay=False, path_type=Path)),
        click.option("--model", default="default", show_default=True,
                     help="A name of `repaint models` (fetched on first use), hf:ORG/NAME[@REVISION], a checkpoint "
                          "file, a diffusers folder or default."),
        click.option("--classifier", default=None, help="Noisy-image classifier for guidance."),
        click.option("--masks", "masks", multiple=True, default=("wide",), show_default=True,
                     help="Mask kind (wide, narrow, super_resolve_2x, every_second_line, half, expand, all) or a "
                          "mask folder; repeat for several settings."),
        click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
                     help="Output folder; rerun the same command to resume."),
        click.option("--n-samples", type=click.IntRange(1, MAX_SAMPLES), default=1, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--mask-seed", type=int, default=0, show_default=True),
        click.option("--batch-size", type=click.IntRange(min=1), default=None,
                     help="Samples per network call. Default: as many as the free memory holds, at most 8 (a "
                          "`batch:` line says what was chosen and why)."),
        click.option("--metrics", "metrics", multiple=True, type=click.Choice(["lpips", "psnr", "ssim"]),
                     help="Metric to compute; repeat for several. Default: every one of lpips, psnr, ssim that can "
                          "be computed here (one whose weights or package is missing is skipped with a warning "
                          "saying how to enable it). A metric named here is required."),
        click.option("--lpips-weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="torchvision AlexNet weights alexnet-owt-7be5be79.pth (default: $REPAINT_ALEXNET or the "
                          "torch hub cache)."),
        click.option("--fit", type=click.Choice(FIT_STRATEGIES), default="auto", show_default=True,
                     help="How images meet the model's size (crop windows around holes, resize, none); outputs "
                          "stay at the image's size."),
        click.option("--device", default="auto", show_default=True, help="auto (cuda:LOCAL_RANK or cpu), cpu, cuda:N."),
        unet_config_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _eval_kwargs(opts: dict) -> dict:
    device = opts.pop("device")
    return dict(
        masks=list(opts.pop("masks")), n_samples=opts.pop("n_samples"), seed=opts.pop("seed"),
        mask_seed=opts.pop("mask_seed"), batch_size=opts.pop("batch_size"), lpips_weights=opts.pop("lpips_weights"),
        fit=opts.pop("fit"), classifier=opts.pop("classifier"), metrics=tuple(opts.pop("metrics")) or None,
        device=None if device == "auto" else device_of(device),
        unet_config=parse_settings(opts.pop("unet_config")) or None,
    )


@click.command("evaluate", epilog=EVAL_EXAMPLES)
@_common
@schedule_options
@click.option("--class-label", type=int, default=None,
              help="Class for class-conditional models / guidance (default: drawn from each sample's seed).")
@click.option("--published", type=click.Choice(["celebahq", "imagenet"]), default=None,
              help="Show the paper's published LPIPS of this dataset next to ours.")
@handles_errors
def evaluate_command(images: Path, out_dir: Path, model: str, published: str | None,
                     class_label: int | None, **opts) -> None:
    """Inpaint every image of IMAGES under each mask setting; write outputs and a Table 1 style report."""
    from ..evaluation import evaluate
    from ..inpainter import model_description, recommended_settings

    check_seed(opts["seed"], 1000 * 1000)
    settings = settings_from(recommended_settings(model), opts)
    click.echo(f"sampler: {describe(settings)}")
    click.echo(f"trained on: {model_description(model)}")
    report = evaluate(images, out_dir, model, settings=settings, paper=published,
                      class_label=class_label, **_eval_kwargs(opts))
    click.echo(f"report: {out_dir / 'report.md'}" + ("" if report.complete else " (incomplete)"))


ABLATE_EXAMPLES = """
\b
Examples:
  repaint ablate resampling-vs-slowdown test100/ --model celeba256 --masks wide --out eval/table2
  repaint ablate jump-grid test100/ --model celeba256 --jump-lengths 5 --jump-lengths 10 --out eval/table3
  repaint ablate sdedit test100/ --model celeba256 --repeats 1 --repeats 5 --metrics psnr --out eval/table4
"""


@click.group(epilog=ABLATE_EXAMPLES)
def ablate() -> None:
    """The paper's ablations (Tables 2-4), each one table under --out."""


def _ablation(name: str, fn_name: str, extra):
    @_common
    @handles_errors
    def command(images: Path, out_dir: Path, model: str, **opts) -> None:
        from ..evaluation import experiments

        specific = {key: opts.pop(key) for key in list(opts) if key in extra}
        specific = {k: (tuple(v) if isinstance(v, tuple) else v) for k, v in specific.items() if v not in ((), None)}
        table = getattr(experiments, fn_name)(images, out_dir, model, **specific, **_eval_kwargs(opts))
        click.echo(table.markdown())

    command.__doc__ = getattr(importlib.import_module("repaint.evaluation.experiments"), fn_name).__doc__.split("\n")[0]
    for option in extra.values():
        command = option(command)
    return ablate.command(name)(command)


_ablation("resampling-vs-slowdown", "resampling_vs_slowdown", {
    "t_T": click.option("--steps", "--t-T", "t_T", type=int, default=250, show_default=True),
    "jump_length": click.option("--jump-length", type=int, default=10, show_default=True),
    "resamplings": click.option("--resamplings", type=int, multiple=True, help="r values (default 1 2 3 4)."),
})
_ablation("jump-grid", "jump_grid", {
    "t_T": click.option("--steps", "--t-T", "t_T", type=int, default=250, show_default=True),
    "jump_lengths": click.option("--jump-lengths", type=int, multiple=True, help="j values (default 1 5 10)."),
    "resamplings": click.option("--resamplings", type=int, multiple=True, help="r values (default 5 10 15)."),
})
_ablation("sdedit", "sdedit_alternative", {
    "t_T": click.option("--steps", "--t-T", "t_T", type=int, default=250, show_default=True),
    "repeats": click.option("--repeats", type=int, multiple=True, help="k values (default 1 5 10 18)."),
    "repaint_jump_length": click.option("--repaint-jump-length", type=int, default=10, show_default=True),
    "repaint_resamplings": click.option("--repaint-resamplings", type=int, default=10, show_default=True),
})

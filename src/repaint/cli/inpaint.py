"""``repaint inpaint``: photos and masks from files (or a reference config) through :func:`repaint.api.inpaint`."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import click
import torch

from ..accel import PRECISIONS, Accel, unavailable
from ..api import (
    FIT_STRATEGIES, MAX_SAMPLES, InpaintRequest, choose_batch, estimate_plan, inpaint_stream, model_note, plan,
    read_image, read_mask, recommend, result_paths, write_result,
)
from ..cost import largest_batch
from ..files import check_destinations, ensure_writable
from ..images import OutputDirs, check_readable, output_name, save_image
from ..samplers.repaint import INJECTION_MODES
from ..samplers import describe, network_calls
from ..settings import resolve_settings
from .common import (
    SCHEDULE_OPTIONS, InputError, check_seed, device_of, echo, explicit_options, handles_errors, parse_settings,
    schedule_options, settings_from, unet_config_option,
)

EXAMPLES = """
\b
Examples:
  repaint inpaint examples/face.png examples/face_mask.png
  repaint inpaint photo.jpg scratch.png --model celeba256 --n-samples 4     (any photo size: --fit crop)
  repaint inpaint photo.png mask.png --paper                                 (the paper's 2,410-call schedule)
  repaint inpaint dog.png mask.png --model imagenet256 --classifier imagenet256_classifier --class-label 207
  repaint inpaint --conf confs/test_c256_thin.yml          (a config of the reference repository)
"""


@click.command(epilog=EXAMPLES)
@click.argument("image", required=False, type=click.Path(path_type=Path))
@click.argument("mask", required=False, type=click.Path(path_type=Path))
@click.option("--model", default="default", show_default=True,
              help='Model: "default" (the bundled 64x64 face model), a name of `repaint models` (fetched on first '
                   'use), hf:ORG/NAME[@REVISION], a checkpoint file or a diffusers folder.')
@click.option("--preset", default=None, help="Force the architecture of a preset for a checkpoint file.")
@unet_config_option
@schedule_options
@click.option("--n-samples", type=click.IntRange(1, MAX_SAMPLES), default=1, show_default=True,
              help="Samples per image; sample k uses seed SEED + k.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="(window, sample) jobs run together; results do not depend on it.  [default: as many as the "
                   "free memory holds, up to 8]")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed of the first sample.")
@click.option("--class-label", type=int, default=None, help="Class for class-conditional models / guidance.")
@click.option("--classifier", default=None, help="Noisy-image classifier for guidance: preset name or file.")
@click.option("--classifier-scale", type=float, default=1.0, show_default=True, help="Guidance strength.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True, help="Output folder (inpainted/, gt_masked/, gt_keep_mask/, gt/), full size.")
@click.option("--invert-mask", is_flag=True, help="The mask file uses white for the region to fill.")
@click.option("--fit", type=click.Choice(FIT_STRATEGIES), default="auto", show_default=True,
              help="How a photo meets the model's size: crop = a window around each hole (scaled down where the "
                   "hole is larger than the model), resize = the whole photo, none = sizes must match, tile = "
                   "model-sized tiles at the photo's own resolution, phase by phase. auto: none at the model's "
                   "size, crop where every window is at scale 1, else tile; resize for a smaller photo. Only hole "
                   "pixels are replaced.")
@click.option("--injection", type=click.Choice(INJECTION_MODES), default="reference", show_default=True,
              help="How the known region is joined: as the reference code, or as the paper's Alg. 1.")
@click.option("--no-paste", is_flag=True, help="Do not paste the exact known pixels at model size (as the reference).")
@click.option("--conf", "conf_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A reference RePaint YAML config (confs/test_*.yml); options given here override it.")
@click.option("--save-frames", type=click.IntRange(min=1), default=None,
              help="Also save the x0 estimate every N network calls to OUT/frames/ (model size, per window).")
@click.option("--estimate/--no-estimate", default=True, show_default=True,
              help="Print each photo's estimated time and peak memory with its plan, from a few timed network "
                   "calls on this machine (the first call at a batch size warms up the network).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="Network precision: auto = fp16 compiled with CUDA graphs on CUDA; on a CPU bf16 "
                   "(channels-last) for 256x256 models where the CPU has native bf16, else fp32; fp32 executes "
                   "like the reference.")
@click.option("--compile/--no-compile", "compile_net", default=None,
              help="torch.compile the network.  [default: on CUDA for auto, bf16 and fp16]")
@click.option("--cuda-graphs/--no-cuda-graphs", default=None,
              help="Replay the network as CUDA graphs (CUDA only; one capture per batch shape).  [default: with "
                   "--compile on CUDA]")
@click.pass_context
@handles_errors
def inpaint(ctx: click.Context, image: Path | None, mask: Path | None, **opts) -> None:
    """Inpaint IMAGE where MASK is black (white = keep), writing full-size PNGs under --out."""
    from ..conf import load_for_run, merge_choices, parse_conf, read_conf
    from ..inpainter import labels_from_seeds

    explicit = explicit_options(ctx)
    conf = parse_conf(read_conf(opts["conf_file"])) if opts["conf_file"] else None
    if conf is not None and conf.unknown:
        warnings.warn(f"config keys not understood, ignored: {', '.join(conf.unknown)}", stacklevel=1)
    if (image is None) != (mask is None) or (image is None and conf is None):
        raise click.UsageError("give IMAGE and MASK (or --conf FILE with data folders)")
    if conf is not None and image is None and not conf.data:
        raise click.UsageError("the config has no data.eval entry; give IMAGE and MASK")
    check_seed(opts["seed"], opts["n_samples"])
    model = opts["model"]
    choices = merge_choices(conf, opts, explicit)
    extra = dict(injection=opts["injection"] if "injection" in explicit else None,
                 paste_known=False if opts["no_paste"] else None)
    average = opts["average"]
    settings = settings_from(choices.settings, opts, **extra)
    # a photo with a thin hole may get another recommendation (repaint.api.recommend), unless the run names its
    # sampler or schedule, or comes from a config
    may_route = conf is None and not explicit & {*SCHEDULE_OPTIONS, "sampler_options"} - {"average"}
    device = device_of(choices.device)
    if opts["cuda_graphs"] and torch.device(device).type != "cuda":
        raise InputError(f"--cuda-graphs needs a CUDA device, not {device}")
    groups = _groups(image, mask, conf, opts, explicit)
    ensure_writable(folder for _, dirs, _ in groups for folder in vars(dirs).values())
    seeds = [opts["seed"] + k for k in range(opts["n_samples"])]
    for pairs, dirs, _ in groups:  # before the model loads: inputs readable, no output in the way of its rename
        for name, image_path, mask_path in pairs:
            check_readable(image_path)
            check_readable(mask_path, "mask")
            outputs = [p for paths in result_paths(dirs, name, seeds).values() for p in paths]
            check_destinations(outputs, inputs=(image_path, mask_path))

    accel = Accel(precision=opts["precision"], compile=opts["compile_net"], cuda_graphs=opts["cuda_graphs"])
    if (problem := unavailable(accel, device)) is not None:
        raise InputError(problem)
    inpainter = load_for_run(conf, {**opts, "unet_config": parse_settings(opts["unet_config"])}, explicit, device,
                             accel)
    label = choices.class_label
    if label is not None and inpainter.num_classes is not None and not 0 <= label < inpainter.num_classes:
        raise InputError(f"--class-label {label} is out of range 0..{inpainter.num_classes - 1}")
    scale = choices.classifier_scale
    random_labels = label is None and inpainter.num_classes is not None and choices.random_labels
    labels = labels_from_seeds(seeds, inpainter.num_classes) if random_labels else \
        (None if label is None else [label] * len(seeds))

    routed = None
    if may_route and image is not None:
        base, routed = recommend(inpainter, read_mask(mask, invert=opts["invert_mask"]))
        settings = resolve_settings(base, average=average, **extra)
    per_batch = network_calls(settings, inpainter.diffusion(settings).num_timesteps)
    click.echo(f"model: {model if conf is None or 'model' in explicit else conf.model_path} "
               f"({inpainter.image_size}x{inpainter.image_size}"
               f"{', class-conditional' if inpainter.num_classes else ''}) on {inpainter.device}")
    click.echo(f"trained on: {inpainter.description}")
    click.echo(f"sampler: {describe(settings)} -> {per_batch} network calls per batch")
    if routed is not None:
        click.echo(routed)
    click.echo(f"network: {inpainter.execution()}")
    for pairs, dirs, conf_batch in groups:
        _run(inpainter, pairs, dirs, settings, seeds, labels, scale, opts, conf_batch or opts["batch_size"])


def _groups(image, mask, conf, opts, explicit) -> list[tuple[list[tuple[str, Path, Path]], OutputDirs, int | None]]:
    """(name, image, mask) lists with their output folders: the command line's pair, or each config data entry."""
    if image is not None:
        return [([(output_name(image), image, mask)], OutputDirs.under(opts["out_dir"]), None)]
    groups = []
    for data in conf.data:
        pairs = [(output_name(i), i, m) for _, i, m in data.pairs()]
        names = [n for n, _, _ in pairs]
        if len(set(names)) != len(names):
            raise InputError(f"data {data.name!r}: two images share an output name in {data.gt_path}")
        dirs = OutputDirs.under(opts["out_dir"]) if "out_dir" in explicit else data.output_dirs(opts["out_dir"])
        groups.append((pairs, dirs, data.batch_size))
    return groups


def _run(inpainter, pairs, dirs: OutputDirs, settings, seeds, labels, scale, opts, batch_size) -> None:
    """Stream the photos of one group through the sampler, writing each as soon as all its samples exist."""
    from tqdm import tqdm

    def requests() -> Iterator[InpaintRequest]:
        for name, image_path, mask_path in pairs:
            photo = read_image(image_path)
            keep = read_mask(mask_path, invert=opts["invert_mask"])
            if keep.shape != photo.shape[:2]:
                raise InputError(f"mask {mask_path} is {keep.shape[1]}x{keep.shape[0]} but the image {image_path} "
                                 f"is {photo.shape[1]}x{photo.shape[0]}; a mask must have its image's size")
            layout = plan(inpainter, keep, opts["fit"], settings, n_samples=len(seeds), batch_size=choice.batch)
            bar.total = (bar.total or 0) + layout.calls
            echo(f"{image_path.name}: {photo.shape[1]}x{photo.shape[0]}, fit {layout.fit}, "
                 f"{len(layout.windows)} window(s)"
                 + (f" in {len(layout.phases)} phase(s), {layout.batches} batch(es)" if layout.phases else "")
                 + f", batch {largest_batch(layout)}, {layout.calls} network calls")
            if opts["estimate"]:
                echo(f"estimate: {estimate_plan(inpainter, layout).describe()}")
            note = model_note(inpainter, photo.shape, settings)
            if note is not None:
                echo(note)
            yield InpaintRequest(photo, keep, seeds, name, labels, tag=image_path)

    choice = choose_batch(inpainter, batch_size)
    echo(f"batch: {choice.describe()}")
    frames_dir = Path(opts["out_dir"]) / "frames"
    every = opts["save_frames"]
    written = 0
    with tqdm(unit="call", desc="inpainting", file=sys.stderr, dynamic_ncols=True, leave=False) as bar:
        def progress(p) -> None:
            before, bar.n = bar.n, p.calls
            bar.refresh()
            if every and p.calls // every > before // every and p.pred_xstart is not None:
                for b, (name, window, seed) in enumerate(p.rows):
                    save_image(p.pred_xstart[b].clamp(-1, 1), frames_dir / f"{name}_w{window}_s{seed}" /
                               f"{p.calls:05d}.png")

        for result in inpaint_stream(inpainter, requests(), settings, fit=opts["fit"],
                                     batch_size=choice.batch, classifier_scale=scale,
                                     callback=progress):
            write_result(result, dirs, source=result.tag)
            written += len(result.samples)
    click.echo(f"wrote {written} inpainted image(s) to {dirs.inpainted} (inputs in {dirs.gt}, masks in "
               f"{dirs.gt_keep_mask}, masked inputs in {dirs.gt_masked})")

"""``repaint inpaint``: images and masks from files (or a reference config) through one model."""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import click
import torch

from ..accel import PRECISIONS, Accel
from ..io import OutputDirs, OutputWriter, fit_to_size, load_image, save_image
from ..masks import MaskError, load_mask
from ..sampler import INJECTION_MODES, Step
from ..settings import FAST, SamplerSettings, with_overrides
from .common import (InputError, device_of, explicit_options, fit_mode, handles_errors, parse_settings,
                     unet_config_option)

# The bundled 64x64 face model gets the fast preset (T=50, j=5, r=10, resampling at t <= 20: 230 network calls, which
# matched the paper's 2,410-call schedule on the exact Gaussian-mixture benchmark); `repaint inpaint IMAGE MASK` then
# takes seconds on two CPU cores. Official checkpoints and other files get the paper's schedule (250 / 10 / 10).
BUNDLED_DEFAULT_SCHEDULE = dict(steps=50, jump_length=5, jump_n_sample=10, start_resampling=20)

EXAMPLES = """
\b
Examples:
  repaint inpaint examples/face.png examples/face_mask.png
  repaint inpaint photo.png hole.png --model celeba256 --resize --crop --n-samples 4
  repaint inpaint dog.png mask.png --model imagenet256 --classifier imagenet256_classifier --class-label 207
  repaint inpaint --conf confs/test_c256_thin.yml          (a config of the reference repository)
"""


# ---------------------------------------------------------------------------------------------------------------
# repaint inpaint
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class _Item:
    name: str
    image: torch.Tensor   # [3, H, W] in [-1, 1]
    mask: torch.Tensor    # [1, H, W], 1 = keep


def _load_item(image_path: Path, mask_path: Path, size: int, fit: str, invert: bool) -> _Item:
    """Image and mask at the model's size, checked: same size, something to fill."""
    image = fit_to_size(load_image(image_path), size, fit, what=f"image {image_path}")
    mask = fit_to_size(load_mask(mask_path, invert=invert)[None], size, fit, mask=True, what=f"mask {mask_path}")
    if mask.shape[-2:] != image.shape[-2:]:
        raise MaskError(f"mask {mask_path} is {mask.shape[-1]}x{mask.shape[-2]} but the image is "
                        f"{image.shape[-1]}x{image.shape[-2]}")
    if bool((mask == 1).all()):
        raise MaskError(f"mask {mask_path} has no pixel to fill (all white = keep); black marks the region to "
                        "fill (--invert-mask if your mask uses white for holes)")
    if bool((mask == 0).all()):
        warnings.warn(f"mask {mask_path} is all black: nothing of the image is kept, this is unconditional "
                      "generation", stacklevel=2)
    return _Item(image_path.stem, image, mask)


def _settings(model: str, opts: dict, explicit: set[str], base: SamplerSettings | None) -> SamplerSettings:
    """The sampler settings: conf (if any) or the model's recommended schedule, then explicit options."""

    if opts["fast"]:
        base = FAST
    elif base is None:
        base = SamplerSettings(**BUNDLED_DEFAULT_SCHEDULE) if model == "default" else SamplerSettings()
    schedule = {k: opts[k] for k in ("steps", "jump_length", "jump_n_sample", "start_resampling", "eta")
                if opts[k] is not None}
    if "steps" in schedule:
        base = replace(base, timestep_respacing="")
    return with_overrides(
        base, **schedule,
        injection=opts["injection"] if "injection" in explicit else None,
        paste_known=False if opts["no_paste"] else None, sampler=opts["sampler"],
    )


def _label_for(seed: int, classes: int) -> int:
    return int(torch.randint(classes, (1,), generator=torch.Generator().manual_seed(seed)))


class _Run:
    """Samples every (item, seed) job in batches; writes an item's files once all its samples are done."""

    def __init__(self, inpainter, items, seeds, settings, writer, labels, random_labels, classifier_scale,
                 batch_size, save_frames, frames_dir):
        self.inp, self.items, self.seeds, self.settings, self.writer = inpainter, items, seeds, settings, writer
        self.labels, self.random_labels, self.scale = labels, random_labels, classifier_scale
        self.batch_size, self.save_frames, self.frames_dir = batch_size, save_frames, frames_dir
        self.jobs = [(i, seed) for i in range(len(items)) for seed in seeds]

    def batches(self) -> list[list[tuple[int, int]]]:
        return [self.jobs[i:i + self.batch_size] for i in range(0, len(self.jobs), self.batch_size)]

    def _labels(self, batch):
        if self.labels is not None:
            return [self.labels] * len(batch)
        if self.random_labels:
            return [_label_for(seed, self.inp.num_classes) for _, seed in batch]
        return None

    def run(self, bar) -> int:
        done: dict[int, dict[int, torch.Tensor]] = {}
        for batch in self.batches():
            frames: list[tuple[int, torch.Tensor]] = []

            def callback(step: Step) -> None:
                if step.kind == "reverse":
                    bar.update(1)
                    if self.save_frames and step.calls % self.save_frames == 0 and step.pred_xstart is not None:
                        frames.append((step.calls, step.pred_xstart.detach().cpu()))

            images = torch.stack([self.items[i].image for i, _ in batch])
            masks = torch.stack([self.items[i].mask for i, _ in batch])
            out = self.inp(images, masks, [seed for _, seed in batch], self.settings, labels=self._labels(batch),
                           classifier_scale=self.scale, callback=callback).cpu()
            for b, (i, seed) in enumerate(batch):
                done.setdefault(i, {})[seed] = out[b]
                self._write_frames(self.items[i].name, seed, [(c, f[b]) for c, f in frames])
                if len(done[i]) == len(self.seeds):
                    item = self.items[i]
                    self.writer.write(item.name, item.image, item.mask, done.pop(i))
        return len(self.jobs)

    def _write_frames(self, name, seed, frames) -> None:
        for calls, frame in frames:
            save_image(frame.clamp(-1, 1), self.frames_dir / f"{name}_s{seed}" / f"{calls:05d}.png")


@click.command(epilog=EXAMPLES)
@click.argument("image", required=False, type=click.Path(path_type=Path))
@click.argument("mask", required=False, type=click.Path(path_type=Path))
@click.option("--model", default="default", show_default=True,
              help='Checkpoint: "default" (the bundled 64x64 face model), a preset name or a file path.')
@click.option("--preset", default=None, help="Force the architecture of a preset for a checkpoint file.")
@unet_config_option
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Respaced diffusion steps T. Default: the model's recommended schedule (paper: 250).")
@click.option("--jump-length", type=click.IntRange(min=1), default=None, help="Jump length j (paper: 10).")
@click.option("--jump-n-sample", "--resamplings", "jump_n_sample", type=click.IntRange(min=1), default=None,
              help="Resamplings r (paper: 10).")
@click.option("--n-samples", type=click.IntRange(min=1), default=1, show_default=True,
              help="Samples per image; sample k uses seed SEED + k.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Samples run together. Default: all samples of one image (capped at 8).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed of the first sample.")
@click.option("--class-label", type=int, default=None, help="Class for class-conditional models / guidance.")
@click.option("--classifier", default=None, help="Noisy-image classifier for guidance: preset name or file.")
@click.option("--classifier-scale", type=float, default=1.0, show_default=True, help="Guidance strength.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True, help="Output folder (inpainted/, gt_masked/, gt_keep_mask/, gt/).")
@click.option("--invert-mask", is_flag=True, help="The mask file uses white for the region to fill.")
@click.option("--resize", is_flag=True, help="Scale image and mask to the model's size (with --crop: keep aspect).")
@click.option("--crop", is_flag=True, help="Cut out the centre at the model's size (with --resize: scale first).")
@click.option("--injection", type=click.Choice(INJECTION_MODES), default="reference", show_default=True,
              help="How the known region is joined: as the reference code, or as the paper's Alg. 1.")
@click.option("--no-paste", is_flag=True, help="Do not paste the exact known pixels at the end (as the reference).")
@click.option("--sampler", default=None, help="Sampler: repaint (default), ddim_repaint, ddnm, sdedit_repeat.")
@click.option("--fast", is_flag=True,
              help="The fast preset: T=50, j=5, r=10, resampling only at t<=20 (230 calls; docs/fidelity.md).")
@click.option("--start-resampling", type=click.IntRange(min=0), default=None,
              help="Resample only at t <= this (reference's start_resampling).")
@click.option("--eta", type=click.FloatRange(min=0), default=None, help="DDIM eta of ddim_repaint / ddnm.")
@click.option("--conf", "conf_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A reference RePaint YAML config (confs/test_*.yml); options given here override it.")
@click.option("--save-frames", type=click.IntRange(min=1), default=None,
              help="Also save the x0 estimate every N network calls to OUT/frames/.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="Network precision: auto = fp16 on CUDA, fp32 on CPU; fp32 executes like the reference.")
@click.option("--compile", "compile_net", is_flag=True, help="torch.compile the network (worth it for long runs).")
@click.option("--cuda-graphs", is_flag=True,
              help="Replay the network as a CUDA graph (CUDA only; one capture per batch shape).")
@click.pass_context
@handles_errors
def inpaint(ctx: click.Context, image: Path | None, mask: Path | None, **opts) -> None:
    """Inpaint IMAGE where MASK is black (white = keep), writing PNGs under --out."""
    from ..conf import load_inpainter, parse_conf, read_conf
    from ..pipeline import Inpainter

    explicit = explicit_options(ctx)
    conf = parse_conf(read_conf(opts["conf_file"])) if opts["conf_file"] else None
    if conf is not None and conf.unknown:
        warnings.warn(f"config keys not understood, ignored: {', '.join(conf.unknown)}", stacklevel=1)
    if (image is None) != (mask is None) or (image is None and conf is None):
        raise click.UsageError("give IMAGE and MASK (or --conf FILE with data folders)")
    if conf is not None and image is None and not conf.data:
        raise click.UsageError("the config has no data.eval entry; give IMAGE and MASK")

    device = device_of(opts["device"] if "device" in explicit or conf is None or not conf.device else conf.device)
    model = opts["model"]
    if opts["cuda_graphs"] and torch.device(device).type != "cuda":
        raise InputError(f"--cuda-graphs needs a CUDA device, not {device}")
    accel = Accel(precision=opts["precision"], compile=opts["compile_net"], cuda_graphs=opts["cuda_graphs"])
    if conf is not None and "model" not in explicit:
        explicit_accel = {"precision", "compile_net", "cuda_graphs"} & explicit
        inpainter = load_inpainter(conf, device, classifier=opts["classifier"],
                                   accel=accel if explicit_accel else None)
    else:
        conf_classifier = conf.classifier_path if conf is not None and conf.classifier_scale > 0 else None
        inpainter = Inpainter.load(model, classifier=opts["classifier"] or conf_classifier, device=device,
                                   preset=opts["preset"], accel=accel,
                                   unet_config=parse_settings(opts["unet_config"]) or None)
    settings = _settings(model if conf is None else "conf", opts, explicit, None if conf is None else conf.settings)
    label = opts["class_label"] if "class_label" in explicit or conf is None else conf.class_label
    if label is not None and inpainter.num_classes is not None and not 0 <= label < inpainter.num_classes:
        raise InputError(f"--class-label {label} is out of range 0..{inpainter.num_classes - 1}")
    scale = opts["classifier_scale"] if "classifier_scale" in explicit or conf is None else conf.classifier_scale

    size, fit = inpainter.image_size, fit_mode(opts["resize"], opts["crop"])
    if image is not None:
        groups = [([_load_item(image, mask, size, fit, opts["invert_mask"])], OutputDirs.under(opts["out_dir"]), None)]
    else:
        fit = fit if {"resize", "crop"} & explicit else "resize-crop"  # the reference's loader scales and crops
        groups = [([_load_item(i, m, size, fit, opts["invert_mask"]) for _, i, m in d.pairs()],
                   OutputDirs.under(opts["out_dir"]) if "out_dir" in explicit else d.output_dirs(opts["out_dir"]),
                   d.batch_size) for d in conf.data]

    seeds = [opts["seed"] + k for k in range(opts["n_samples"])]
    calls = _describe(inpainter, settings, model if conf is None else (opts["model"] if "model" in explicit
                                                                          else conf.model_path))
    random_labels = label is None and inpainter.num_classes is not None and conf is not None
    runs = []
    for items, dirs, conf_batch in groups:
        batch = opts["batch_size"] or conf_batch or min(len(seeds), 8)
        runs.append(_Run(inpainter, items, seeds, settings, OutputWriter(dirs), label, random_labels, scale, batch,
                         opts["save_frames"], Path(opts["out_dir"]) / "frames"))
    total = None if calls is None else calls * sum(len(r.batches()) for r in runs)
    with _progress(total) as bar:
        counts = [run.run(bar) for run in runs]
    for run, count in zip(runs, counts):
        click.echo(f"wrote {count} inpainted image(s) to {run.writer.dirs.inpainted} "
                   f"(inputs in {run.writer.dirs.gt}, masks in {run.writer.dirs.gt_keep_mask}, "
                   f"masked inputs in {run.writer.dirs.gt_masked})")


def _describe(inpainter, settings, model_name) -> int | None:
    """Print the model and schedule; return network calls per batch (None when the sampler has no jump schedule)."""
    steps = inpainter.diffusion(settings).num_timesteps
    click.echo(f"model: {model_name} ({inpainter.image_size}x{inpainter.image_size}"
               f"{', class-conditional' if inpainter.num_classes else ''}) on {inpainter.device}")
    if settings.sampler not in ("repaint", "ddim_repaint", "ddnm"):
        click.echo(f"sampler: {settings.sampler}, {steps} steps")
        return None
    calls = settings.jump_schedule(steps).network_calls()
    limit = f" start_resampling={settings.start_resampling}" if settings.start_resampling < steps else ""
    click.echo(f"sampler: {settings.sampler}, steps={steps} jump_length={settings.jump_length} "
               f"jump_n_sample={settings.jump_n_sample}{limit} -> {calls} network calls per sample batch")
    return calls


def _progress(total):
    from tqdm import tqdm

    return tqdm(total=total, unit="call", desc="inpainting", file=sys.stderr, dynamic_ncols=True, leave=False)



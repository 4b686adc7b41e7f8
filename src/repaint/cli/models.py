"""``repaint models`` (the model table, and what is on disk) and ``repaint download`` (fetch one, verified)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import handles_errors

KIND_WORDS = {"unet": "ADM checkpoint", "classifier": "ADM classifier", "diffusers": "diffusers DDPM"}


def _size(preset, path: Path | None) -> str:
    if path is not None and path.is_file():
        return _bytes(path.stat().st_size)
    if path is not None and path.is_dir():
        return _bytes(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()))
    return _bytes(preset.size) if preset.size else "?"


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _default_run(preset) -> str:
    from ..inpainter import recommended_settings
    from ..samplers import describe

    if not preset.denoiser:
        return "classifier guidance (--classifier)"
    return describe(recommended_settings(preset.name))


@click.command(epilog="\b\nExamples:\n  repaint models\n  repaint download celeba256   (or: --model NAME fetches "
                      "it on first use)")
@handles_errors
def models() -> None:
    """List every model the tool knows: kind, resolution, size, licence, source, default run, and where it is on
    disk. "?" sizes are unknown until the first download."""
    from ..checkpoints import PRESETS, search_dirs
    from ..checkpoints.download import find_on_disk

    folders = search_dirs()
    header = f"{'NAME':22s} {'KIND':15s} {'RES':>4s} {'CLASSES':8s} {'SIZE':>9s}  {'DEFAULT RUN':45s} ON DISK"
    click.echo(header)
    for preset in PRESETS.values():
        path = find_on_disk(preset, folders)
        classes = "1000" if preset.class_cond or preset.kind == "classifier" else "-"
        click.echo(f"{preset.name:22s} {KIND_WORDS[preset.kind]:15s} {preset.image_size:4d} {classes:8s} "
                   f"{_size(preset, path):>9s}  {_default_run(preset):45s} {path or 'no'}")
        click.echo(f"{'':22s} {preset.description}")
        click.echo(f"{'':22s} from: {preset.source or preset.published}; licence: {preset.license}")


@click.command(epilog="\b\nExamples:\n"
                      "  repaint download imagenet256\n"
                      "  repaint download https://example.org/my_model.pt --sha256 HEX --to ./models\n"
                      "  repaint download hf:google/ddpm-ema-church-256\n"
                      "  repaint download drive:FILE_ID          (Google Drive, needs gdown)")
@click.argument("target", metavar="NAME|URL")
@click.option("--sha256", default=None, metavar="HEX",
              help="The file's sha256; default: the published hash, else the one recorded at the first download.")
@click.option("--to", "to", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder to put it in (default: the models/ folder of REPAINT_HOME or the user cache folder).")
@click.option("--mirror", default=None, envvar="REPAINT_MIRROR", metavar="URL",
              help="Fetch known models' files from URL/FILENAME instead of their home (env: REPAINT_MIRROR).")
@click.option("--retries", type=click.IntRange(min=0), default=3, show_default=True,
              help="Resume a cut connection this many times within the call.")
@handles_errors
def download(target: str, sha256: str | None, to: Path | None, mirror: str | None, retries: int) -> None:
    """Fetch a model (a NAME of `repaint models`, an http(s) URL, drive:FILE_ID or hf:ORG/NAME[@REVISION]) into the
    model cache, resuming a partial download, verifying size, sha256 and a safe load, and print its path last."""
    from ..checkpoints.download import fetch

    path = fetch(target, to=to, sha256=sha256, mirror=mirror, retries=retries)
    click.echo(str(path))

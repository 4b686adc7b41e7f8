"""Every bad input gets one clear line: a table of cases across the command line and the Python API.

Each case runs one command (in-process, through click's runner) or one library call against files prepared once in
a work folder, and the test asserts the project's rule: a non-zero exit, exactly one non-empty line on stderr that
starts ``repaint: error:`` (``repaint: warning:`` lines may come before it), no traceback, the expected words in
the message, and no file in the work folder that was not there before (nothing half-written).

The observed exit codes and messages are rendered as the table in docs/bad-inputs.md, and the test fails when the
file differs, so the document cannot drift. Regenerate it with

    REPAINT_WRITE_DOCS=1 python -m pytest tests/test_bad_inputs.py

Adding a case is one line in CASES: Case(what is wrong, the command, words the message must contain). A command
is a string with {placeholders} for the prepared files (see ``inputs``); a case whose command starts with "api:"
calls the Python function of the same name in API_CALLS.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from evaluation_helpers import TINY, image_folder, tiny_model
from PIL import Image

from repaint.cli import cli
from repaint.models.config import DiffusionSettings, build_model
from repaint.checkpoints import save_checkpoint

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "bad-inputs.md"
TINY_TRAIN = ("--image-size 16 --model-channels 32 --channel-mult 1,1 --attention-resolutions 8 "
              "--num-head-channels 32 --diffusion-steps 20 --steps 1 --batch-size 4 --sample-interval 0 "
              "--device cpu")


@dataclass(frozen=True)
class Case:
    what: str       # what is wrong, in a few words
    command: str    # "inpaint ..." (the repaint command line) or "api:NAME" (a call of API_CALLS)
    expect: str     # words the error message must contain


CASES = [
    # repaint inpaint (the bundled 64x64 model unless --model says otherwise)
    Case("image file missing", "inpaint {w}/missing.png {mask} --out {out}", "image file not found"),
    Case("--seed beyond 2**63 (refused before loading)",
         "inpaint {face} {mask} --out {out} --seed 99999999999999999999",
         "out of range"),
    Case("output folder cannot be created (before sampling)", "inpaint {face} {mask} --out {face}/results",
         "cannot write to the output folder"),
    Case("image is a folder", "inpaint {w}/images {mask} --out {out}", "got a folder"),
    Case("image file corrupt", "inpaint {w}/corrupt.png {mask} --out {out}", "cannot read image"),
    Case("image over Pillow's pixel limit", "inpaint {w}/bomb.png {mask} --out {out}", "safety limit"),
    Case("float image outside [0, 1]", "inpaint {w}/hdr.tif {mask} --out {out}", "outside [0, 1]"),
    Case("animated image", "inpaint {w}/anim.gif {mask} --out {out}", "frames"),
    Case("image of another size, --fit none", "inpaint {w}/big.png {w}/mask80.png --out {out} --fit none", "80x80"),
    Case("mask file corrupt", "inpaint {face} {w}/corrupt.png --out {out}", "cannot read mask"),
    Case("mask over Pillow's pixel limit", "inpaint {face} {w}/bomb.png --out {out}", "safety limit"),
    Case("mask of another size than the image", "inpaint {face} {w}/mask32.png --out {out}",
         "must have its image's size"),
    Case("mask with nothing to fill", "inpaint {face} {w}/white.png --out {out}", "no pixel to fill"),
    Case("only an image, no mask", "inpaint {face} --out {out}", "give IMAGE and MASK"),
    Case("--steps 1", "inpaint {face} {mask} --out {out} --steps 1", "steps must be at least 2"),
    Case("--steps 0", "inpaint {face} {mask} --out {out} --steps 0", "'--steps'"),
    Case("--jump-length 0", "inpaint {face} {mask} --out {out} --jump-length 0", "'--jump-length'"),
    Case("unknown sampler", "inpaint {face} {mask} --out {out} --sampler fastest", "'fastest' is not one of"),
    Case("checkpoint file missing", "inpaint {face} {mask} --out {out} --model {w}/nowhere.pt",
         "no checkpoint file"),
    Case("preset not downloaded", "inpaint {face} {mask} --out {out} --model celeba256", "celeba256_250000.pt"),
    Case("checkpoint of random bytes", "inpaint {face} {mask} --out {out} --model {w}/corrupt.pt",
         "cannot read checkpoint"),
    Case("weights of another network", "inpaint {face} {mask} --out {out} --model {w}/other.safetensors",
         "not a guided-diffusion UNet or classifier"),
    Case("a classifier given as the model", "inpaint {face} {mask} --out {out} --model {w}/classifier.pt",
         "holds a classifier state dict, not a unet"),
    Case("--unet-config without =", "inpaint {face} {mask} --out {out} --unet-config num_heads",
         "takes KEY=VALUE"),
    Case("--unet-config unknown setting", "inpaint {face} {mask} --out {out} --unet-config num_hedas=2",
         "unknown UNetConfig keys"),
    Case("--unet-config for a diffusers folder", "inpaint {face} {mask} --out {out} --model {w}/images "
         "--unet-config num_heads=2", "diffusers folder"),
    Case("bad config file beside the checkpoint", "inpaint {img32} {mask32} --out {out} --model {w}/sidecar.pt",
         "cannot read the config file"),
    Case("class label for an unconditional model", "inpaint {face} {mask} --out {out} --class-label 3",
         "class label"),
    Case("--cuda-graphs on the CPU", "inpaint {face} {mask} --out {out} --cuda-graphs --device cpu",
         "needs a CUDA device"),
    Case("--device cuda without CUDA", "inpaint {face} {mask} --out {out} --device cuda", "no CUDA device"),
    Case("reference config missing", "inpaint --conf {w}/nowhere.yml --out {out}", "nowhere.yml"),
    Case("reference config not YAML", "inpaint --conf {w}/broken.yml --out {out}", "broken.yml"),
    Case("reference config without architecture", "inpaint --conf {w}/noarch.yml --out {out}", "num_channels"),
    Case("the mask is inside --out, where a result goes",
         "inpaint {face} {w}/inside/gt_keep_mask/face.png --out {w}/inside --invert-mask", "would be overwritten"),
    Case("a folder where a result file goes", "inpaint {face} {mask} --out {w}/blocked", "in the way"),
    Case("--out is a dangling symbolic link", "inpaint {face} {mask} --out {w}/dangling", "symbolic link to nothing"),
    Case("image is a named pipe (refused before loading)", "inpaint {w}/pipe.png {mask} --out {out}",
         "not a regular file"),
    Case("a billion resamplings", "inpaint {face} {mask} --out {out} --jump-n-sample 1000000000",
         "over the limit"),
    Case("ten billion samples", "inpaint {face} {mask} --out {out} --n-samples 10000000000", "--n-samples"),
    Case("--eta nan", "inpaint {face} {mask} --out {out} --sampler ddnm --eta nan", "finite"),
    Case("a sampler option of NaN", "inpaint {face} {mask} --out {out} --sampler smc --option particles=.nan",
         "option particles"),
    Case("--paper with --fast", "inpaint {face} {mask} --out {out} --paper --fast", "give one"),
    Case("a model that produces NaN", "inpaint {img32} {mask32} --out {out} --model {w}/nan.safetensors --steps 2 "
         "--jump-length 1 --jump-n-sample 1", "NaN"),
    # repaint eval / ablate (a tiny 32x32 model)
    Case("image folder missing", "eval {w}/nowhere --model {tiny} --out {out}", "'IMAGES'"),
    Case("eval: output folder cannot be created", "eval {w}/images --model {tiny} --out {face}/eval",
         "cannot write to the output folder"),
    Case("no images in the folder", "eval {w}/empty --model {tiny} --out {out}", "no image files"),
    Case("two images with one name", "eval {w}/dup --model {tiny} --out {out}", "two images named"),
    Case("unknown mask setting", "eval {w}/images --model {tiny} --masks hexagon --out {out}", "neither a mask kind"),
    Case("--steps 1 (nothing written)", "eval {w}/images --model {tiny} --out {out} --steps 1",
         "steps must be at least 2"),
    Case("LPIPS required, AlexNet weights missing", "eval {w}/images --model {tiny} --out {out} --metrics lpips",
         "--lpips-weights"),
    Case("AlexNet weights damaged", "eval {w}/images --model {tiny} --out {out} --lpips-weights {w}/corrupt.pt",
         "cannot use"),
    Case("unknown metric", "eval {w}/images --model {tiny} --out {out} --metrics fid", "'--metrics'"),
    Case("--out missing", "eval {w}/images --model {tiny}", "Missing option '--out'"),
    Case("--n-samples 0", "eval {w}/images --model {tiny} --out {out} --n-samples 0", "'--n-samples'"),
    Case("output folder of another run", "eval {w}/images --model {tiny} --out {w}/other_run",
         "holds a run with other settings"),
    Case("checkpoint of random bytes", "eval {w}/images --model {w}/corrupt.pt --out {out}",
         "cannot read checkpoint"),
    Case("slowing down past the trained steps", "ablate resampling-vs-slowdown {w}/images --model {tiny} "
         "--out {out} --steps 60 --resamplings 3", "trained with at least"),
    Case("ablation needs LPIPS, weights missing", "ablate jump-grid {w}/images --model {tiny} --out {out} "
         "--metrics lpips", "--lpips-weights"),
    # repaint train / export
    Case("training data missing", "train {w}/nowhere --out {out}", "training data must be"),
    Case("no images in the training folder", "train {w}/empty --out {out}", "no images"),
    Case("fewer images than a batch", "train {w}/images --out {out} --batch-size 8", "cannot fill a batch"),
    Case("every training image unreadable", "train {w}/unreadable --out {out} " + TINY_TRAIN,
         "none of the 4 images"),
    Case("resume checkpoint missing", "train {w}/train --out {out} --resume {w}/nowhere.pt " + TINY_TRAIN,
         "training checkpoint not found"),
    Case("resume checkpoint of random bytes", "train {w}/train --out {out} --resume {w}/corrupt.pt " + TINY_TRAIN,
         "cannot read training checkpoint"),
    Case("resume a run with another batch size", "train {w}/train --out {w}/run " + TINY_TRAIN.replace(
        "--batch-size 4", "--batch-size 2"), "batch_size differ"),
    Case("fp16 training without CUDA", "train {w}/train --out {out} --precision fp16 " + TINY_TRAIN, "needs CUDA"),
    Case("non-numeric --channel-mult", "train {w}/train --out {out} --channel-mult a,b", "comma-separated numbers"),
    Case("--batch-size 0", "train {w}/train --out {out} --batch-size 0 " + TINY_TRAIN.replace("--batch-size 4", ""),
         "batch_size >= 1"),
    Case("export: checkpoint missing", "export {w}/nowhere.pt {out}.safetensors", "training checkpoint not found"),
    Case("export: checkpoint of random bytes", "export {w}/corrupt.pt {out}.safetensors",
         "cannot read training checkpoint"),
    Case("export: not a training checkpoint", "export {w}/classifier.pt {out}.safetensors",
         "not a repaint training checkpoint"),
    Case("export: output not .safetensors", "export {ckpt} {out}.pt", "must end in .safetensors"),
    # repaint validate / masks / schedule
    Case("validate --steps 1", "validate --steps 1", "steps must be at least 2"),
    Case("validate: unknown sampler", "validate --sampler fastest --n 10", "is not one of"),
    Case("masks: unknown kind", "masks hexagon --out {out}", "'hexagon' is not one of"),
    Case("masks: --side for a kind without sides", "masks wide --side top --out {out}", "--side only applies"),
    Case("schedule: jump longer than the walk", "schedule --steps 1", "must be smaller than steps"),
    Case("schedule: a billion resamplings", "schedule --jump-n-sample 1000000000", "over the limit"),
    # the Python API
    Case("load_image of a missing file", "api:load_image_missing", "image file not found"),
    Case("SamplerSettings(steps=1)", "api:settings_steps_1", "steps must be at least 2"),
    Case("Inpainter.load of an unknown name", "api:load_unknown_model", "no checkpoint file"),
    Case("one seed for two images", "api:seed_count", "1 seeds for 2 images"),
    Case("TrainConfig(precision='fp8')", "api:train_precision", "precision must be"),
    Case("evaluate(metrics=('fid',))", "api:evaluate_fid", "unknown metric"),
    Case("load_checkpoint of other weights", "api:load_other_weights", "not a guided-diffusion"),
    Case("make_mask of an unknown kind", "api:make_mask_unknown", "hexagon"),
    Case("api.inpaint with a mask of another size", "api:inpaint_mask_size", "mask must have its image's size"),
    Case("api.inpaint with an unknown fit", "api:inpaint_fit", "fit must be one of"),
    Case("api.inpaint with a hole too large for any sensible tile plan", "api:inpaint_tiles",
         "use fit 'resize'"),
    # repaint serve (only inputs refused before the server starts)
    Case("serve: model file missing", "serve --model {w}/nowhere.safetensors", "does not exist"),
    Case("serve: model file of random bytes", "serve --model {w}/corrupt.pt", "cannot read checkpoint"),
    Case("serve: --device cuda without CUDA", "serve --device cuda", "no CUDA device"),
    Case("serve: negative queue", "serve --max-queue -1", "'--max-queue'"),
    Case("serve: port out of range", "serve --port 70000", "'--port'"),
    # repaint study
    Case("study create: one result folder", "study create {out}.db {w}/images", "two or more result folders"),
    Case("study create: folders that do not line up", "study create {out}.db {w}/images {w}/dup",
         "do not line up"),
    Case("study report: study file missing", "study report {w}/nowhere.db --out {out}", "does not exist"),
    Case("study serve: study file missing", "study serve {w}/nowhere.db", "does not exist"),
]


# ---------------------------------------------------------------------------------------------------------------
# The prepared inputs.
# ---------------------------------------------------------------------------------------------------------------

def _png_header_only(path: Path, side: int = 14000) -> None:
    """A PNG that declares side x side pixels (Pillow refuses it on opening, before decoding)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    head = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(b"\0"))
                     + chunk(b"IEND", b""))


def _write_inputs(w: Path) -> dict[str, str]:
    rng = np.random.default_rng(0)
    shutil.copy(REPO / "examples" / "face.png", w / "face.png")
    shutil.copy(REPO / "examples" / "face_mask.png", w / "face_mask.png")
    (w / "corrupt.png").write_bytes(rng.bytes(2048))
    (w / "corrupt.pt").write_bytes(rng.bytes(4096))
    _png_header_only(w / "bomb.png")
    Image.fromarray(np.full((64, 64), 4.0, np.float32), mode="F").save(w / "hdr.tif")
    frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(w / "anim.gif", save_all=True, append_images=frames[1:])
    Image.new("RGB", (80, 80), (90, 30, 60)).save(w / "big.png")
    Image.new("L", (64, 64), 255).save(w / "white.png")
    Image.new("RGB", (32, 32), (90, 30, 60)).save(w / "img32.png")
    mask32 = np.full((32, 32), 255, np.uint8)
    mask32[8:24, 8:24] = 0
    Image.fromarray(mask32).save(w / "mask32.png")
    Image.fromarray(np.pad(mask32, 24, constant_values=255)).save(w / "mask80.png")
    tiny = tiny_model(w / "tiny.safetensors")
    from safetensors.torch import save_file

    save_file({"encoder.weight": torch.zeros(2, 2)}, str(w / "other.safetensors"))
    from official import load_fixture

    torch.save(load_fixture("classifier_s1")[1], w / "classifier.pt")
    torch.save(build_model(TINY).state_dict(), w / "sidecar.pt")
    (w / "sidecar.json").write_text("{not json")
    nan = build_model(TINY)
    with torch.no_grad():
        for p in nan.parameters():
            p.fill_(float("nan"))
    save_checkpoint(nan, TINY, w / "nan.safetensors", diffusion=DiffusionSettings(steps=100))
    image_folder(w / "images", n=3)
    (w / "empty").mkdir()
    image_folder(w / "dup", n=1)
    Image.new("RGB", (32, 32)).save(w / "dup" / "img0.jpg")
    (w / "unreadable").mkdir()
    for i in range(4):
        (w / "unreadable" / f"{i}.png").write_bytes(b"broken")
    image_folder(w / "train", n=8, size=16)
    (w / "broken.yml").write_text("model: [unclosed\n")
    (w / "noarch.yml").write_text("model_path: nowhere.pt\nname: x\n")
    (w / "inside" / "gt_keep_mask").mkdir(parents=True)
    Image.fromarray(255 - np.asarray(Image.open(w / "face_mask.png"))).save(w / "inside/gt_keep_mask/face.png")
    (w / "blocked" / "gt" / "face.png").mkdir(parents=True)
    (w / "dangling").symlink_to(w / "nowhere")
    os.mkfifo(w / "pipe.png")
    (w / "other_run").mkdir()
    (w / "other_run" / "manifest.json").write_text('{"version": 1, "seed": 5}')
    result = CliRunner().invoke(cli, shlex.split(f"train {w}/train --out {w}/run {TINY_TRAIN}"))
    assert result.exit_code == 0, result.output
    (ckpt,) = sorted((w / "run").glob("ckpt_*.pt"))
    return {"w": str(w), "face": str(w / "face.png"), "mask": str(w / "face_mask.png"), "tiny": str(tiny),
            "img32": str(w / "img32.png"), "mask32": str(w / "mask32.png"), "ckpt": str(ckpt)}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    work = tmp_path_factory.mktemp("bad_inputs")
    saved = {k: os.environ.get(k) for k in ("REPAINT_ALEXNET", "REPAINT_CHECKPOINTS", "TORCH_HOME")}
    os.environ["REPAINT_ALEXNET"] = str(work / "no-alexnet" / "alexnet-owt-7be5be79.pth")  # never on disk
    os.environ["REPAINT_CHECKPOINTS"] = str(work / "no-checkpoints")
    os.environ["TORCH_HOME"] = str(work / "torch-home")
    cwd = os.getcwd()
    os.chdir(work)  # presets are also looked for in the current folder
    try:
        yield work, _write_inputs(work)
    finally:
        os.chdir(cwd)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ---------------------------------------------------------------------------------------------------------------
# The Python API cases: each raises the error a front end turns into one line.
# ---------------------------------------------------------------------------------------------------------------

def _api_calls(p: dict[str, str]) -> dict:
    from repaint.evaluation import evaluate
    from repaint.images import load_image
    from repaint.masks import make_mask
    from repaint.inpainter import Inpainter
    from repaint.checkpoints import load_checkpoint
    from repaint.settings import SamplerSettings
    from repaint.training import TrainConfig

    w = Path(p["w"])

    def inpaint_call(mask_shape, fit="auto", photo=(40, 40)):
        from repaint import api

        inpainter = Inpainter.load(p["tiny"])
        api.inpaint(inpainter, np.zeros((*photo, 3), np.uint8), np.zeros(mask_shape, bool), fit=fit,
                    settings=SamplerSettings(steps=2, jump_length=1, jump_n_sample=1))

    def seed_count():
        inpainter = Inpainter.load(p["tiny"])
        inpainter(torch.zeros(2, 3, 32, 32), torch.ones(2, 1, 32, 32), seeds=[0],
                  settings=SamplerSettings(steps=2, jump_length=1, jump_n_sample=1))

    return {
        "load_image_missing": (f'load_image("{w}/missing.png")', lambda: load_image(w / "missing.png")),
        "settings_steps_1": ("SamplerSettings(steps=1)", lambda: SamplerSettings(steps=1)),
        "load_unknown_model": ('Inpainter.load("nosuch")', lambda: Inpainter.load("nosuch")),
        "seed_count": ("inpainter(images[2], masks[2], seeds=[0])", seed_count),
        "train_precision": ('TrainConfig(data, out, precision="fp8")',
                            lambda: TrainConfig(data=str(w / "train"), out=str(w / "x"), precision="fp8")),
        "evaluate_fid": (f'evaluate("{w}/images", out, metrics=("fid",))',
                         lambda: evaluate(w / "images", w / "x", p["tiny"], "half", metrics=("fid",),
                                          progress=False)),
        "load_other_weights": (f'load_checkpoint("{w}/other.safetensors")',
                               lambda: load_checkpoint(w / "other.safetensors")),
        "make_mask_unknown": ('make_mask("hexagon", 64)', lambda: make_mask("hexagon", 64)),
        "inpaint_mask_size": ("api.inpaint(inpainter, photo 40x40, mask 40x41)", lambda: inpaint_call((40, 41))),
        "inpaint_fit": ('api.inpaint(inpainter, photo, mask, fit="stretch")',
                        lambda: inpaint_call((40, 40), fit="stretch")),
        "inpaint_tiles": ("api.inpaint(inpainter, photo 1600x1600 all hole) on a 32x32 model",
                          lambda: inpaint_call((1600, 1600), photo=(1600, 1600))),
    }


# ---------------------------------------------------------------------------------------------------------------
# Running a case.
# ---------------------------------------------------------------------------------------------------------------

def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _lines(stderr: str) -> list[str]:
    """Non-empty stderr lines; a progress bar's carriage-return redraws keep only what is left visible."""
    return [line.split("\r")[-1].strip() for line in stderr.split("\n") if line.split("\r")[-1].strip()]


def _run_cli(command: str) -> tuple[int, list[str], BaseException | None]:
    result = CliRunner().invoke(cli, shlex.split(command), prog_name="repaint")
    error = None if result.exception is None or isinstance(result.exception, SystemExit) else result.exception
    return result.exit_code, _lines(result.stderr), error


def _run_api(call) -> tuple[str, list[str], BaseException | None]:
    from repaint.cli.common import one_line

    try:
        call()
    except (ValueError, OSError, RuntimeError) as err:  # what the front ends report as one line
        return type(err).__name__, [f"repaint: error: {one_line(err)}"], None
    except BaseException as err:  # noqa: BLE001 - anything else is a failure of this case
        return type(err).__name__, [], err
    return "no error", [], None


def _observe(case: Case, work: Path, paths: dict[str, str], index: int) -> dict:
    import time

    started = time.monotonic()
    values = {**paths, "out": str(work / "out" / f"case{index:02d}")}
    before = _files(work)
    if case.command.startswith("api:"):
        shown, call = _api_calls(values)[case.command[4:]]
        code, lines, error = _run_api(call)
        command = shown
    else:
        command = "repaint " + case.command.format(**values)
        code, lines, error = _run_cli(case.command.format(**values))
    if os.environ.get("REPAINT_TIME_CASES"):  # to find a slow case: REPAINT_TIME_CASES=1 pytest -s ...
        print(f"{time.monotonic() - started:6.2f} s  {case.what}")
    return {"case": case, "command": command, "code": code, "lines": lines, "error": error,
            "new_files": sorted(_files(work) - before)}


def _public(text: str, work: Path) -> str:
    """Paths of this machine replaced by placeholders, so the table is the same everywhere."""
    text = text.replace(str(work), "<tmp>").replace(str(REPO), "<repo>")
    return re.sub(r"/\S*?/site-packages", "<site-packages>", text)


def _markdown(observed: list[dict], work: Path) -> str:
    rows = ["| # | bad input | command | exit | message |", "|---:|---|---|---|---|"]
    for i, o in enumerate(observed, 1):
        message = _public(o["lines"][-1] if o["lines"] else "", work).replace("|", "\\|")
        command = _public(o["command"], work).replace("|", "\\|")
        rows.append(f"| {i} | {o['case'].what} | `{command}` | {o['code']} | {message} |")
    return (
        "# Bad inputs and what they get\n\n"
        "Every row was run by `tests/test_bad_inputs.py`, which asserts for each: a non-zero exit (for the Python "
        "API: an exception the front ends report as one line, named in the exit column), exactly one line "
        "`repaint: error: ...` on stderr after any `repaint: warning:` lines, no traceback, and no file left "
        "behind. The table is generated by that test and checked against this file, so it cannot drift: "
        "`REPAINT_WRITE_DOCS=1 python -m pytest tests/test_bad_inputs.py` rewrites it. `<tmp>` is the test's "
        "work folder. Exit status 2 means bad input or usage, 1 a run that failed.\n\n"
        + "\n".join(rows) + "\n"
    )


def test_every_bad_input_gets_one_line_and_leaves_nothing(inputs):
    work, paths = inputs
    assert len(CASES) >= 40
    observed = [_observe(case, work, paths, i) for i, case in enumerate(CASES)]
    problems = []
    for o in observed:
        case, lines = o["case"], o["lines"]
        errors = [line for line in lines if line.startswith("repaint: error:")]
        others = [line for line in lines if not line.startswith(("repaint: error:", "repaint: warning:"))]
        why = []
        if o["error"] is not None:
            why.append(f"raised {type(o['error']).__name__}: {o['error']}")
        if o["code"] in (0, "no error"):
            why.append("did not fail")
        if len(errors) != 1 or lines[-1] != errors[0]:
            why.append(f"{len(errors)} error lines (the error must be the last line)")
        if others or any("Traceback" in line for line in lines):
            why.append(f"other output on stderr: {others[:2]}")
        if errors and case.expect not in errors[0]:
            why.append(f"message lacks {case.expect!r}")
        if o["new_files"]:
            why.append(f"left files behind: {o['new_files'][:3]}")
        if why:
            problems.append(f"{case.what} ({o['command']}): {'; '.join(why)}; stderr: {lines}")
    assert not problems, "\n".join(problems)

    table = _markdown(observed, work)
    if os.environ.get("REPAINT_WRITE_DOCS") == "1":
        DOC.write_text(table)
    assert DOC.is_file() and DOC.read_text() == table, (
        f"{DOC} differs from the observed behaviour; regenerate it with "
        "REPAINT_WRITE_DOCS=1 python -m pytest tests/test_bad_inputs.py")

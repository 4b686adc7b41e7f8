"""End-to-end tests of the `repaint` command line on a tiny random UNet (16x16)."""

import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from repaint import accel
from repaint.cli import cli
from repaint.models.config import UNetConfig, build_model
from repaint.checkpoints import save_checkpoint

TINY = UNetConfig(image_size=16, model_channels=32, num_res_blocks=1, attention_resolutions=(8,), channel_mult=(1, 2),
                  learn_sigma=True)
FAST = ["--steps", "8", "--jump-length", "2", "--jump-n-sample", "2", "--device", "cpu"]


def tiny_checkpoint(path, config=TINY, seed=0):
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():
        for p in model.parameters():  # ADM zero-initialises its output convs: perturb so the output is not zero
            p.add_(torch.randn_like(p) * 0.02)
    return save_checkpoint(model, config, path)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def inpaint(files, out, *extra, image=None, mask=None):
    return run("inpaint", image or files["image"], mask or files["mask"], "--model", files["model"], "--out", out,
               *FAST, *extra)


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.startswith("repaint: error:")]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


def no_outputs(out):
    return not out.exists() or not any(p.is_file() for p in out.rglob("*"))


def test_inpaint_end_to_end(files, tmp_path):
    out = tmp_path / "out"
    result = inpaint(files, out, "--n-samples", "2", "--seed", "5")
    assert result.exit_code == 0, result.output
    assert "network calls" in result.stdout and str(out / "inpainted") in result.stdout
    names = {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    assert names == {"inpainted/face_s5.png", "inpainted/face_s6.png", "gt_masked/face.png",
                     "gt_keep_mask/face.png", "gt/face.png"}
    source, keep = pixels(files["image"]), pixels(files["mask"])[..., 0] == 255
    sample = pixels(out / "inpainted/face_s5.png")
    assert (sample[keep] == source[keep]).all()               # known region pasted exactly
    assert (sample[~keep] != source[~keep]).any()
    assert (pixels(out / "gt/face.png") == source).all()
    masked = pixels(out / "gt_masked/face.png")
    assert (masked[~keep] == 0).all() and (masked[keep] == source[keep]).all()
    assert (pixels(out / "gt_keep_mask/face.png")[..., 0] == np.where(keep, 255, 0)).all()
    assert not (pixels(out / "inpainted/face_s5.png") == pixels(out / "inpainted/face_s6.png")).all()


def test_same_seed_same_files_and_no_paste_differs(files, tmp_path):
    a, b, c = (inpaint(files, tmp_path / n, "--seed", "3") for n in "abc")
    assert a.exit_code == b.exit_code == 0
    first, second = (tmp_path / n / "inpainted/face_s3.png" for n in "ab")
    assert first.read_bytes() == second.read_bytes()
    d = inpaint(files, tmp_path / "d", "--seed", "3", "--no-paste", "--fit", "none")
    assert d.exit_code == 0, d.output
    keep = pixels(files["mask"])[..., 0] == 255
    assert (pixels(tmp_path / "d/inpainted/face_s3.png")[keep] != pixels(files["image"])[keep]).any()


def test_batching_does_not_change_results(files, tmp_path):
    assert inpaint(files, tmp_path / "a", "--n-samples", "2", "--batch-size", "1").exit_code == 0
    assert inpaint(files, tmp_path / "b", "--n-samples", "2", "--batch-size", "2").exit_code == 0
    for name in ("face_s0.png", "face_s1.png"):
        assert (pixels(tmp_path / "a/inpainted" / name) == pixels(tmp_path / "b/inpainted" / name)).all()


def test_the_batch_follows_free_memory_unless_given(files, tmp_path, monkeypatch):
    """No --batch-size: as many jobs per call as MemAvailable holds (here 2 of 4 samples); --batch-size wins."""
    import repaint.cost as cost
    from repaint.checkpoints import load_denoiser

    _, config, _ = load_denoiser(str(files["model"]))
    meminfo = tmp_path / "meminfo"
    room = 2.5 * cost.ACTIVATION_FACTOR * cost.activation_bytes(config) / cost.MEMORY_SHARE
    meminfo.write_text(f"MemAvailable: {int(room) // 1024} kB\n")
    monkeypatch.setattr(cost, "MEMINFO", meminfo)
    chosen = inpaint(files, tmp_path / "a", "--n-samples", "4", "--no-estimate")
    assert chosen.exit_code == 0, chosen.output
    assert re.search(r"batch: at most 2 jobs per network call \([\d.]+ [MG]B free \(MemAvailable\), 80% of it "
                     r"holds the activations of 2 image\(s\)", chosen.stdout), chosen.stdout
    assert "fit none, 1 window(s), batch 2, 28 network calls" in chosen.stdout
    forced = inpaint(files, tmp_path / "b", "--n-samples", "4", "--batch-size", "4", "--no-estimate")
    assert forced.exit_code == 0, forced.output
    assert "batch: at most 4 jobs per network call (as asked)" in forced.stdout
    assert "batch 4, 14 network calls" in forced.stdout


def test_the_estimate_follows_the_plan_before_any_progress(files, tmp_path):
    result = inpaint(files, tmp_path / "out")
    assert result.exit_code == 0, result.output
    text = result.output   # stdout and stderr as a terminal shows them, in the order written
    shown = re.search(r"\rface.png: 16x16, fit none, 1 window\(s\), batch 1, 14 network calls\n"
                      r"[^\n]*?(estimate: [^\r\n]*)\n", text)
    assert shown, text
    assert re.fullmatch(r"estimate: about [\d.]+ m?s, peak about [\d.]+ [MG]B of RAM \(timed on this machine: "
                        r"[\d.]+ m?s per call at batch 1\)", shown[1]), shown[1]
    assert shown.end() < text.index(" 1/14 ")   # before the first network call of the run
    skipped = inpaint(files, tmp_path / "quiet", "--no-estimate")
    assert skipped.exit_code == 0 and "estimate:" not in skipped.output


def test_save_frames(files, tmp_path):
    result = inpaint(files, tmp_path / "o", "--save-frames", "4")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "o/frames/face_w0_s0").glob("*.png"))) >= 2


def test_missing_image(files, tmp_path):
    out = tmp_path / "out"
    result = inpaint(files, out, image=tmp_path / "nope.png")
    assert result.exit_code == 2
    assert "not found" in error_line(result) and no_outputs(out)


def test_corrupt_mask(files, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    out = tmp_path / "out"
    result = inpaint(files, out, mask=bad)
    assert result.exit_code == 2 and "cannot read mask" in error_line(result) and no_outputs(out)


def test_missing_and_corrupt_checkpoint(files, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    for model in (tmp_path / "missing.safetensors", bad):
        out = tmp_path / "out"
        result = run("inpaint", files["image"], files["mask"], "--model", model, "--out", out, *FAST)
        assert result.exit_code == 2 and "checkpoint" in error_line(result) and no_outputs(out)


def test_cuda_graphs_on_the_cpu_is_an_input_error(files, tmp_path):
    out = tmp_path / "out"
    result = inpaint(files, out, "--device", "cpu", "--cuda-graphs")
    assert result.exit_code == 2 and "--cuda-graphs needs a CUDA device" in error_line(result) and no_outputs(out)


def test_other_sizes_are_fitted_and_written_at_full_size(files, tmp_path):
    rng = np.random.default_rng(1)
    big = tmp_path / "big.png"
    Image.fromarray(rng.integers(0, 256, (40, 24, 3), dtype=np.uint8)).save(big)      # not square, not 16
    big_mask = tmp_path / "big_mask.png"
    keep = np.full((40, 24), 255, np.uint8)
    keep[5:9, 3:7] = keep[30:40, 20:24] = 0                                          # two holes, one at a corner
    Image.fromarray(keep).save(big_mask)
    out = tmp_path / "out"
    result = inpaint(files, out, "--fit", "none", image=big, mask=big_mask)
    assert result.exit_code == 2 and "fit" in error_line(result) and no_outputs(out)
    for fit in ("auto", "crop", "resize"):
        result = inpaint(files, out / fit, "--fit", fit, image=big, mask=big_mask)
        assert result.exit_code == 0, result.output
        sample, source = pixels(out / fit / "inpainted/big_s0.png"), pixels(big)
        assert sample.shape == source.shape
        assert (sample[keep == 255] == source[keep == 255]).all()            # outside the hole: the original bytes
        assert (sample[keep == 0] != source[keep == 0]).any()


def test_mask_size_differs_from_image(files, tmp_path):
    small = tmp_path / "small_mask.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(small)
    out = tmp_path / "out"
    result = inpaint(files, out, mask=small)
    assert result.exit_code == 2 and "mask" in error_line(result) and no_outputs(out)


def test_non_binary_mask_and_rgba_warn(files, tmp_path):
    grey = np.asarray(Image.open(files["mask"])).copy()
    grey[0, 0] = 100
    grey_path = tmp_path / "grey.png"
    Image.fromarray(grey).save(grey_path)
    rgba = tmp_path / "rgba.png"
    Image.open(files["image"]).convert("RGBA").save(rgba)
    result = inpaint(files, tmp_path / "out", image=rgba, mask=grey_path)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("repaint: warning:")]
    assert any("not binary" in w for w in warnings) and any("transparency" in w for w in warnings)


def test_empty_mask_is_an_error(files, tmp_path):
    white = tmp_path / "white.png"
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(white)
    out = tmp_path / "out"
    result = inpaint(files, out, mask=white)
    assert result.exit_code == 2 and "no pixel to fill" in error_line(result) and no_outputs(out)


def test_all_black_mask_warns_unconditional(files, tmp_path):
    black = tmp_path / "black.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(black)
    result = inpaint(files, tmp_path / "out", mask=black)
    assert result.exit_code == 0 and "unconditional" in result.stderr


def test_class_label_out_of_range(files, tmp_path):
    model = tiny_checkpoint(tmp_path / "cond.safetensors", TINY.replace(class_cond=True, num_classes=3))
    out = tmp_path / "out"
    base = ["inpaint", files["image"], files["mask"], "--model", model, "--out", out, *FAST]
    result = run(*base, "--class-label", "7")
    assert result.exit_code == 2 and "out of range" in error_line(result) and no_outputs(out)
    result = run(*base)
    assert result.exit_code == 2 and "class label" in error_line(result) and no_outputs(out)
    assert run(*base, "--class-label", "2").exit_code == 0


def test_nan_model_is_a_runtime_error(files, tmp_path):
    torch.manual_seed(0)
    model = build_model(TINY)
    with torch.no_grad():
        model.out[-1].bias.fill_(float("nan"))
    path = save_checkpoint(model, TINY, tmp_path / "nan.safetensors")
    out = tmp_path / "out"
    result = run("inpaint", files["image"], files["mask"], "--model", path, "--out", out, *FAST)
    assert result.exit_code == 1 and "NaN" in error_line(result) and no_outputs(out)


def test_missing_bundled_model_is_one_line(files, tmp_path, monkeypatch):
    monkeypatch.setattr("repaint.checkpoints.load.default_model_path", lambda: tmp_path / "face64.safetensors")
    result = run("inpaint", files["image"], files["mask"], "--out", tmp_path / "out")
    assert result.exit_code == 2 and "bundled model" in error_line(result)


def test_schedule_counts_paper_setting():
    result = run("schedule", "--steps", "250", "--jump-length", "10", "--jump-n-sample", "10")
    assert result.exit_code == 0
    assert "network calls: 2410" in result.stdout


def test_schedule_plot(tmp_path):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "schedule.png"
    result = run("schedule", "--steps", "50", "--jump-length", "5", "--jump-n-sample", "3", "--plot", plot)
    assert result.exit_code == 0, result.output
    assert Image.open(plot).format == "PNG"


def test_schedule_plot_without_matplotlib(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    result = run("schedule", "--t-T", "20", "--plot", tmp_path / "s.png")
    assert result.exit_code == 2 and "matplotlib" in error_line(result)


def test_bad_schedule_is_one_line():
    result = run("schedule", "--t-T", "10", "--jump-length", "10", "--jump-n-sample", "2")
    assert result.exit_code == 2 and "jump_length" in error_line(result)


def test_presets_lists_files():
    result = run("presets")
    assert result.exit_code == 0 and "celeba256_250000.pt" in result.stdout and "published" in result.stdout


def test_ctrl_c_exits_130_and_writes_nothing(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "repaint", "inpaint", str(root / "examples/face.png"),
         str(root / "examples/face_mask.png"), "--paper", "--out", str(out), "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        # as from a terminal: a runner started in the background without job control ignores SIGINT, and a child
        # inherits that (Python then installs no KeyboardInterrupt handler)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stdout:                      # wait until sampling begins: the estimate is the last line before
        if line.startswith("estimate:"):
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "repaint: interrupted" in err and "Traceback" not in err
    assert not any(p.is_file() for p in out.rglob("*"))


def test_png_and_jpg_of_one_name_do_not_overwrite_each_other(files, tmp_path):
    jpg = tmp_path / "face.jpg"
    Image.open(files["image"]).save(jpg, quality=95)
    out = tmp_path / "out"
    assert inpaint(files, out).exit_code == 0
    assert inpaint(files, out, image=jpg).exit_code == 0
    assert {p.name for p in (out / "gt").iterdir()} == {"face.png", "face_jpg.png"}
    assert (pixels(out / "gt/face.png") == pixels(files["image"])).all()       # not overwritten by the JPEG's pixels


def test_every_example_in_the_help_is_a_complete_command():
    for command in ("inpaint", "eval", "ablate", "train", "export", "serve", "masks", "validate"):
        text = run(command, "--help").output
        examples = [line.strip() for line in text.split("Examples:")[-1].splitlines() if "repaint " in line]
        assert examples, command
        if command in ("eval", "ablate", "train", "masks"):                       # --out is required there
            assert all("--out" in line for line in examples if f" {command} " in f" {line} "), (command, examples)


@pytest.mark.parametrize("extra, says", [
    (("--precision", "bf16"), "use --precision fp32"),               # bf16 where the CPU would only emulate it
    (("--precision", "fp16"), "use --precision fp32"),               # fp16 is for CUDA
    (("--compile",), "needs a C++ compiler"),                        # torch.compile's CPU backend without g++/clang++
])
def test_a_mode_this_cpu_cannot_run_is_one_line_naming_the_alternative(files, tmp_path, monkeypatch, extra, says):
    monkeypatch.setattr(accel, "cpu_native_bf16", lambda: False)
    monkeypatch.setattr(accel, "cpu_compiler_available", lambda: False)
    out = tmp_path / "out"
    result = inpaint(files, out, "--device", "cpu", *extra)
    assert result.exit_code == 2 and says in error_line(result) and no_outputs(out)


def test_an_unknown_precision_is_one_line_naming_the_choices(files, tmp_path):
    result = inpaint(files, tmp_path / "out", "--precision", "int8")
    assert result.exit_code == 2 and "'int8' is not one of" in result.stderr and "fp32" in result.stderr
    assert "Traceback" not in result.output

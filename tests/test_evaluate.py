import contextlib
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from evaluation_helpers import FAST, SIZE, image_folder, tiny_model
from PIL import Image

from repaint import evaluation as ev
from repaint.images import load_image
from repaint.masks import load_mask, make_mask, save_mask
from repaint.evaluation.metrics import lpips_distance, psnr, ssim
from repaint.evaluation.outputs import _differences
from repaint.inpainter import Inpainter
from repaint.settings import SamplerSettings


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def inpainter(model_file):
    return Inpainter.load(str(model_file))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, inpainter):
    """Two mask settings, two samples per image, over three images plus one unreadable file."""
    root = tmp_path_factory.mktemp("eval")
    images = image_folder(root / "images")
    (images / "broken.png").write_bytes(b"not a png")
    out = root / "out"
    report = ev.evaluate(images, out, inpainter, ["half", "super_resolve_2x"], settings=FAST, n_samples=2,
                         batch_size=3, lpips_random=True, progress=False)
    return images, out, report


def run_again(images, out, inpainter, **changes):
    kwargs = dict(settings=FAST, n_samples=2, batch_size=3, lpips_random=True, progress=False)
    return ev.evaluate(images, out, inpainter, ["half", "super_resolve_2x"], **{**kwargs, **changes})


@contextlib.contextmanager
def counting(inpainter):
    """Counts the UNet's forward calls (a hook: the weights, and so the model's identity, stay the same)."""
    calls = []
    handle = inpainter.unet.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


def test_outputs_written_in_reference_layout(first_run):
    images, out, report = first_run
    assert json.loads((out / "manifest.json").read_text())["images"] == ["broken.png", "img0.png", "img1.png",
                                                                         "img2.png"]
    for setting in ("half", "super_resolve_2x"):
        for i, name in [(1, "img0"), (2, "img1"), (3, "img2")]:
            for k in range(2):
                assert (out / setting / "inpainted" / f"{name}_s{ev.sample_seed(0, i, k)}.png").is_file()
            for sub in ("gt", "gt_masked", "gt_keep_mask", "metrics"):
                assert (out / setting / sub / f"{name}.{'json' if sub == 'metrics' else 'png'}").is_file()
    assert {p.name for p in out.iterdir()} >= {"report.md", "report.csv", "per_image.csv", "manifest.json"}
    assert not list(out.rglob("*.tmp"))
    assert report.complete


def test_report_equals_recomputation_from_files(first_run):
    _, out, report = first_run
    rows = list(csv.DictReader((out / "report.csv").open()))
    for setting in ("half", "super_resolve_2x"):
        d = out / setting
        per_image = {"lpips": [], "psnr": [], "ssim": []}
        for name in ("img0", "img1", "img2"):
            gt = load_image(d / "gt" / f"{name}.png")
            samples = torch.stack([load_image(p) for p in sorted((d / "inpainted").glob(f"{name}_s*.png"))])
            ref = gt[None].expand_as(samples)
            per_image["lpips"].append(float(lpips_distance(samples, ref, random_backbone=True).mean()))
            per_image["psnr"].append(float(psnr(samples, ref).mean()))
            per_image["ssim"].append(float(ssim(samples, ref).mean()))
            # the known pixels are pasted: the result equals the input there
            mask = load_mask(d / "gt_keep_mask" / f"{name}.png")[None] > 0
            assert torch.equal(samples[:, :, mask[0]], ref[:, :, mask[0]])
        for metric, values in per_image.items():
            mean = sum(values) / 3
            assert report.value(setting, metric) == pytest.approx(mean, rel=1e-6)
            row = next(r for r in rows if r["setting"] == setting and r["metric"] == metric)
            assert float(row["mean"]) == pytest.approx(mean, rel=1e-6) and int(row["n_images"]) == 3
            assert float(row["ci95"]) > 0
        assert report.summary[setting]["diversity"][0] > 0
    assert ev.build_report(out).summary == report.summary


def test_known_region_is_the_mask_of_the_setting(first_run):
    _, out, _ = first_run
    mask = load_mask(out / "half" / "gt_keep_mask" / "img0.png") > 0
    assert torch.equal(mask.float(), make_mask("half", SIZE))


def test_unreadable_image_is_skipped_and_listed(first_run):
    _, out, report = first_run
    assert [(s, n) for s, n, _ in report.skipped] == [("half", "broken.png"), ("super_resolve_2x", "broken.png")]
    md = (out / "report.md").read_text()
    assert "## Skipped images" in md and "broken.png" in md and "cannot read image" in md
    assert "| metric | Half | Super-Resolve 2x |" in md
    per_image = list(csv.DictReader((out / "per_image.csv").open()))
    assert sum(r["status"].startswith("skipped") for r in per_image) == 2


def test_rerun_skips_finished_images(first_run, inpainter):
    images, out, report = first_run
    with counting(inpainter) as calls:
        again = run_again(images, out, inpainter)
    assert not calls
    assert again.summary == report.summary


def test_half_written_image_is_redone(first_run, inpainter):
    images, out, report = first_run
    (out / "half" / "metrics" / "img1.json").unlink()          # killed before its JSON was written
    (out / "half" / "inpainted" / ".img2_s3000.png.abc.tmp").write_bytes(b"partial")  # a temporary file left over
    record = json.loads((out / "half" / "metrics" / "img2.json").read_text())
    (out / "half" / record["samples"][1]["file"]).unlink()     # a sample file lost
    assert ev.build_report(out).missing == [("half", "img1.png"), ("half", "img2.png")]
    with counting(inpainter) as calls:
        again = run_again(images, out, inpainter)
    assert len(calls) == 2 * FAST.steps                # four samples in batches of three: two batches
    assert again.complete                                       # seeds depend on the image only: same numbers
    for setting, values in report.summary.items():
        for metric, (mean, half, n) in values.items():
            assert again.summary[setting][metric] == pytest.approx((mean, half, n), rel=1e-4)
    assert not list(out.rglob("*.tmp"))


def test_other_settings_are_refused(first_run, inpainter):
    images, out, _ = first_run
    with pytest.raises(ev.EvalError, match=r"differs in: seed.*new output folder.*delete"):
        run_again(images, out, inpainter, seed=5)
    with pytest.raises(ev.EvalError, match="differs in: sampler"):
        run_again(images, out, inpainter, settings=SamplerSettings(steps=6, jump_length=1, jump_n_sample=1))


def test_missing_mask_in_folder_is_reported(tmp_path, inpainter):
    images = image_folder(tmp_path / "images", n=2)
    masks = tmp_path / "mymasks"
    save_mask(make_mask("narrow", SIZE, seed=1), masks / "img0.png")
    report = ev.evaluate(images, tmp_path / "out", inpainter, masks, settings=FAST, metrics=("psnr",),
                         progress=False)
    assert report.settings == ["mymasks"]
    assert report.skipped == [("mymasks", "img1.png", f"no mask named img1.* in {masks}")]
    assert report.summary["mymasks"]["psnr"][2] == 1 and math.isnan(report.summary["mymasks"]["psnr"][1])
    saved = load_mask(tmp_path / "out" / "mymasks" / "gt_keep_mask" / "img0.png") > 0
    assert torch.equal(saved.float(), make_mask("narrow", SIZE, seed=1))


def test_without_a_batch_size_the_free_memory_chooses_it(tmp_path, inpainter, monkeypatch, capsys):
    """As `repaint inpaint` does: no --batch-size means repaint.cost.choose_batch's answer, said in a `batch:` line."""
    from repaint.cost import BatchChoice

    monkeypatch.setattr(ev.run, "choose_batch", lambda inp, requested: BatchChoice(requested or 2, "room for 2"))
    sizes = []
    handle = inpainter.unet.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    try:
        ev.evaluate(image_folder(tmp_path / "images", n=2), tmp_path / "out", inpainter, "half", settings=FAST,
                    n_samples=2, metrics=("psnr",), progress=True)
    finally:
        handle.remove()
    assert set(sizes) == {2}           # 2 images x 2 samples, two per call, where a batch of 8 would take all 4
    assert "batch: at most 2 jobs per network call (room for 2)" in capsys.readouterr().err


def test_other_sizes_are_fitted_or_skipped(tmp_path, inpainter):
    images = image_folder(tmp_path / "images", n=1, size=40)
    with pytest.warns(UserWarning, match="skipping img0.png: .*fit"):
        report = ev.evaluate(images, tmp_path / "a", inpainter, "half", settings=FAST, metrics=("psnr",),
                             fit="none", progress=False)
    assert [(s, n) for s, n, _ in report.skipped] == [("half", "img0.png")]
    report = ev.evaluate(images, tmp_path / "b", inpainter, "half", settings=FAST, metrics=("psnr",),
                         progress=False)
    assert report.complete
    gt = tmp_path / "b" / "half" / "gt" / "img0.png"
    assert Image.open(gt).size == (40, 40)                       # written at the image's own size
    keep = np.asarray(Image.open(tmp_path / "b" / "half" / "gt_keep_mask" / "img0.png")) > 127
    sample = np.asarray(Image.open(tmp_path / "b" / "half" / "inpainted" / "img0_s0.png"))
    assert (sample[keep] == np.asarray(Image.open(gt))[keep]).all()


def test_wrong_sized_and_oversized_images_are_skipped_like_corrupt_ones(tmp_path, inpainter):
    from test_images import huge_png

    images = image_folder(tmp_path / "images", n=2)
    Image.new("RGB", (40, 40)).save(images / "wide.png")
    huge_png(images / "bomb.png")
    with pytest.warns(UserWarning, match="skipping"):
        report = ev.evaluate(images, tmp_path / "out", inpainter, "half", settings=FAST, metrics=("psnr",),
                             fit="none", progress=False)
    reasons = {name: reason for _, name, reason in report.skipped}
    assert set(reasons) == {"wide.png", "bomb.png"} and report.complete
    assert "fit" in reasons["wide.png"] and "safety limit" in reasons["bomb.png"]
    assert report.summary["half"]["psnr"][2] == 2  # the two good images were evaluated


@pytest.fixture
def no_alexnet(tmp_path, monkeypatch):
    monkeypatch.setenv("REPAINT_ALEXNET", str(tmp_path / "absent" / "alexnet-owt-7be5be79.pth"))


def test_default_metrics_skip_lpips_without_weights_and_never_mix(tmp_path, inpainter, no_alexnet):
    images = image_folder(tmp_path / "images", n=1)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match=r"metric\(s\) lpips skipped, scoring with psnr, ssim only: .*"
                                         r"alexnet-owt-7be5be79.pth not found.*--lpips-weights"):
        report = ev.evaluate(images, out, inpainter, "half", settings=FAST, progress=False)
    assert report.manifest["metrics"] == ["psnr", "ssim"] and report.manifest["lpips"] == "none"
    assert set(report.summary["half"]) == {"psnr", "ssim"} and report.complete
    # the same metric set named explicitly is the same run (resumes); another set into this folder is refused
    assert ev.evaluate(images, out, inpainter, "half", settings=FAST, metrics=("psnr", "ssim"), progress=False).complete
    with pytest.raises(ev.EvalError, match="differs in: lpips, metrics"):
        ev.evaluate(images, out, inpainter, "half", settings=FAST, lpips_random=True, progress=False)


def test_a_required_metric_that_cannot_run_is_an_error_before_any_file(tmp_path, inpainter, no_alexnet):
    images = image_folder(tmp_path / "images", n=1)
    with pytest.raises(ev.EvalError, match="alexnet-owt-7be5be79.pth not found.*--lpips-weights") as error:
        ev.evaluate(images, tmp_path / "out", inpainter, "half", settings=FAST, metrics=("lpips", "psnr"),
                    progress=False)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()  # no manifest.json, so the corrected command can use the same folder
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not weights")
    with pytest.raises(ValueError, match=f"cannot use {bad} as the AlexNet weights") as error:
        ev.evaluate(images, tmp_path / "out", inpainter, "half", settings=FAST, lpips_weights=bad, progress=False)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_bad_arguments(tmp_path, inpainter):
    images = image_folder(tmp_path / "images", n=1)
    with pytest.raises(ev.EvalError, match="neither a mask kind"):
        ev.evaluate(images, tmp_path / "o", inpainter, "hexagon", settings=FAST, progress=False)
    with pytest.raises(ev.EvalError, match="unknown metric"):
        ev.evaluate(images, tmp_path / "o", inpainter, "half", metrics=("fid",), progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ev.EvalError, match="no image files"):
        ev.evaluate(tmp_path / "empty", tmp_path / "o2", inpainter, "half", progress=False)


def test_model_identity_ignores_the_file_name(model_file, inpainter, tmp_path):
    copy = tmp_path / "renamed.safetensors"
    copy.write_bytes(Path(model_file).read_bytes())
    a, b = ev.model_with_identity(str(model_file), "cpu")[1], ev.model_with_identity(str(copy), "cpu")[1]
    assert a["weights_sha256_1mb"] == b["weights_sha256_1mb"] and a["file"] != b["file"]
    assert _differences({"model": a}, {"model": b}) == []


def test_unet_settings_from_the_command_line_reach_the_model_and_the_manifest(tmp_path):
    from click.testing import CliRunner
    from evaluation_helpers import TINY

    from repaint.cli import cli
    from repaint.models.config import build_model

    images = image_folder(tmp_path / "images", n=1)
    model = tmp_path / "plain.pt"  # a bare state dict: the architecture is inferred, the heads guessed
    torch.save(build_model(TINY).state_dict(), model)
    args = ["eval", str(images), "--model", str(model), "--masks", "half", "--metrics", "psnr", "--steps", "2",
            "--jump-length", "1", "--jump-n-sample", "1", "--unet-config", "image_size=32"]
    guessed = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "a")], prog_name="repaint")
    assert guessed.exit_code == 0, guessed.output
    assert guessed.stderr.count("repaint: warning:") == 1 and "--unet-config" in guessed.stderr
    given = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "b"), "--unet-config", "num_heads=2",
                                     "--unet-config", "num_head_channels=-1", "--unet-config", "num_heads_upsample=1",
                                     "--unet-config", "use_new_attention_order=true"], prog_name="repaint")
    assert given.exit_code == 0, given.output
    assert "do not determine" not in given.stderr  # nothing was guessed
    config = json.loads((tmp_path / "b" / "manifest.json").read_text())["model"]["config"]
    assert (config["num_heads"], config["num_heads_upsample"], config["use_new_attention_order"]) == (2, 1, True)

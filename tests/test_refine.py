"""Sampler ``refine``: a classical fill at the photo's resolution, noised to start*T and denoised with RePaint joining.
Its cost is the table's, start 0 is the classical fill itself, a seed reproduces it, and the known bytes never
change."""

import numpy as np
import pytest
import torch

from evaluation_helpers import SIZE, tiny_model
from repaint import api
from repaint.inpainter import Inpainter
from repaint.samplers import SAMPLERS, network_calls
from repaint.samplers.classical import biharmonic_fill, telea_fill
from repaint.samplers.refine import start_step
from repaint.settings import SamplerSettings

pytest.importorskip("cv2")
pytest.importorskip("skimage.restoration")

H, W = 70, 90   # larger than the tiny model's 32x32 tiles, not square


@pytest.fixture(scope="module")
def inpainter(tmp_path_factory):
    return Inpainter.load(str(tiny_model(tmp_path_factory.mktemp("refine") / "tiny.safetensors")))


def photo_and_scratch(seed=0):
    from PIL import Image

    low = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(low).resize((W, H), Image.BILINEAR)).copy()
    keep = np.ones((H, W), bool)
    keep[H // 3:H // 3 + 4, 5:W - 5] = False          # a 4-px scratch
    keep[10:H - 10, W // 2:W // 2 + 3] = False        # a 3-px scratch across it
    return image, keep


def settings(**options):
    return SamplerSettings(steps=10, sampler="refine", options=options)


def counted(inpainter, fn):
    calls = []
    handle = inpainter.unet.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        return fn(), len(calls)
    finally:
        handle.remove()


@pytest.mark.parametrize("fit", ["tile", "auto"])
@pytest.mark.parametrize("options", [{}, {"start": 0.5}, {"start": 0.3, "resample": 3}])
def test_network_calls_are_the_tables(fit, options, inpainter):
    image, keep = photo_and_scratch()
    s = settings(**options)
    layout = api.plan(inpainter, keep, fit, s)
    assert layout.calls_per_batch == network_calls(s, 10) == SAMPLERS["refine"].calls(s, 10)
    result, calls = counted(inpainter, lambda: api.inpaint(inpainter, image, keep, settings=s, fit=fit))
    assert calls == layout.calls > 0
    assert np.array_equal(result.samples[0][keep], image[keep])   # the original bytes outside the hole


def test_calls_without_resampling_are_the_start_step():
    assert start_step(settings(start=0.3), 10) == 3 == network_calls(settings(start=0.3), 10)
    assert network_calls(settings(start=0.0), 10) == 0
    assert network_calls(settings(start=1.0), 10) == 10


@pytest.mark.parametrize("init,fill", [("biharmonic", biharmonic_fill), ("telea", telea_fill)])
@pytest.mark.parametrize("fit", ["tile", "auto"])
def test_start_zero_is_the_classical_fill_of_the_full_photo(init, fill, fit, inpainter):
    image, keep = photo_and_scratch(1)
    result, calls = counted(inpainter, lambda: api.inpaint(
        inpainter, image, keep, settings=settings(start=0.0, init=init), fit=fit))
    assert calls == 0
    assert np.array_equal(result.samples[0], fill(image, keep))


def test_one_step_stays_close_to_the_classical_fill(inpainter):
    """t0 = 1: the fill noised to the lowest level and denoised once; the tiny random model moves it only a little."""
    image, keep = photo_and_scratch(1)
    out = api.inpaint(inpainter, image, keep, settings=settings(start=0.1), fit="tile").samples[0]
    diff = np.abs(out.astype(int) - biharmonic_fill(image, keep).astype(int))[~keep]
    assert diff.mean() < 8


def test_a_seed_reproduces_the_fill_and_another_seed_changes_it(inpainter):
    image, keep = photo_and_scratch(2)
    s = settings(start=0.5)
    result = api.inpaint(inpainter, image, keep, settings=s, seeds=[3, 4], fit="tile")
    again = api.inpaint(inpainter, image, keep, settings=s, seeds=[3], fit="tile")
    assert np.array_equal(result.samples[3], again.samples[3])
    assert not np.array_equal(result.samples[3], result.samples[4])
    for sample in result.samples.values():
        assert np.array_equal(sample[keep], image[keep])


def test_at_model_size_without_init_the_fill_runs_on_the_batch(inpainter):
    image, keep = photo_and_scratch(3)
    image, keep = np.ascontiguousarray(image[:SIZE, :SIZE]), np.ascontiguousarray(keep[:SIZE, :SIZE])
    gt = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 127.5 - 1
    mask = torch.from_numpy(keep).float()[None, None]
    out = inpainter(gt, mask, [0], settings(start=0.0))
    pixels = ((out[0] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(pixels, biharmonic_fill(image, keep))
    first, again = inpainter(gt, mask, [5], settings()), inpainter(gt, mask, [5], settings())
    assert torch.equal(first, again) and torch.equal(first * mask, gt * mask)


def test_only_a_sampler_with_a_prefill_takes_a_starting_fill(inpainter):
    gt, mask = torch.zeros(1, 3, SIZE, SIZE), torch.ones(1, 1, SIZE, SIZE)
    mask[..., 4:8, :] = 0
    with pytest.raises(ValueError, match="takes no starting fill"):
        inpainter(gt, mask, [0], SamplerSettings(steps=5, jump_n_sample=1), init=gt)


@pytest.mark.parametrize("options,message", [
    ({"strat": 0.2}, "sampler 'refine' has no option.*strat.*options: start, init, resample"),
    ({"start": 1.5}, "option start .* in \\[0, 1\\]"),
    ({"init": "lama"}, "option init .* one of biharmonic, telea, ns"),
    ({"resample": 0}, "option resample .* whole number >= 1"),
])
def test_a_bad_option_is_a_one_line_error(options, message, inpainter):
    image, keep = photo_and_scratch()
    with pytest.raises(ValueError, match=message) as err:
        api.inpaint(inpainter, image, keep, settings=settings(**options), fit="tile")
    assert "\n" not in str(err.value)


def test_cli_inpaint_with_refine_and_its_options(tmp_path):
    from pathlib import Path

    from click.testing import CliRunner

    from repaint.cli import cli
    from repaint.images import read_rgb
    from repaint.masks import read_keep_mask

    examples = Path(__file__).resolve().parents[1] / "examples"
    result = CliRunner().invoke(cli, ["inpaint", str(examples / "face.png"), str(examples / "face_mask.png"),
                                      "--sampler", "refine", "--option", "start=0.1", "--option", "init=telea",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "refine" in result.output and "5 network calls" in result.output   # round(0.1 * 46) steps
    image, keep = read_rgb(examples / "face.png"), read_keep_mask(examples / "face_mask.png")
    written = read_rgb(tmp_path / "inpainted" / "face_s0.png")
    assert np.array_equal(written[keep], image[keep]) and not np.array_equal(written, telea_fill(image, keep))
    bad = CliRunner().invoke(cli, ["inpaint", str(examples / "face.png"), str(examples / "face_mask.png"),
                                   "--sampler", "refine", "--option", "strat=0.1", "--out", str(tmp_path / "b")])
    assert bad.exit_code != 0 and "no option(s) strat" in bad.output


def test_web_runner_offers_refine_and_its_cost_is_what_it_runs():
    from pathlib import Path

    from repaint.images import read_rgb
    from repaint.masks import read_keep_mask
    from repaint.web.limits import Limits
    from repaint.web.models import ModelMenu
    from repaint.web.runner import SAMPLER_CHOICES, RunOptions, Runner

    examples = Path(__file__).resolve().parents[1] / "examples"
    assert "refine" in SAMPLER_CHOICES
    runner = Runner(ModelMenu({"default": "default"}), Limits())
    image, keep = read_rgb(examples / "face.png"), read_keep_mask(examples / "face_mask.png")
    out = runner.run(image, keep, RunOptions("default", "refine"))
    assert out.planned == out.calls == 9          # round(0.2 * 46) steps, one batch
    assert np.array_equal(out.result.samples[0][keep], image[keep])


def test_cli_inpaint_averages_draws_and_counts_their_calls(tmp_path):
    """--average 3: the three draws run as one batch of 3 and the settings line names the average; the written sample
    is the mean of the draws with seeds 0, 1, 2 (the library's rule, checked in test_api)."""
    from pathlib import Path

    from click.testing import CliRunner

    from repaint.cli import cli
    from repaint.images import read_rgb

    examples = Path(__file__).resolve().parents[1] / "examples"
    args = ["inpaint", str(examples / "face.png"), str(examples / "face_mask.png"), "--sampler", "refine",
            "--option", "start=0.1"]
    result = CliRunner().invoke(cli, [*args, "--average", "3", "--out", str(tmp_path / "mean")])
    assert result.exit_code == 0, result.output
    assert "batch 3, 5 network calls" in result.output and "average=3" in result.output   # round(0.1 * 46) steps
    draws = CliRunner().invoke(cli, [*args, "--n-samples", "3", "--out", str(tmp_path / "draws")])
    assert draws.exit_code == 0, draws.output
    each = [read_rgb(tmp_path / "draws" / "inpainted" / f"face_s{k}.png").astype(float) for k in range(3)]
    mean = np.rint(np.mean(each, axis=0)).astype(np.uint8)
    assert np.array_equal(read_rgb(tmp_path / "mean" / "inpainted" / "face_s0.png"), mean)
    bad = CliRunner().invoke(cli, [*args, "--average", "0", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "--average" in bad.output

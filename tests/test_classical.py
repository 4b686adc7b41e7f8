"""Classical fills (samplers biharmonic, telea, ns): the library functions' output, in the hole only, through every
front end, with zero network calls."""

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from evaluation_helpers import FAST, SIZE, image_folder, tiny_model
from repaint import api
from repaint import evaluation as ev
from repaint.cli import cli
from repaint.inpainter import Inpainter
from repaint.samplers import SAMPLERS, describe, network_calls
from repaint.samplers.classical import RADIUS, biharmonic_fill, ns_fill, telea_fill
from repaint.settings import SamplerSettings, resolve_settings

cv2 = pytest.importorskip("cv2")
restoration = pytest.importorskip("skimage.restoration")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FILLS = {"biharmonic": biharmonic_fill, "telea": telea_fill, "ns": ns_fill}


@pytest.fixture(scope="module")
def inpainter(tmp_path_factory):
    return Inpainter.load(str(tiny_model(tmp_path_factory.mktemp("classical") / "tiny.safetensors")))


def smooth_photo(h, w, seed=0):
    """A smooth random photo (bilinear from 6x6 noise), so the fills have structure to continue."""
    from PIL import Image

    low = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(low).resize((w, h), Image.BILINEAR)).copy()


def scratch_mask(h, w):
    keep = np.ones((h, w), bool)
    keep[h // 3:h // 3 + 4, 5:w - 5] = False          # a 4-px scratch
    keep[10:h - 10, w // 2:w // 2 + 3] = False        # a 3-px scratch across it
    keep[h - 7:h - 4, 3:9] = False                    # a dust spot
    return keep


def library(name, image, keep):
    """What the library itself returns for the hole, as 8-bit values."""
    if name == "biharmonic":
        out = restoration.inpaint_biharmonic(image, ~keep, split_into_regions=True, channel_axis=-1)
        return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)
    flag = cv2.INPAINT_TELEA if name == "telea" else cv2.INPAINT_NS
    return cv2.inpaint(image, (~keep).astype(np.uint8) * 255, RADIUS, flag)


@pytest.mark.parametrize("name", FILLS)
def test_each_fill_is_the_library_output_in_the_hole_and_the_photo_elsewhere(name):
    image, keep = smooth_photo(70, 90), scratch_mask(70, 90)
    out = FILLS[name](image, keep)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert np.array_equal(out[keep], image[keep])
    assert np.array_equal(out[~keep], library(name, image, keep)[~keep])
    assert np.abs(out[~keep].astype(int) - image[~keep].astype(int)).mean() < 20   # it continues the photo


@pytest.mark.parametrize("name", FILLS)
def test_api_runs_the_fill_on_the_full_photo_with_no_network_call(name, inpainter):
    h, w = 70, 90                                      # not the model's size, not square
    image, keep = smooth_photo(h, w, seed=1), scratch_mask(h, w)
    settings = SamplerSettings(sampler=name)
    layout = api.plan(inpainter, keep, "auto", settings, n_samples=2)
    assert layout.fit == "native" and len(layout.windows) == 1 and layout.calls == 0
    calls = []
    handle = inpainter.unet.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        result = api.inpaint(inpainter, image, keep, settings=settings, seeds=[0, 1],
                             callback=lambda p: calls.append(p))
    finally:
        handle.remove()
    assert calls == [] and result.fit == "native"
    expected = FILLS[name](image, keep)
    for sample in result.samples.values():
        assert np.array_equal(sample, expected)        # bit for bit: the original bytes outside the hole


@pytest.mark.parametrize("name", FILLS)
def test_the_sampler_contract_at_model_size_fills_the_same(name, inpainter):
    image, keep = smooth_photo(SIZE, SIZE, seed=2), scratch_mask(SIZE, SIZE)
    gt = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 127.5 - 1
    out = inpainter(gt, torch.from_numpy(keep).float()[None, None], [0], SamplerSettings(sampler=name, steps=5))
    pixels = ((out[0] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(pixels, FILLS[name](image, keep))


def test_settings_accept_the_classical_samplers_and_count_no_calls():
    for name in FILLS:
        assert SAMPLERS[name].fill is FILLS[name]
        settings = resolve_settings(SamplerSettings(steps=46, sampler="lanpaint"), None, sampler=name)
        assert settings.sampler == name and network_calls(settings, 46) == 0
        assert describe(settings).startswith(f"{name} (classical fill")
        assert SamplerSettings.from_dict(settings.to_dict()) == settings


@pytest.mark.parametrize("name", FILLS)
@pytest.mark.parametrize("case", ["one_pixel", "every_border", "many_spots", "smaller_than_model"])
def test_bad_inputs_keep_the_known_bytes(name, case, inpainter):
    h, w = (20, 24) if case == "smaller_than_model" else (64, 80)
    image = smooth_photo(h, w, seed=3)
    keep = np.ones((h, w), bool)
    if case == "one_pixel":
        keep[30, 40] = False
    elif case == "every_border":
        keep[:3], keep[-3:], keep[:, :3], keep[:, -3:] = False, False, False, False
    elif case == "many_spots":
        keep[np.random.default_rng(0).random((h, w)) < 0.2] = False   # ~1,000 tiny spots
    else:
        keep[5:12, 6:15] = False
    result = api.inpaint(inpainter, image, keep, settings=SamplerSettings(sampler=name))
    out = result.samples[0]
    assert np.array_equal(out[keep], image[keep])
    assert np.array_equal(out, FILLS[name](image, keep))


@pytest.mark.parametrize("name", FILLS)
def test_a_hole_over_the_whole_photo_is_a_one_line_error(name, inpainter):
    image = smooth_photo(40, 40)
    with pytest.warns(UserWarning, match="all black"), pytest.raises(ValueError, match="keeps no pixel"):
        api.inpaint(inpainter, image, np.zeros((40, 40), bool), settings=SamplerSettings(sampler=name))


def test_cli_inpaint_with_a_classical_sampler(tmp_path):
    from repaint.images import read_rgb
    from repaint.masks import read_keep_mask

    result = CliRunner().invoke(cli, ["inpaint", str(EXAMPLES / "face.png"), str(EXAMPLES / "face_mask.png"),
                                      "--sampler", "telea", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "sampler: telea (classical fill" in result.output and "fit native" in result.output
    assert "0 network calls" in result.output
    image, keep = read_rgb(EXAMPLES / "face.png"), read_keep_mask(EXAMPLES / "face_mask.png")
    written = read_rgb(tmp_path / "inpainted" / "face_s0.png")
    assert np.array_equal(written, telea_fill(image, keep))


def test_eval_with_a_classical_sampler(tmp_path, inpainter):
    images = image_folder(tmp_path / "images", n=2)
    report = ev.evaluate(images, tmp_path / "out", inpainter, "half", settings=SamplerSettings(sampler="ns"),
                         metrics=("psnr",), progress=False)
    assert report is not None
    written = sorted((tmp_path / "out").rglob("inpainted/*.png"))
    assert len(written) == 2
    assert FAST.sampler == "repaint"                    # the helper's schedule is untouched


def test_web_runner_with_a_classical_sampler():
    from repaint.images import read_rgb
    from repaint.masks import read_keep_mask
    from repaint.web.limits import Limits
    from repaint.web.models import ModelMenu
    from repaint.web.runner import SAMPLER_CHOICES, RunOptions, Runner

    assert {"biharmonic", "telea", "ns"} <= set(SAMPLER_CHOICES)
    runner = Runner(ModelMenu({"default": "default"}), Limits())
    image, keep = read_rgb(EXAMPLES / "face.png"), read_keep_mask(EXAMPLES / "face_mask.png")
    opts = RunOptions("default", "biharmonic")
    assert "classical fill" in runner.cost(opts)
    out = runner.run(image, keep, opts)
    assert out.planned == 0 and out.calls == 0
    assert np.array_equal(out.result.samples[0], biharmonic_fill(image, keep))

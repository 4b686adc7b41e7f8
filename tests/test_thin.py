"""Thin holes: what counts as thin, and the bundled model's own recommendation for them in a photo (the mean of
refined draws, docs/real-photos.md), given only when the user names no sampler or schedule."""

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from evaluation_helpers import tiny_model
from repaint import api
from repaint.inpainter import BUNDLED_DEFAULT, BUNDLED_THIN, Inpainter
from repaint.masks import is_thin_hole

pytest.importorskip("skimage.restoration")


def band(h, w, width, vertical=False):
    keep = np.ones((h, w), bool)
    if vertical:
        keep[5:h - 5, w // 2:w // 2 + width] = False
    else:
        keep[h // 2:h // 2 + width, 5:w - 5] = False
    return keep


def test_a_hole_is_thin_when_no_hole_pixel_is_over_half_the_width_from_a_known_one():
    assert is_thin_hole(band(60, 90, 8)) and is_thin_hole(band(60, 90, 8, vertical=True))
    assert not is_thin_hole(band(60, 90, 9))
    dust = np.ones((60, 90), bool)
    dust[::7, ::9] = False
    assert is_thin_hole(dust)
    box = np.ones((60, 90), bool)
    box[10:30, 10:30] = False
    assert not is_thin_hole(box)
    assert not is_thin_hole(band(60, 90, 3) & box)                   # a scratch plus a box: one part is not thin
    assert not is_thin_hole(np.ones((60, 90), bool)) and not is_thin_hole(np.zeros((60, 90), bool))


def test_the_per_region_test_agrees_with_one_distance_transform_of_the_whole_mask():
    from scipy.ndimage import distance_transform_edt

    rng = np.random.default_rng(7)
    seen = set()
    for _ in range(300):
        h, w = rng.integers(5, 40, 2)
        keep = rng.random((h, w)) > rng.uniform(0.05, 0.95)
        if keep.all() or not keep.any():
            continue
        whole = float(distance_transform_edt(~keep).max()) <= 4
        assert is_thin_hole(keep) == whole
        seen.add(whole)
    assert seen == {True, False}


def test_the_bundled_model_recommends_the_thin_setting_only_for_a_thin_hole_in_a_photo(tmp_path):
    bundled = api.load_inpainter("default", device="cpu")
    assert bundled.recommended_for(band(100, 150, 5)) == BUNDLED_THIN
    settings, why = api.recommend(bundled, band(100, 150, 5))
    assert settings == BUNDLED_THIN and "thin hole" in why and "average=8" in why
    box = np.ones((100, 150), bool)
    box[20:60, 30:90] = False
    assert api.recommend(bundled, box) == (BUNDLED_DEFAULT, None)
    assert bundled.recommended_for(band(64, 64, 2)) == BUNDLED_DEFAULT      # a 64x64 face keeps the face default
    other = Inpainter.load(str(tiny_model(tmp_path / "tiny.safetensors")))
    assert other.thin is None and other.recommended_for(band(100, 150, 5)) == other.recommended


def _scratched(tmp_path):
    face = Image.open(Path(__file__).resolve().parents[1] / "examples" / "face.png").convert("RGB")
    photo = np.asarray(face.resize((150, 100), Image.BICUBIC))
    Image.fromarray(photo).save(tmp_path / "photo.png")
    Image.fromarray(band(100, 150, 4).astype(np.uint8) * 255).save(tmp_path / "mask.png")
    return photo, band(100, 150, 4)


def test_the_cli_says_when_a_thin_hole_gets_the_thin_setting_and_leaves_a_named_sampler_alone(tmp_path):
    from repaint.cli import cli

    photo, keep = _scratched(tmp_path)
    args = ["inpaint", str(tmp_path / "photo.png"), str(tmp_path / "mask.png")]
    routed = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "a")])
    assert routed.exit_code == 0, routed.output
    assert "thin hole (every part at most 8 px wide)" in routed.output and "sampler: refine" in routed.output
    written = np.asarray(Image.open(tmp_path / "a" / "inpainted" / "photo_s0.png").convert("RGB"))
    assert np.array_equal(written[keep], photo[keep]) and not np.array_equal(written, photo)
    fewer = CliRunner().invoke(cli, [*args, "--average", "2", "--out", str(tmp_path / "b")])
    assert fewer.exit_code == 0 and "average=2" in fewer.output and "sampler: refine" in fewer.output
    named = CliRunner().invoke(cli, [*args, "--sampler", "lanpaint", "--steps", "4", "--out", str(tmp_path / "c")])
    assert named.exit_code == 0, named.output
    assert "thin hole" not in named.output and "sampler: lanpaint" in named.output


def test_the_web_plan_uses_the_thin_setting_unless_the_form_names_a_sampler():
    from repaint.web.limits import Limits
    from repaint.web.models import ModelMenu
    from repaint.web.runner import RunOptions, Runner

    runner = Runner(ModelMenu({"default": "default"}), Limits())
    said = runner.describe_plan(band(100, 150, 4), RunOptions())
    assert "refine" in said and "average=8" in said and "Thin hole (every part at most 8 px wide)" in said
    assert "refine" not in runner.describe_plan(band(100, 150, 4), RunOptions(sampler="lanpaint"))

"""Say what the model knows: each model's description with the plan, and one line when the bundled face model meets
a photo that is not a 64x64 input (CLI and web runner alike, from repaint.api.model_note)."""

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from repaint.api import load_inpainter, model_note
from repaint.checkpoints import PRESETS
from repaint.cli import cli
from repaint.inpainter import model_description
from repaint.settings import SamplerSettings

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
QUICK = ["--sampler", "repaint", "--steps", "2", "--jump-length", "1", "--jump-n-sample", "1"]


@pytest.fixture(scope="module")
def bundled():
    return load_inpainter("default", device="cpu")


def test_every_preset_has_a_description_and_files_say_theirs_is_unknown():
    assert "64x64 faces" in model_description("default")
    for name, preset in PRESETS.items():
        assert model_description(name) == preset.description
    assert "celeba256" in model_description("some/file.pt", "celeba256")
    assert "not recorded" in model_description("some/file.pt")


def test_the_bundled_model_names_what_it_knows_only_off_its_own_size(bundled):
    assert bundled.bundled and "64x64 faces" in bundled.description
    assert bundled.note_for(64, 64) is None
    note = bundled.note_for(512, 384)
    assert "trained on 64x64 faces" in note and "`repaint models`" in note and "384x512" in note
    assert "\n" not in note
    assert model_note(bundled, (512, 384, 3)) == note
    assert model_note(bundled, (512, 384, 3), SamplerSettings(sampler="telea")) is None   # no model runs


def test_cli_prints_the_description_and_the_note_with_the_plan(tmp_path):
    photo = np.asarray(Image.open(EXAMPLES / "face.png").convert("RGB").resize((96, 80)))
    keep = np.full((80, 96), 255, np.uint8)
    keep[30:40, 40:60] = 0
    Image.fromarray(photo).save(tmp_path / "photo.png")
    Image.fromarray(keep).save(tmp_path / "mask.png")
    result = CliRunner().invoke(cli, ["inpaint", str(tmp_path / "photo.png"), str(tmp_path / "mask.png"), *QUICK,
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "trained on: 64x64 faces" in result.output
    lines = [line for line in result.output.splitlines() if "trained on 64x64 faces" in line]
    assert len(lines) == 1 and "repaint models" in lines[0]
    same_size = CliRunner().invoke(cli, ["inpaint", str(EXAMPLES / "face.png"), str(EXAMPLES / "face_mask.png"),
                                         *QUICK, "--out", str(tmp_path / "face")])
    assert same_size.exit_code == 0 and "trained on 64x64 faces" not in same_size.output


def test_the_web_runner_carries_the_same_line():
    from repaint.web.limits import Limits
    from repaint.web.models import ModelMenu
    from repaint.web.runner import RunOptions, Runner

    runner = Runner(ModelMenu({"default": "default"}, device="cpu"), Limits())
    assert "64x64 faces" in runner.about("default")
    photo = np.zeros((80, 96, 3), np.uint8)
    keep = np.ones((80, 96), bool)
    keep[30:40, 40:60] = False
    opts = RunOptions("default", "repaint", "custom", 2, 1, 1)
    out = runner.run(photo, keep, opts)
    assert out.note == runner.note(photo.shape, opts) == runner.menu.get("default").note_for(80, 96)
    assert out.about == runner.about("default")
    assert runner.note(photo.shape, RunOptions("default", "ns")) is None


def test_repaint_models_lists_what_each_model_was_trained_on():
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 0
    assert all(preset.description in result.output for preset in PRESETS.values())

"""The smaller commands: repaint masks, repaint validate, and the --fast preset of repaint inpaint."""

import re

import torch
from click.testing import CliRunner

from repaint.cli import cli
from repaint.masks import load_mask, make_masks


def test_masks_command_writes_the_deterministic_set(tmp_path):
    result = CliRunner().invoke(cli, ["masks", "narrow", "--n", "3", "--size", "32", "--seed", "7", "--out",
                                      str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "m").glob("0*.png"))
    assert [f.name for f in files] == ["000000.png", "000001.png", "000002.png"]
    expected = make_masks("narrow", 3, 32, 7)
    for f, mask in zip(files, expected):
        assert torch.equal(load_mask(f), mask)
    assert (tmp_path / "m" / "preview.png").exists()


def test_masks_command_refuses_side_for_other_kinds(tmp_path):
    result = CliRunner().invoke(cli, ["masks", "wide", "--side", "top", "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "--side" in result.output
    assert not (tmp_path / "m").exists()


def test_validate_reports_calls_and_fidelity():
    result = CliRunner().invoke(cli, ["validate", "--steps", "10", "--jump-length", "1", "--jump-n-sample", "1",
                                      "--n", "50"])
    assert result.exit_code == 0, result.output
    assert "10 network calls per image" in result.output
    share = float(re.search(r"wrong-component share .*: ([0-9.]+)", result.output).group(1))
    assert 0.0 <= share <= 1.0


def test_train_command_passes_options_through_and_reports_bad_data(tmp_path):
    result = CliRunner().invoke(cli, ["train", str(tmp_path / "missing"), "--out", str(tmp_path / "run")])
    assert result.exit_code != 0
    assert "training data" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_sampler_options_and_problems_reach_validate():
    result = CliRunner().invoke(cli, ["validate", "--sampler", "smc", "--steps", "10", "--option", "particles=3",
                                      "--problem", "hard8", "--n", "20"])
    assert result.exit_code == 0, result.output
    assert "particles=3" in result.output and "30 network calls per image" in result.output   # T * K
    bad = CliRunner().invoke(cli, ["validate", "--sampler", "smc", "--option", "particles", "--n", "10"])
    assert bad.exit_code == 2 and "KEY=VALUE" in bad.stderr

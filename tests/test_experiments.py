import csv
import json

import pytest
from evaluation_helpers import image_folder, tiny_model

from repaint.evaluation import experiments as ex
from repaint.samplers import sdedit
from repaint.evaluation import EvalError
from repaint.inpainter import Inpainter
from repaint.samplers import get_sampler
from repaint.settings import SamplerSettings
from repaint.schedule import count_network_calls, jump_schedule, transitions

QUICK = dict(n_samples=1, lpips_random=True, progress=False, masks="half")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablate")
    model = Inpainter.load(str(tiny_model(root / "tiny.safetensors")))
    return model, image_folder(root / "images", n=1), root


def test_sdedit_schedule_goes_to_half_then_repeats_half_to_zero():
    times = sdedit.sdedit_schedule(8, repeats=3)
    assert times == [7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1, 0, -1]
    transitions(times)   # single steps only: the RePaint loop can run it
    assert count_network_calls(times) == (8 - 4) + 3 * 4
    assert sdedit.sdedit_schedule(8, repeats=1) == jump_schedule(8, 1, 1)   # one pass is plain conditioning
    assert count_network_calls(sdedit.sdedit_schedule(250, 18)) == 2375    # about RePaint's 2,410 at j = r = 10
    assert sdedit.sdedit_schedule(6, 2, restart=2) == [5, 4, 3, 2, 1, 0, 1, 2, 1, 0, -1]
    with pytest.raises(ValueError, match="restart"):
        sdedit.sdedit_schedule(6, 2, restart=6)
    with pytest.raises(ValueError, match="no option.*repeat; options: repeats, restart"):
        sdedit.sdedit_settings_schedule(SamplerSettings(sampler="sdedit_repeat", options={"repeat": 2}), 10)
    assert get_sampler("sdedit_repeat") is sdedit.sdedit_repeat


def rows(path):
    return list(csv.DictReader(path.open()))


def test_resampling_vs_slowdown_matches_network_calls(setup):
    model, images, root = setup
    table = ex.resampling_vs_slowdown(images, root / "t2", model, t_T=4, jump_length=1, resamplings=(1, 2), **QUICK)
    got = rows(root / "t2" / "resampling_vs_slowdown.csv")
    assert [(r["method"], r["T"], r["r"], r["network calls"]) for r in got] == [
        ("resampling", "4", "1", "4"), ("slowing down", "4", "1", "4"),
        ("resampling", "4", "2", "7"), ("slowing down", "7", "1", "7")]
    assert got[0]["lpips_half"] == got[1]["lpips_half"]          # the same setting, run once
    assert not (root / "t2" / "slowdown_T4").exists()
    assert (root / "t2" / "slowdown_T7" / "report.md").is_file()
    assert "Table 2" in (root / "t2" / "resampling_vs_slowdown.md").read_text()
    assert len(table.rows) == 4 and all(0 < float(r["lpips_half"]) for r in got)
    with pytest.raises(EvalError, match="trained with at least"):
        ex.resampling_vs_slowdown(images, root / "t2b", model, t_T=60, jump_length=10, resamplings=(3,), **QUICK)


def test_jump_grid_and_sdedit_tables(setup):
    model, images, root = setup
    ex.jump_grid(images, root / "t3", model, t_T=4, jump_lengths=(1, 2), resamplings=(2,), **QUICK)
    got = rows(root / "t3" / "jump_grid.csv")
    assert [(r["j"], r["r"], r["network calls"]) for r in got] == [("1", "2", "7"), ("2", "2", "6")]

    table = ex.sdedit_alternative(images, root / "t4", model, t_T=4, repeats=(2,), repaint_jump_length=1,
                                  repaint_resamplings=2, **QUICK)
    got = rows(root / "t4" / "sdedit_alternative.csv")
    assert [(r["repeats"], r["network calls"]) for r in got] == [("2", "6"), ("-", "7")]
    assert (root / "t4" / "sdedit_T4_h2_k2" / "manifest.json").is_file()
    assert "Table 4" in table.markdown()


def test_ablations_run_offline_on_the_available_metrics(setup, tmp_path, monkeypatch):
    model, images, _ = setup
    monkeypatch.setenv("REPAINT_ALEXNET", str(tmp_path / "absent.pth"))
    quick = {k: v for k, v in QUICK.items() if k != "lpips_random"}
    with pytest.warns(UserWarning, match=r"lpips skipped, scoring with psnr, ssim only") as record:
        table = ex.jump_grid(images, tmp_path / "t3", model, t_T=4, jump_lengths=(1, 2), resamplings=(2,), **quick)
    assert sum("skipped, scoring" in str(w.message) for w in record) == 1  # one warning, not one per configuration
    assert table.metrics == ["psnr", "ssim"]
    head = rows(tmp_path / "t3" / "jump_grid.csv")[0]
    assert "psnr_half" in head and "ssim_half" in head and not any(k.startswith("lpips") for k in head)
    assert "PSNR Half" in table.markdown() and "LPIPS" not in table.markdown()
    for name in ("T4_j1_r2", "T4_j2_r2"):  # every configuration of the table was scored with the same set
        assert json.loads((tmp_path / "t3" / name / "manifest.json").read_text())["metrics"] == ["psnr", "ssim"]
    with pytest.raises(EvalError, match="--lpips-weights"):
        ex.jump_grid(images, tmp_path / "t3b", model, t_T=4, jump_lengths=(1,), resamplings=(2,), metrics=("lpips",),
                     **quick)
    assert not (tmp_path / "t3b").exists()

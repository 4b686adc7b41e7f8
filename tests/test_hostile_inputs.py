"""Hostile inputs from the second audit (issue 25) that the command line and the library meet: each test reproduces one
defect (data lost, a half-written result, memory or time without bound, a raw or misleading message)."""

import os
import resource
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from repaint.files import write_group
from repaint.schedule import MAX_NETWORK_CALLS, JumpSchedule
from repaint.settings import SamplerSettings
from test_cli import error_line, inpaint, no_outputs, run


def _stderr_error(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("repaint: error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def _repaint(*args, timeout=120, **kwargs):
    return subprocess.run([sys.executable, "-m", "repaint", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


# Data loss -------------------------------------------------------------------------------------------------------

def test_an_input_inside_the_output_folder_is_never_overwritten(files, tmp_path):
    out = tmp_path / "out"
    (out / "gt_keep_mask").mkdir(parents=True)
    mask = out / "gt_keep_mask" / "face.png"
    inverted = 255 - np.asarray(Image.open(files["mask"]))
    Image.fromarray(inverted).save(mask)
    before = mask.read_bytes()
    result = inpaint(files, out, "--invert-mask", mask=mask)
    assert result.exit_code != 0 and "would be overwritten" in error_line(result)
    assert mask.read_bytes() == before and not (out / "inpainted").exists()


def test_a_folder_in_the_way_of_a_result_file_is_refused_before_sampling(files, tmp_path):
    out = tmp_path / "out"
    (out / "gt" / "face.png").mkdir(parents=True)  # where the copy of the input goes
    result = inpaint(files, out)
    assert result.exit_code != 0 and "folder of that name is in the way" in error_line(result)
    assert [p for p in out.rglob("*") if p.is_file()] == []


def test_write_group_leaves_no_file_and_no_temporary_when_one_destination_is_a_folder(tmp_path):
    (tmp_path / "b.txt").mkdir()
    with pytest.raises(OSError, match="in the way"):
        write_group({tmp_path / "a.txt": b"a", tmp_path / "b.txt": b"b", tmp_path / "c.txt": b"c"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt"]


def test_a_dangling_or_looping_symlink_as_out_is_refused_before_sampling(files, tmp_path):
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for name in ("dangling", "loop"):
        result = inpaint(files, tmp_path / name)
        assert result.exit_code != 0 and "symbolic link to nothing" in error_line(result)
    assert not (tmp_path / "nowhere").exists()


# Memory and time -------------------------------------------------------------------------------------------------

def test_a_schedule_of_a_billion_resamplings_is_refused_at_once():
    start = time.perf_counter()
    with pytest.raises(ValueError, match="network calls per sample"):
        JumpSchedule(250, jump_length=10, jump_n_sample=1_000_000_000)
    with pytest.raises(ValueError, match="network calls per sample"):
        SamplerSettings(steps=250, jump_n_sample=1_000_000_000)
    assert time.perf_counter() - start < 1


@pytest.mark.parametrize("command", [["schedule", "--jump-n-sample", "1000000000"],
                                     ["inpaint", "examples/face.png", "examples/face_mask.png", "--jump-n-sample",
                                      "1000000000"]])
def test_the_command_line_refuses_a_billion_resamplings_at_once(command):
    # before the fix the schedule was built first: gigabytes and minutes, so the time limit is the test
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = _repaint(*command, cwd=repo, timeout=60)
    assert proc.returncode == 2 and f"over the limit of {MAX_NETWORK_CALLS:,}" in _stderr_error(proc)


def test_the_number_of_samples_has_one_bound(files, tmp_path):
    result = inpaint(files, tmp_path / "out", "--n-samples", "10000000000")
    assert result.exit_code == 2 and "--n-samples" in error_line(result)
    assert no_outputs(tmp_path / "out")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_pipe_as_the_image_is_refused_without_waiting_for_it(tmp_path):
    os.mkfifo(tmp_path / "photo.png")
    proc = _repaint("inpaint", tmp_path / "photo.png", "examples/face_mask.png", "--out", tmp_path / "out",
                    cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), timeout=60)
    assert proc.returncode == 2 and "not a regular file" in _stderr_error(proc)
    assert not (tmp_path / "out").exists()


# Messages --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_non_finite_eta_is_refused_by_name(files, tmp_path, value):
    result = inpaint(files, tmp_path / "out", "--sampler", "ddnm", "--eta", value)
    assert result.exit_code == 2 and "eta must be a finite number" in error_line(result)


def test_a_non_finite_sampler_option_is_refused_by_name(files, tmp_path):
    result = inpaint(files, tmp_path / "out", "--sampler", "smc", "--option", "particles=.nan")
    assert result.exit_code == 2 and "option particles" in error_line(result)
    assert no_outputs(tmp_path / "out")


def test_paper_and_fast_together_are_refused(files, tmp_path):
    result = inpaint(files, tmp_path / "out", "--paper", "--fast")
    assert result.exit_code == 2 and "--paper and --fast" in error_line(result)


def test_a_file_size_limit_names_the_file_that_could_not_be_written(files, tmp_path):
    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (300, 300))  # smaller than any output PNG

    out = tmp_path / "out"
    proc = _repaint("inpaint", files["image"], files["mask"], "--model", files["model"], "--out", out, "--steps", "4",
                    "--jump-length", "1", "--jump-n-sample", "1", preexec_fn=cap)
    line = _stderr_error(proc)
    assert proc.returncode == 1 and "cannot write" in line and str(out) in line and "[Errno" not in line
    assert [p for p in out.rglob("*") if p.is_file()] == []


def test_a_reference_config_without_architecture_names_the_missing_keys(tmp_path):
    conf = tmp_path / "conf.yml"
    conf.write_text("model_path: nowhere.pt\nname: x\n")
    result = run("inpaint", "--conf", conf, "--out", tmp_path / "out")
    line = error_line(result)
    assert result.exit_code == 2 and "image_size" in line and "num_channels" in line and "__init__" not in line


# Training --------------------------------------------------------------------------------------------------------

def test_stale_checkpoint_temporaries_are_removed_when_a_run_starts(tmp_path):
    from test_training import TINY, TINY_DIFFUSION

    from repaint.training import TrainConfig, train

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(data / f"{i}.png")
    out = tmp_path / "run"
    out.mkdir()
    stale = out / ".ckpt_00000002.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    train(TrainConfig(data=str(data), out=str(out), model=TINY, diffusion=TINY_DIFFUSION, steps=1, batch_size=2,
                      sample_interval=0, device="cpu"))
    assert not stale.exists() and list(out.glob(".*.tmp")) == []

"""The loop-overhead benchmark (benchmarks/loop_overhead.py): a whole short run on the bundled model writes
consistent results, and the reference's arms say how to get the reference when it is not given."""

from __future__ import annotations

import json

import pytest
import torch



@pytest.fixture(scope="module")
def loop_overhead(benchmark_script):
    return benchmark_script("loop_overhead")


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_short_run_without_the_reference(loop_overhead, tmp_path, threads, capsys):
    out = tmp_path / "result.json"
    loop_overhead.main(["--batch", "1", "--repeats", "2", "--schedule", "3", "1", "2", "--no-diffusers",
                        "--out", str(out)])
    record = json.loads(out.read_text())
    entry = record["networks"]["face64"]
    assert entry["schedule"]["network_calls"] == 5  # 3 steps down, then 2 jumps of one step re-walked
    run = entry["batches"]["1"]
    assert set(run["arms"]) == {"ours floor", "ours loop"}
    floor, loop = run["arms"]["ours floor"], run["arms"]["ours loop"]
    assert len(floor["seconds"]) == len(loop["seconds"]) == len(run["load_average_1_5_15"]) == 2
    ratios = sorted(a / b for a, b in zip(loop["seconds"], floor["seconds"]))
    assert run["summary"]["ours loop"]["ratio_to_own_floor"]["min"] == ratios[0]
    assert run["summary"]["ours loop"]["ratio_to_own_floor"]["max"] == ratios[-1]
    # the hooks count the floor's calls and nothing else
    assert all(0 < n <= s for n, s in zip(floor["network_seconds"], floor["seconds"]))
    assert all(0 < n < s for n, s in zip(loop["network_seconds"], loop["seconds"]))
    assert "--reference" in record["not_run"]["reference"]
    assert "reference: not run: git clone https://github.com/andreas128/RePaint" in capsys.readouterr().out


def test_a_reference_path_without_the_reference_is_one_error(loop_overhead, tmp_path):
    with pytest.raises(SystemExit, match="no guided_diffusion/gaussian_diffusion.py there; git clone"):
        loop_overhead.main(["--reference", str(tmp_path), "--out", str(tmp_path / "r.json")])

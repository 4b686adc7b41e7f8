"""The speed benchmark (benchmarks/bench.py): its counts, and a whole run on a tiny UNet that writes consistent JSON."""

from __future__ import annotations

import json
import math

import pytest

from repaint.models.config import UNetConfig
from repaint.checkpoints import get_preset
from repaint.schedule import count_network_calls, jump_schedule



@pytest.fixture(scope="module")
def bench(benchmark_script):
    return benchmark_script("bench")


def test_paper_schedule_and_flops_of_the_256_model(bench):
    assert bench.schedule_counts(bench.schedule_times("paper")) == (2410, 4570)
    config = get_preset("celeba256").config
    one, two = bench.count_flops(config, 1), bench.count_flops(config, 2)
    assert two == 2 * one
    assert round(one / 1e12, 2) == 2.24  # the figure: 2.24 TFLOP per call, 5.4 PFLOP per image
    assert round(2410 * one / 1e15, 1) == 5.4


def test_a_whole_run_writes_consistent_results(bench, tmp_path):
    config = UNetConfig(image_size=16, model_channels=32, num_res_blocks=1, attention_resolutions=(8,),
                        channel_mult=(1, 2), learn_sigma=True, num_head_channels=32)
    result = bench.run_bench(
        "tiny", batches=(1, 2), device="cpu", modes=["bf16"], calls=2, warmup=1, rounds=2,
        real_run=(10, 5, 2), out=tmp_path, config=config,
    )
    saved = json.loads((tmp_path / "bench_tiny_cpu.json").read_text())
    assert saved == json.loads(json.dumps(result))
    rows = {(r["mode"], r["batch"]): r for r in result["rows"]}
    assert set(rows) == {("reference", 1), ("bf16", 1), ("reference", 2), ("bf16", 2)}  # reference always runs
    assert rows["bf16", 1]["accel"] == "bf16+cl"          # on a CPU, bf16 runs channels-last unless told not to
    flops = result["flops_per_call"]
    assert int(flops["2"]) == 2 * int(flops["1"]) > 0
    for (mode, batch), row in rows.items():
        assert row["per_call_s"] > 0 and math.isfinite(row["tflops"])
        assert row["tflops"] == pytest.approx(int(flops[str(batch)]) / row["per_call_s"] / 1e12)
        overhead = result["sampler_overhead_s_per_transition"][str(batch)]
        assert row["overhead_frac"] == pytest.approx(overhead / row["per_call_s"])
        paper = (2410 * row["per_call_s"] + 4570 * overhead) / batch
        assert row["s_per_image[paper]"] == pytest.approx(paper)
        assert row["peak_mem_gib"] is None  # CPU: no allocator statistics
    assert rows["reference", 2]["speedup_vs_reference"] == 1.0
    assert rows["bf16", 2]["speedup_vs_reference"] == pytest.approx(
        rows["reference", 2]["per_call_s"] / rows["bf16", 2]["per_call_s"])
    real = result["real_run"]
    calls = count_network_calls(jump_schedule(t_T=10, jump_length=5, jump_n_sample=2))
    assert (real["batch"], real["calls"], real["transitions"]) == (2, calls, calls + 5)  # one jump of 5 steps back
    assert real["s_per_image"] > 0 and real["estimated_s_per_image"] > 0

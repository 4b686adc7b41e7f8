"""repaint.cost: the time and memory estimate of a plan, from a short timed call of the network."""

import time

import numpy as np
import pytest

from evaluation_helpers import tiny_model
from repaint import api
from repaint.cost import Estimate, Timing, estimate, estimate_plan, largest_batch, time_network
from repaint.inpainter import Inpainter
from repaint.settings import SamplerSettings
from repaint.windows import Plan, Window

W = Window(0, 0, 16, 16)
QUICK = SamplerSettings(steps=3, jump_length=1, jump_n_sample=1)


@pytest.fixture
def inpainter(tmp_path):
    """A fresh tiny model per test: the timing cache is per network, so each test starts with none."""
    return Inpainter.load(str(tiny_model(tmp_path / "tiny.safetensors")))


def counted(inpainter) -> list:
    calls = []
    inpainter.unet.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    return calls


def keep_mask(h=16, w=16):
    keep = np.ones((h, w), bool)
    keep[4:12, 4:12] = False
    return keep


def test_full_batches_cost_calls_times_the_measured_call():
    plan = Plan("crop", (W,) * 4, n_samples=2, batch_size=4, calls_per_batch=230)
    timing = Timing(seconds_per_call=0.035, batch=4, peak_bytes=400_000_000, memory="test")
    got = estimate(plan, timing)
    assert plan.calls == 460 and got.calls == 460
    assert got.seconds == pytest.approx(460 * 0.035)
    assert got.peak_bytes == 400_000_000 and got.batch == 4
    assert got.describe() == "about 16 s, peak about 0.4 GB of RAM (timed on this machine: 35 ms per call at batch 4)"


def test_a_smaller_last_batch_counts_as_its_share_of_a_full_one():
    timing = Timing(seconds_per_call=0.1, batch=2, peak_bytes=1, memory="test")
    plan = Plan("crop", (W,) * 3, batch_size=2, calls_per_batch=10)     # batches of 2 and 1
    assert plan.calls == 20
    assert estimate(plan, timing).seconds == pytest.approx(10 * 0.1 * 1.5)
    tiled = Plan("tile", (W,) * 5, batch_size=2, calls_per_batch=10, phases=((0, 1, 2), (3, 4)))  # 2+1, then 2
    assert tiled.calls == 30
    assert estimate(tiled, timing).seconds == pytest.approx(10 * 0.1 * 2.5)


def test_the_timing_is_at_the_largest_batch_the_plan_runs():
    one = Plan("none", (W,), batch_size=8, calls_per_batch=5)     # a batch of 8 allowed, one job to run
    assert largest_batch(one) == 1
    assert estimate(one, Timing(0.1, 1, 1, "test")).seconds == pytest.approx(0.5)
    assert largest_batch(Plan("tile", (W,) * 5, n_samples=2, batch_size=8, phases=((0, 1, 2), (3, 4)))) == 6
    with pytest.raises(ValueError, match="largest batch is 2"):
        estimate(Plan("crop", (W,) * 2, batch_size=2, calls_per_batch=5), Timing(0.1, 1, 1, "test"))


def test_a_classical_fill_is_not_timed(inpainter):
    calls = counted(inpainter)
    plan = api.plan(inpainter, keep_mask(), settings=SamplerSettings(sampler="telea"))
    got = estimate_plan(inpainter, plan)
    assert calls == [] and got.seconds == 0 and got.calls == 0
    assert got.describe() == "no network calls, nothing to time"


def test_timing_is_measured_once_per_batch_size(inpainter):
    calls = counted(inpainter)
    first = time_network(inpainter, 2)
    assert calls == [2] * 7                          # two warm-up calls and five timed ones, at the batch asked
    assert time_network(inpainter, 2) is first and len(calls) == 7   # cached: the network is not called again
    plan = api.plan(inpainter, keep_mask(), settings=QUICK, n_samples=2)
    assert plan.batch_size == 2
    assert estimate_plan(inpainter, plan).seconds_per_call == first.seconds_per_call and len(calls) == 7
    time_network(inpainter, 1)
    assert calls[7:] == [1] * 7


def test_a_real_timing_is_positive_and_its_peak_holds_the_weights(inpainter):
    timing = time_network(inpainter, 1)
    weights = sum(p.numel() * p.element_size() for p in inpainter.unet.parameters())
    assert timing.seconds_per_call > 0 and timing.device == "cpu"
    assert timing.peak_bytes > weights and timing.memory


def test_the_estimate_is_in_the_ballpark_of_a_real_run():
    """The bundled 64x64 model, 20 calls: wall time within 0.2x-5x of the estimate (generous: a loaded machine)."""
    inpainter = Inpainter.load("default")
    settings = SamplerSettings(steps=20, jump_length=1, jump_n_sample=1)
    keep = keep_mask(64, 64)
    plan = api.plan(inpainter, keep, settings=settings)
    guess = estimate_plan(inpainter, plan)
    assert guess.calls == plan.calls == 20
    photo = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    start = time.perf_counter()
    api.inpaint(inpainter, photo, keep, settings=settings)
    wall = time.perf_counter() - start
    assert 0.2 * guess.seconds < wall < 5 * guess.seconds, (wall, guess)


def test_describe_reads_in_the_units_of_its_size():
    def line(seconds, per_call, peak):
        return Estimate(seconds, peak, per_call, 1, 10, "timed on this machine", "test", "cuda").describe()

    assert line(0.3, 0.03, 50_000_000) == "about 300 ms, peak about 50 MB of GPU memory (timed on this machine: " \
        "30 ms per call at batch 1)"
    assert line(600, 2.5, 3_000_000_000).startswith("about 10 min, peak about 3.0 GB of GPU memory")
    assert line(5 * 3600, 2.5, 3_000_000_000).startswith("about 5.0 h")

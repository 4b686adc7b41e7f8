"""repaint.cost: the time and memory estimate of a plan, from a short timed call of the network."""

import time

import numpy as np
import pytest
import torch

from evaluation_helpers import tiny_model
from repaint import accel as accel_module
from repaint import api
from repaint.accel import Accel
import repaint.cost as cost
from repaint.cost import (
    ACTIVATION_FACTOR, MEMORY_SHARE, Estimate, Timing, activation_bytes, choose_batch, estimate, estimate_plan,
    fit_batch, largest_batch, time_network,
)
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


def fake_meminfo(monkeypatch, tmp_path, available_bytes: int | None) -> None:
    """/proc/meminfo with ``available_bytes`` as MemAvailable (None: a file without that line)."""
    lines = ["MemTotal:       16000000 kB", "MemFree:          100000 kB"]
    if available_bytes is not None:
        lines.append(f"MemAvailable:   {available_bytes // 1024:>9} kB")
    path = tmp_path / "meminfo"
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(cost, "MEMINFO", path)


def room_for(inpainter, images: float) -> int:
    """MemAvailable under which the run's share holds ``images`` images' activations."""
    return int(images * ACTIVATION_FACTOR * activation_bytes(inpainter.config) / MEMORY_SHARE)


def test_fit_batch_takes_as_many_images_as_the_share_of_free_memory_holds():
    gb = 10**9
    assert fit_batch(gb, 4.4 * gb) == 3                        # 0.8 x 4.4 GB = 3.52 GB: 3 images of 1 GB
    assert fit_batch(gb, 5 * gb, reserve=2 * gb) == 2          # 4 GB less 2 GB of converted weights
    assert fit_batch(gb, 100 * gb) == 8 and fit_batch(gb, 100 * gb, cap=16) == 16
    assert fit_batch(gb, 0.5 * gb) == 1 and fit_batch(gb, 0) == 1   # not even one fits: one is still tried


def test_activations_are_the_most_bytes_alive_at_once():
    """Traced on the meta device: a chain that frees each step's input holds two outputs at a time, never three."""
    def chain(x):
        a = x + 1       # 4 KiB alive
        b = a * 2       # 8 KiB
        del a           # 4 KiB
        c = b - 1       # 8 KiB
        return c.view(-1)   # a view adds no storage

    with torch.device("meta"):
        x = torch.zeros(1024)
    with torch.no_grad(), cost._LiveBytes() as live:
        out = chain(x)
    assert live.peak == 2 * 4096 and live.live == 4096
    del out
    assert live.live == 0


def test_activations_grow_faster_than_the_image_area(inpainter):
    """Convolutions grow with H x W, the middle block's attention weights with (H x W)^2."""
    config = inpainter.config
    small, large = activation_bytes(config.replace(image_size=16)), activation_bytes(config.replace(image_size=32))
    assert 0 < small and large > 4 * small


def test_the_batch_is_what_free_memory_holds(inpainter, monkeypatch, tmp_path):
    fake_meminfo(monkeypatch, tmp_path, room_for(inpainter, 3.5))
    choice = choose_batch(inpainter)
    assert choice.batch == 3 and "MemAvailable" in choice.reason and "activations of 3 image(s)" in choice.reason
    assert api.plan(inpainter, keep_mask(), settings=QUICK, n_samples=5).batch_size == 3
    assert api.plan(inpainter, keep_mask(), settings=QUICK, n_samples=2).batch_size == 2   # no more than the work
    assert api.plan(inpainter, keep_mask(), settings=QUICK, n_samples=5, batch_size=5).batch_size == 5   # as asked
    assert choose_batch(inpainter, 5) == cost.BatchChoice(5, "as asked")


@pytest.mark.parametrize("accel, share", [(Accel("fp32"), 0), (Accel("bf16", compile=False), 0.5),
                                          (Accel("fp32", channels_last=True), 1)])
def test_a_converting_run_keeps_room_for_the_converted_weights(inpainter, monkeypatch, tmp_path, accel, share):
    """A bf16 copy holds half the float32 weights (whose mapped pages are given back as they are cast); a float32
    channels-last copy all of them; an unconverted run none."""
    monkeypatch.setattr(accel_module, "cpu_native_bf16", lambda: True)
    inpainter.accel = accel
    weights = sum(p.numel() * p.element_size() for p in inpainter.unet.parameters())
    assert cost._converted_bytes(inpainter) == pytest.approx(share * weights, abs=1024)
    fake_meminfo(monkeypatch, tmp_path, room_for(inpainter, 2.5) + int(share * weights / MEMORY_SHARE))
    assert choose_batch(inpainter).batch == 2


def test_too_little_memory_still_runs_one_image(inpainter, monkeypatch, tmp_path):
    fake_meminfo(monkeypatch, tmp_path, room_for(inpainter, 0.3))
    choice = choose_batch(inpainter)
    assert choice.batch == 1 and "1 anyway" in choice.reason
    result = api.inpaint(inpainter, np.zeros((16, 16, 3), np.uint8), keep_mask(), settings=QUICK, seeds=(0, 1, 2))
    assert len(result.samples) == 3


def test_plenty_of_memory_gives_the_default_cap(inpainter, monkeypatch, tmp_path):
    fake_meminfo(monkeypatch, tmp_path, room_for(inpainter, 1000))
    choice = choose_batch(inpainter)
    assert choice.batch == 8 and "8 is the most per call" in choice.reason


def test_without_memavailable_free_pages_are_read_and_without_those_the_cap(inpainter, monkeypatch, tmp_path):
    fake_meminfo(monkeypatch, tmp_path, None)
    pages = room_for(inpainter, 2.5) // 4096
    monkeypatch.setattr(cost.os, "sysconf", lambda name: {"SC_AVPHYS_PAGES": pages, "SC_PAGE_SIZE": 4096}[name])
    assert choose_batch(inpainter).batch == 2 and "free pages" in choose_batch(inpainter).reason

    def no_sysconf(name):
        raise ValueError(name)

    monkeypatch.setattr(cost.os, "sysconf", no_sysconf)
    assert choose_batch(inpainter) == cost.BatchChoice(8, "the free memory of cpu cannot be read here: the default, 8")

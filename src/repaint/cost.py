"""What a plan will cost before it runs: seconds and peak memory, from a short timed call of the network on this
machine.

:func:`time_network` calls the loaded denoiser as the run will call it (:meth:`repaint.inpainter.Inpainter.network`:
same device, precision, compilation and graphs) at the plan's largest batch and the model's resolution: two warm-up
calls (compilation, graph capture, the allocator's first growth and the thread pool's start happen there, and the
run reuses them), then the median of five timed calls. The result is kept per (network, batch size, device,
precision) for the life of the process, so a server times each batch size once. :func:`estimate` turns a
:class:`repaint.windows.Plan` and that timing into an :class:`Estimate`; :func:`estimate_plan` does both.

It is an estimate, and says how it was made. The time counts only the network calls (the sampler's own arithmetic,
classifier guidance, reading and writing images are left out) at the speed measured a moment before, so a machine
that is busier or idler during the run than during the timing moves the real time either way. Peak memory is:

- on CUDA, the most GPU memory held by tensors during the timed calls (``torch.cuda.max_memory_allocated``, its
  counter reset after the warm-up): weights, their converted copy if any, graph pools and one call's activations.
  The CUDA context and the allocator's slack come on top.
- on a CPU under Linux, the peak resident memory of the whole process during the timed calls (``VmHWM`` of
  ``/proc/self/status``, reset before them through ``/proc/self/clear_refs``): the interpreter, libraries, weights
  and one call's activations. Where the reset is refused, ``ru_maxrss``, the high-water mark since the process
  started, which also counts anything larger done before (an upper bound then).
- elsewhere, the bytes of the weights alone (a lower bound).

The sampler keeps a few image-sized tensors per job besides; they are small next to a UNet's activations and are not
counted.

:func:`choose_batch` picks the batch size where none was asked for: the most jobs per call, up to
:data:`~repaint.windows.DEFAULT_BATCH`, whose activations fit in the memory free on the run's device (``MemAvailable``
of ``/proc/meminfo`` on a CPU, ``torch.cuda.mem_get_info`` on CUDA). One image's activations come from a model, not a
timed call: the most bytes of operation outputs alive at once during one float32 eager call at batch 1, traced on
the meta device (no memory, no arithmetic; :func:`activation_bytes`), times :data:`ACTIVATION_FACTOR`.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .accel import is_noop
from .windows import DEFAULT_BATCH, Plan

if TYPE_CHECKING:
    from .inpainter import Inpainter
    from .models.config import UNetConfig

__all__ = [
    "Timing", "Estimate", "time_network", "estimate", "estimate_plan", "largest_batch", "clear_timings",
    "BatchChoice", "choose_batch", "fit_batch", "available_memory", "activation_bytes",
    "MEMORY_SHARE", "ACTIVATION_FACTOR",
]

WARMUP = 2    # untimed calls first: compilation, graph capture, the allocator, and on a CPU the thread pool, whose
#              first calls on a busy two-core machine ran 3-10x slower than the ones after (docs/performance.md)
REPEATS = 5   # timed calls after the warm-up; their median is the time per call

# The share of the free memory a run's activations may plan to fill; the rest is left to the system, to other programs
# and to the error of the activation model.
MEMORY_SHARE = 0.8
# Resident bytes per traced activation byte: the 256x256 ADM UNet's one fp32 call at batch 1 raised the peak RSS by
# 0.91 GiB beyond its weights and the loaded process (docs/performance.md, "Loading a 256² checkpoint"), against
# 576 MiB traced; oneDNN's reordered weights and scratch space and the allocator's slack make the difference.
ACTIVATION_FACTOR = 1.6
MEMINFO = Path("/proc/meminfo")   # Linux's memory counters (MemAvailable)

_TIMINGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # network module -> {key: Timing}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Timing:
    """One network call at ``batch`` measured on this machine."""

    seconds_per_call: float   # median of the timed calls
    batch: int                # images per call
    peak_bytes: int           # peak memory during the timed calls, as ``memory`` says
    memory: str               # what peak_bytes measures, e.g. "peak resident memory of this process"
    device: str = "cpu"


@dataclass(frozen=True)
class Estimate:
    """The cost of a plan before it runs (an estimate: see the module's docstring for how it is made)."""

    seconds: float
    peak_bytes: int
    seconds_per_call: float   # at ``batch``; 0 where nothing was timed
    batch: int
    calls: int
    how: str                  # how the time was measured, in words
    memory: str = ""          # what peak_bytes measures (Timing.memory)
    device: str = "cpu"

    def describe(self) -> str:
        """One line, e.g. "about 13 s, peak about 0.3 GB of RAM (timed on this machine: 56 ms per call at batch 1)"."""
        if self.calls == 0:
            return "no network calls, nothing to time"
        where = {"cpu": " of RAM", "cuda": " of GPU memory"}.get(self.device, "")
        return (f"about {_duration(self.seconds)}, peak about {_size(self.peak_bytes)}{where} ({self.how}: "
                f"{_duration(self.seconds_per_call)} per call at batch {self.batch})")


def estimate(plan: Plan, timing: Timing) -> Estimate:
    """The time and peak memory of ``plan`` from a measured ``timing`` at the plan's :func:`largest_batch`.

    seconds = calls per batch x time per call x (jobs / largest batch): every full batch costs one timed call per
    step, and a smaller last batch (of a photo or of a tile phase) its share of one, since time per call grows about
    in proportion to the batch on a CPU. On a GPU a small batch costs nearly as much as a full one, so there a smaller
    last batch is under-counted. A plan whose batches are all full costs exactly ``plan.calls * seconds_per_call``.
    """
    batch = largest_batch(plan)
    if plan.calls == 0:
        return Estimate(0.0, 0, 0.0, batch, 0, "no network calls", "nothing")
    if timing.batch != batch:
        raise ValueError(f"the timing is at batch {timing.batch}, the plan's largest batch is {batch}")
    seconds = plan.calls_per_batch * timing.seconds_per_call * sum(_groups(plan)) / batch
    return Estimate(seconds, timing.peak_bytes, timing.seconds_per_call, timing.batch, plan.calls,
                    "timed on this machine", timing.memory, timing.device)


def estimate_plan(inpainter: Inpainter, plan: Plan, *, measure: bool = True) -> Estimate | None:
    """:func:`estimate` with the timing of ``inpainter``'s network at ``plan``'s largest batch (measured once per
    process, :func:`time_network`). A plan without network calls is not timed. ``measure=False``: only a timing
    measured before is used, and None is returned where there is none (a server whose device is busy)."""
    batch = largest_batch(plan)
    if plan.calls == 0:
        return estimate(plan, Timing(0.0, batch, 0, "nothing"))
    timing = time_network(inpainter, batch) if measure else _known(inpainter, batch)
    return None if timing is None else estimate(plan, timing)


def largest_batch(plan: Plan) -> int:
    """The most jobs one network call of ``plan`` carries: its batch size, or fewer where a photo (or a tile phase)
    has fewer jobs than that. The size the network is timed at, and the batch whose memory is the peak."""
    return min(plan.batch_size, max(_groups(plan)))


def time_network(inpainter: Inpainter, batch: int, *, repeats: int = REPEATS) -> Timing:
    """Time ``inpainter``'s network as a run executes it, on a [batch, C, s, s] input at a mid timestep:
    :data:`WARMUP` untimed calls, then the median of ``repeats`` calls. Cached per (network, batch, device,
    precision) in this process."""
    device = torch.device(inpainter.device)
    with _LOCK:
        known = _TIMINGS.setdefault(inpainter.unet, {})
        key = _key(inpainter, batch)
        if key not in known:
            known[key] = _measure(inpainter, batch, repeats, device)
        return known[key]


def _key(inpainter: Inpainter, batch: int) -> tuple:
    device = torch.device(inpainter.device)
    return batch, str(device), inpainter.plan()


def _known(inpainter: Inpainter, batch: int) -> Timing | None:
    with _LOCK:
        return _TIMINGS.get(inpainter.unet, {}).get(_key(inpainter, batch))


def clear_timings() -> None:
    """Forget every measured timing (the next estimate times the network again)."""
    with _LOCK:
        _TIMINGS.clear()


def _measure(inpainter: Inpainter, batch: int, repeats: int, device: torch.device) -> Timing:
    net, side = inpainter.network(), inpainter.image_size
    x = torch.randn(batch, inpainter.config.in_channels, side, side, generator=torch.Generator().manual_seed(0))
    x = x.to(device)
    t = torch.full((batch,), inpainter.trained.steps // 2, dtype=torch.int64, device=device)
    y = torch.zeros(batch, dtype=torch.int64, device=device) if inpainter.num_classes else None
    times = []
    with torch.no_grad():
        for _ in range(WARMUP):
            net(x, t, y)
        _sync(device)
        with _peak_memory(device, inpainter.unet) as peak:
            for _ in range(repeats):
                start = time.perf_counter()
                net(x, t, y)
                _sync(device)
                times.append(time.perf_counter() - start)
    return Timing(statistics.median(times), batch, peak.bytes, peak.what, device.type)


@dataclass(frozen=True)
class BatchChoice:
    """The jobs per network call a run uses, and why."""

    batch: int
    reason: str

    def describe(self) -> str:
        """One line, e.g. "at most 3 jobs per network call (3.9 GB free (MemAvailable), ... holds 3 images' ...)"."""
        return f"at most {self.batch} job{'s' if self.batch > 1 else ''} per network call ({self.reason})"


def choose_batch(inpainter: Inpainter, requested: int | None = None, *, cap: int = DEFAULT_BATCH) -> BatchChoice:
    """The batch size of a run of ``inpainter``: ``requested`` where given, else the largest up to ``cap`` whose
    activations fit in :data:`MEMORY_SHARE` of the device's free memory (:func:`fit_batch`), less what converting the
    weights adds where the run converts them (:func:`_converted_bytes`), never below 1.
    Where the free memory cannot be read, ``cap``. A photo with fewer jobs runs fewer (its plan's ``largest_batch``)."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"batch_size must be >= 1, got {requested}")
        return BatchChoice(requested, "as asked")
    from .models.config import UNetConfig

    if not isinstance(inpainter.config, UNetConfig):   # a diffusers network: no model of its activations
        return BatchChoice(cap, f"the activations of a {type(inpainter.config).__name__} network are not modelled: "
                                f"the default, {cap}")
    free = available_memory(inpainter.device)
    if free is None:
        return BatchChoice(cap, f"the free memory of {inpainter.device} cannot be read here: the default, {cap}")
    available, source = free
    per_image = round(ACTIVATION_FACTOR * activation_bytes(inpainter.config))
    reserve = _converted_bytes(inpainter)
    batch = fit_batch(per_image, available, reserve=reserve, cap=cap)
    fits = max(0, int((available * MEMORY_SHARE - reserve) // per_image))
    room = (f"{_size(available)} free ({source}), {MEMORY_SHARE:.0%} of it"
            + (f" less {_size(reserve)} for converted weights" if reserve else "")
            + f" holds the activations of {fits:,} image(s) of about {_size(per_image)} each")
    if fits < 1:
        return BatchChoice(1, f"{room}: 1 anyway, which may swap or fail; close other programs")
    return BatchChoice(batch, room + (f"; {cap} is the most per call" if fits > cap else ""))


def fit_batch(per_image: int, available: int, *, reserve: int = 0, cap: int = DEFAULT_BATCH) -> int:
    """The most images (1 to ``cap``) whose ``per_image`` bytes fit in :data:`MEMORY_SHARE` of ``available`` bytes
    less ``reserve``; 1 where not even one fits (a run of one image is still tried)."""
    if per_image <= 0:
        return cap
    return max(1, min(cap, int((available * MEMORY_SHARE - reserve) // per_image)))


def available_memory(device: torch.device | str) -> tuple[int, str] | None:
    """(bytes free for a new allocation on ``device``, where that figure comes from), or None where it cannot be read.

    A CPU: ``MemAvailable`` of ``/proc/meminfo`` (Linux: free memory plus the caches the kernel can drop), else the
    free pages of ``sysconf`` (a lower bound: caches not counted). CUDA: ``torch.cuda.mem_get_info``."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0], "free GPU memory"
    if device.type != "cpu":
        return None
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "MemAvailable"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free pages"
    except (AttributeError, ValueError, OSError):   # not on this system (macOS, Windows)
        return None


def activation_bytes(config: UNetConfig) -> int:
    """The most bytes of activations alive at once during one float32 eager call of a network of ``config`` on one
    image, traced on the meta device (shapes only: no memory is allocated, nothing is computed); once per config."""
    key = repr(config)   # some configs hold dicts, so are not hashable
    if key not in _ACTIVATIONS:
        _ACTIVATIONS[key] = _trace_activations(config)
    return _ACTIVATIONS[key]


_ACTIVATIONS: dict[str, int] = {}


def _trace_activations(config: UNetConfig) -> int:
    from .models.config import build_model

    with torch.device("meta"):
        net = build_model(config).eval()
        x = torch.zeros(1, config.in_channels, config.image_size, config.image_size)
        t = torch.zeros(1, dtype=torch.int64)
        y = torch.zeros(1, dtype=torch.int64) if config.class_cond else None
    with torch.no_grad(), _LiveBytes() as live:
        net(x, t, y)
    return live.peak


class _LiveBytes(TorchDispatchMode):
    """Counts the bytes of the storages that operation outputs hold while any tensor made by an operation still
    refers to them (inputs and weights are not counted), and the most at any moment."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.holders: dict[int, int] = {}   # storage -> tensors alive on it

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                self._hold(tensor)
        return out

    def _hold(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key, size = storage._cdata, storage.nbytes()
        if key not in self.holders:
            self.holders[key] = 0
            self.live += size
            self.peak = max(self.peak, self.live)
        self.holders[key] += 1
        weakref.finalize(tensor, self._release, key, size)

    def _release(self, key: int, size: int) -> None:
        self.holders[key] -= 1
        if not self.holders[key]:
            del self.holders[key]
            self.live -= size


def _groups(plan: Plan) -> list[int]:
    """Jobs of each part of ``plan`` that is batched on its own: each tile phase, or the whole photo."""
    return [len(p) * plan.n_samples for p in plan.phases] if plan.phases else [plan.jobs]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Peak:
    bytes = 0
    what = ""


@contextmanager
def _peak_memory(device: torch.device, net: torch.nn.Module):
    """The peak memory of the calls inside the block (see the module's docstring for what is measured where)."""
    peak = _Peak()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield peak
        peak.bytes, peak.what = torch.cuda.max_memory_allocated(device), "GPU memory held by tensors"
        return
    reset = _reset_rss_peak()
    yield peak
    if reset:
        peak.bytes, peak.what = _status_kib("VmHWM") * 1024, "peak resident memory of this process"
    elif (maxrss := _maxrss()) is not None:
        peak.bytes, peak.what = maxrss, "resident high-water mark of this process since it started"
    else:
        peak.bytes, peak.what = _weight_bytes(net), "the weights alone"


def _reset_rss_peak() -> bool:
    """Reset the process's peak resident size to its current one (Linux 4.0+); False where that is refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kib("VmHWM") > 0
    except OSError:
        return False


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _maxrss() -> int | None:
    try:
        import resource
    except ImportError:   # Windows
        return None
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024   # bytes on macOS, KiB on Linux


def _weight_bytes(net: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*net.parameters(), *net.buffers()))


def _converted_bytes(inpainter: Inpainter) -> int:
    """The memory a run's conversion of the denoiser adds: none where it runs as loaded; else a copy of the weights in
    the plan's precision (the float32 pages of a memory-mapped checkpoint are given back as they are cast,
    :mod:`repaint.checkpoints.mapped`), and as much again for the constants of a frozen compilation."""
    plan = inpainter.plan()
    if is_noop(plan, inpainter.device):
        return 0
    copy = _weight_bytes(inpainter.unet) // (2 if plan.precision in ("bf16", "fp16") else 1)
    return copy * (2 if plan.freeze and plan.compile else 1)


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 180:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"

"""Fast execution of the denoiser: reduced precision, channels-last, ``torch.compile`` and CUDA graphs.

The sampler (:mod:`repaint.samplers`) calls the network 2,410 times per image at the paper's schedule; all of the time
is in those calls. :func:`accelerate` wraps a network (or any ``model(x, t, ...)`` callable) in a callable with the same
signature that runs faster and still returns float32, so the diffusion maths stays in float32 whatever the network
ran in.

==================  ================================================================================================
``precision``       what runs in reduced precision
==================  ================================================================================================
``"fp32"``          nothing (the reference implementation's default)
``"bf16"``          every conv / linear / embedding weight is stored in bfloat16 and the call runs under
                    ``torch.autocast(bfloat16)``; GroupNorm statistics stay float32 (:class:`GroupNorm32`), and so
                    does the output. Attention goes through SDPA, i.e. flash attention on CUDA.
``"fp16"``          the same in float16
``"reference-fp16"`` the reference's own ``use_fp16`` mode: the torso's convolutions in float16, no autocast
                    (:meth:`UNetModel.convert_torso`)
``"auto"``          on CUDA: ``"fp16"`` replayed as CUDA graphs, compiled (channels-last) where ``torch.compile`` can
                    run (Triton on a GPU of compute capability 7.0 or newer), eager (NCHW) with a warning where it
                    cannot. fp16 rather than bf16: both run at the same tensor-core rate, and fp16's 11
                    significand bits keep one call within 0.1-0.2 % of float32 where bf16 measures 0.8-1.5 %
                    (tests/test_accel.py; 0.10 % and 1.2 % on an H200). On a CPU: ``"bf16"``, channels-last and
                    compiled (where a C++ compiler is found; eager otherwise) for a network of at least
                    :data:`CPU_AUTO_MIN_PARAMETERS` parameters (the 256x256 models) where the CPU computes in
                    bfloat16 natively (AVX512-BF16 or AMX, :func:`cpu_native_bf16`): the fastest mode that passed
                    the tolerance of docs/performance.md ("CPU modes"). ``"fp32"``, the network untouched,
                    otherwise.
==================  ================================================================================================

``compile`` and ``channels_last`` left at ``None`` are on for a reduced-precision run on CUDA that can compile, off
otherwise, except channels-last for bf16 on a CPU (faster than NCHW bf16 in every CPU measurement, docs/performance.md);
``cuda_graphs`` at ``None`` is on wherever the call is compiled or the precision is "auto" on CUDA. Set them to force
either way (eager GroupNorm on channels-last memory is slow on CUDA, which is why eager CUDA calls stay NCHW).
``freeze=True`` compiles with inductor's freezing (weights as constants of the compiled code; on a CPU, oneDNN
convolutions on weights packed once); it was no faster than plain compiled bf16 on the 256x256 model on an AVX512-BF16
CPU (docs/performance.md, "CPU modes"), so nothing turns it on by itself.
A compiled call treats the batch size as dynamic (one compilation serves every batch of two or more; batch 1 gets its
own), so the last, smaller batch of a run does not recompile. Compiled code is cached on disk
(:func:`compile_cache_dir`), so only a machine's first run pays the full compilation.

Weights are cast once, up front: autocast alone would cast all 552.8M parameters of the 256x256 model again on every
call (about 3.3 GB of memory traffic per call).

Nothing here synchronises the host with the device, so the sampling loop keeps queueing work ahead of the GPU.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import functools
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "resolve_device",
    "Accel", "PRECISIONS", "TRAINING_PRECISIONS", "REFERENCE", "accelerate", "is_noop", "compiler_available",
    "compile_cache_dir", "execution_summary", "cpu_native_bf16", "cpu_compiler_available", "unavailable",
    "network_parameters", "CPU_AUTO_MIN_PARAMETERS", "keep_freed_memory",
]

# The one vocabulary of network precisions (sampling, training, the CLI). A checkpoint config's use_fp16 is the
# reference's own flag for what is called "reference-fp16" here.
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "reference-fp16")
TRAINING_PRECISIONS = ("fp32", "bf16", "fp16")   # training autocasts; it has no "auto" or reference mode
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "reference-fp16": torch.float16}
_CAST_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.Embedding)  # matmul-like layers; norms stay float32
CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
# "auto" on a CPU with native bfloat16 runs networks of at least this many parameters in bf16 (the 256x256 ADM UNets
# have 552.8M); smaller ones, the bundled 64x64 face model among them, stay fp32 (docs/performance.md, "CPU modes").
CPU_AUTO_MIN_PARAMETERS = 100_000_000
# First-call time of the compiled 256x256 ADM UNet on an H200 (docs/performance.md): compilation, cuDNN's autotuning
# and the graph capture. Batch 1 is a second compilation (57 s cold).
COMPILE_COLD = "about 90 s for a 256x256 model"
COMPILE_WARM = "about 20 s"
# The same on one core of the 2-core AMD EPYC of docs/performance.md ("CPU modes"): the first bf16 call took 170 s
# against 12 s for the next ones.
COMPILE_COLD_CPU = "about 3 min for a 256x256 model on one CPU core"


@dataclass(frozen=True)
class Accel:
    """How to execute the network. ``Accel()`` is the default: compiled fp16 on CUDA; on a CPU untouched, except a
    network of :data:`CPU_AUTO_MIN_PARAMETERS`+ parameters on a CPU with native bf16 (compiled bf16, channels-last)."""

    precision: str = "auto"             # one of PRECISIONS
    channels_last: bool | None = None   # NHWC activations and weights; None = with compile on CUDA (reduced precision)
    compile: bool | None = None         # torch.compile; None = on CUDA for auto/bf16/fp16 where a compiler runs
    cuda_graphs: bool | None = None     # one CUDA graph per input shape, replayed; None = whenever compiled on CUDA
    compile_mode: str | None = None     # torch.compile mode (None = inductor's default)
    # inductor settings, e.g. (("coordinate_descent_tuning", True),)
    compile_options: tuple[tuple[str, object], ...] = ()
    dynamic_batch: bool = True          # compile the batch dimension as dynamic (batch 1 is compiled on its own)
    # compiled calls take GroupNorm from per-channel moments (not yet timed on a GPU)
    channel_moments_norm: bool = False
    # inductor's freezing, for compiled calls without autograd: the weights become constants of the compiled code, so
    # on a CPU oneDNN runs convolutions and linears on weights reordered once, at compile time (a second copy of them)
    freeze: bool = False

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.compile_mode is not None and self.compile_options:
            raise ValueError("give compile_mode or compile_options, not both (torch.compile takes one)")
        if self.freeze and self.compile_mode is not None:
            raise ValueError("freeze is a compile option: give compile_options, not compile_mode, with it")
        if self.freeze and self.compile is False:
            raise ValueError("freeze applies to compiled calls: it needs compile=True (or None)")

    @classmethod
    def reference(cls) -> "Accel":
        """Execute exactly like the reference implementation: float32, eager, contiguous (NCHW)."""
        return cls(precision="fp32", channels_last=False, compile=False, cuda_graphs=False)

    def resolve(self, device: torch.device | str, parameters: int | None = None) -> "Accel":
        """The concrete plan on ``device`` for a network of ``parameters`` parameters (None: a small one): no field
        left "auto" or None."""
        device = torch.device(device)
        cuda = device.type == "cuda"
        cpu_bf16 = (self.precision == "auto" and device.type == "cpu" and (parameters or 0) >= CPU_AUTO_MIN_PARAMETERS
                    and cpu_native_bf16())
        compile_ = self.compile
        if compile_ is None:
            compile_ = ((cuda and self.precision in ("auto", "bf16", "fp16") and compiler_available(device))
                        or (cpu_bf16 and cpu_compiler_available()))
        precision = self.precision
        if precision == "auto":
            precision = "fp16" if cuda else "bf16" if cpu_bf16 else "fp32"
        reduced = precision in ("bf16", "fp16")
        channels_last = self.channels_last
        if channels_last is None:  # eager GroupNorm on channels-last memory is slow on CUDA: only for compiled calls
            channels_last = (cuda and compile_ and reduced) or (device.type == "cpu" and precision == "bf16")
        cuda_graphs = self.cuda_graphs
        if cuda_graphs is None:
            cuda_graphs = cuda and (compile_ or self.precision == "auto")
        if cuda_graphs and not cuda:
            raise ValueError(f"CUDA graphs need a CUDA device, not {device}")
        return replace(self, precision=precision, channels_last=channels_last, compile=compile_,
                       cuda_graphs=cuda_graphs)

    def label(self) -> str:
        """Short name, e.g. "bf16+cl+compile+graphs" (of a resolved plan; "auto" fields print as "auto")."""
        parts = [self.precision]
        parts += ["cl"] if self.channels_last else []
        parts += ["compile"] if self.compile else ["compile?"] if self.compile is None else []
        parts += ["freeze"] if self.freeze and self.compile is not False else []
        parts += ["graphs"] if self.cuda_graphs else []
        return "+".join(parts)


REFERENCE = Accel.reference()


def resolve_device(name: str | torch.device | None = "auto") -> str:
    """The one device rule of every front end: "auto" (or None) is "cuda" where CUDA is available, else "cpu"; a CUDA
    device asked for on a machine without CUDA is a ValueError."""
    name = "auto" if name is None else str(name)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(name).type
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name} was asked for but no CUDA device is available; use cpu")
    return name


def is_noop(accel: Accel, device: torch.device | str, parameters: int | None = None) -> bool:
    """Whether ``accel`` leaves a network of ``parameters`` parameters exactly as it is on ``device``."""
    plan = accel.resolve(device, parameters)
    return plan.precision == "fp32" and not (plan.channels_last or plan.compile or plan.cuda_graphs)


@functools.cache
def compiler_available(device: torch.device | str) -> bool:
    """Whether ``torch.compile``'s default backend can generate code for ``device`` here (Triton on CUDA)."""
    device = torch.device(device)
    if device.type != "cuda":
        return False
    try:
        from torch.utils._triton import has_triton

        return bool(has_triton())
    except Exception:  # an old or broken Triton: no compiler
        return False


@functools.cache
def cpu_native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX-BF16, read from /proc/cpuinfo). Elsewhere
    oneDNN emulates bf16 from float32 instructions, no faster than float32 itself."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line for line in info if line.startswith("flags")), "").split()
    except OSError:  # not Linux: not known, so not assumed
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@functools.cache
def cpu_compiler_available() -> bool:
    """Whether ``torch.compile``'s CPU backend finds a C++ compiler ($CXX, else c++, g++ or clang++)."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["c++", "g++", "clang++"]
    return any(shutil.which(name) for name in names)


def unavailable(accel: Accel, device: torch.device | str) -> str | None:
    """One line if this machine cannot run the mode ``accel`` asks for as asked (naming what to use instead), else
    None. Only explicit requests are checked: "auto" picks what runs."""
    device = torch.device(device)
    if device.type != "cpu":
        return None
    if accel.precision == "bf16" and not cpu_native_bf16():
        return ("--precision bf16: this CPU has no native bfloat16 (AVX512-BF16 or AMX), so bf16 is emulated and "
                "slower than float32; use --precision fp32 (or auto)")
    if accel.precision in ("fp16", "reference-fp16"):
        return f"--precision {accel.precision} is for CUDA devices; on a CPU use --precision fp32 (or auto)"
    if accel.compile and not cpu_compiler_available():
        return ("--compile on a CPU needs a C++ compiler (g++ or clang++; $CXX) and none was found; install one or "
                "leave out --compile")
    return None


# glibc's malloc returns every freed block of 128 KiB or more to the system (a mapping of its own, or the top of the
# heap above M_TRIM_THRESHOLD), so each network call on a CPU faults its activations' pages in afresh: 7,800 page
# faults per call of the face model at batch 4, about a sixth of its time (docs/performance.md, "The allocator").
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3        # mallopt parameters, <malloc.h>
KEPT_BLOCKS_BELOW = 32 * 2**20                     # blocks under this come from the heap (glibc's largest threshold)
KEPT_FREE_TOP = 64 * 2**20                         # freed memory at the top of the heap is kept up to this much


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for the next allocation instead of returning it to the system (blocks up
    to :data:`KEPT_BLOCKS_BELOW` from the heap; up to :data:`KEPT_FREE_TOP` of free heap kept), so a network call
    reuses the pages of the call before. Process-wide: the ``repaint`` program calls it at start; the library never
    does, since it would change the allocator of the program that imports it. Returns whether it applied (only with
    glibc; elsewhere nothing changes)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):   # not a C library with mallopt (Windows, some others)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, KEPT_BLOCKS_BELOW) == 1 and mallopt(M_TRIM_THRESHOLD, KEPT_FREE_TOP) == 1


def execution_summary(accel: Accel, device: torch.device | str, parameters: int | None = None) -> str:
    """One line on how a network of ``parameters`` parameters will execute, with the cost of compiling where it
    compiles."""
    plan = accel.resolve(device, parameters)
    text = plan.label()
    if plan.compile and torch.device(device).type == "cpu":
        text += f" (the first call compiles the network: {COMPILE_COLD_CPU}, less once cached in {compile_cache_dir()})"
    elif plan.compile:
        text += (f" (the first call compiles the network: {COMPILE_COLD} on a machine's first run, "
                 f"{COMPILE_WARM} after that, from {compile_cache_dir()})")
    return text


def compile_cache_dir() -> Path:
    """Where compiled kernels are kept between runs: $TORCHINDUCTOR_CACHE_DIR if the user set it, else a folder of
    the model cache (:func:`repaint.home.home_dir`), so a machine compiles a network once, not once per boot.

    PyTorch writes its own default (a folder under /tmp) into $TORCHINDUCTOR_CACHE_DIR as soon as the compiler is
    imported; that value counts as unset.
    """
    from .home import home_dir

    value = os.environ.get(CACHE_ENV)
    if value and os.path.abspath(value) != _torch_default_cache_dir():
        return Path(value)
    return home_dir() / "torch-compile"


def _torch_default_cache_dir() -> str | None:
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # PyTorch before 2.5 keeps it elsewhere
        try:
            from torch._inductor.utils import default_cache_dir
        except ImportError:
            return None
    return os.path.abspath(default_cache_dir())


def accelerate(
    net: nn.Module | Callable[..., torch.Tensor],
    accel: Accel = Accel(),
    device: torch.device | str | None = None,
    *,
    inplace: bool = False,
) -> Callable[..., torch.Tensor]:
    """``net`` executed as ``accel`` says; same call signature, float32 output.

    Args:
        net: a network (``UNetModel``: ``(x, timesteps, y=None)``; the classifier: ``(x, timesteps)``) or any model
            callable (``model(x, model_t)``). For a plain callable only autocast, channels-last inputs,
            compilation and graphs apply; weight casts and "reference-fp16" need the module.
        accel: the plan (see :class:`Accel`).
        device: where it runs (default: the device of ``net``'s first parameter, else CPU).
        inplace: convert ``net``'s weights in place instead of on a copy (saves the memory of a second copy).

    Returns ``net`` itself when the plan changes nothing (``Accel()`` on CPU for a network under
    :data:`CPU_AUTO_MIN_PARAMETERS` or without native bf16, :data:`REFERENCE` anywhere), so those
    outputs are bitwise those of ``net``. The returned callable's first argument ``x`` is float [B, C, H, W].
    CUDA graphs are used only without autograd (under ``torch.no_grad``); a call that needs gradients (classifier
    guidance) runs the converted network directly. Where "auto" wanted a compiler and none runs here, or compiling
    fails, a warning says so and the call runs eagerly.
    """
    device = torch.device(device) if device is not None else _device_of(net)
    if accel.precision == "auto" and accel.compile is None and device.type == "cuda" and not compiler_available(device):
        warnings.warn("torch.compile cannot run here (it needs Triton and a GPU of compute capability 7.0 or newer): "
                      "the network runs eagerly in fp16 with CUDA graphs, 1.9x (batch 8) to 3.4x (batch 1) slower "
                      "than compiled on an H200 (docs/performance.md)", stacklevel=2)
    parameters = network_parameters(net)
    plan = accel.resolve(device, parameters)
    if is_noop(plan, device):
        return net
    if isinstance(net, nn.Module):
        cast = _DTYPES[plan.precision] if plan.precision in ("bf16", "fp16") else None
        net = _convert(net if inplace else _copy(net, cast, plan.channels_last), plan)
    elif plan.precision == "reference-fp16":
        raise TypeError("precision 'reference-fp16' converts a network's weights: pass the nn.Module, not a callable")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # process-wide: fixed shapes, so let cuDNN pick the fastest kernels
    fn: Callable[..., torch.Tensor] = _Forward(net, plan, device)
    if plan.compile:
        fn = _Compiled(fn, plan, fallback=fn if accel.compile is None else None)
    if plan.cuda_graphs:
        fn = _GraphedCall(fn)
    return fn


def network_parameters(net) -> int | None:
    """The parameter count of a network (None for a plain callable): what "auto" on a CPU decides by."""
    return sum(p.numel() for p in net.parameters()) if isinstance(net, nn.Module) else None


def _device_of(net) -> torch.device:
    param = next(net.parameters(), None) if isinstance(net, nn.Module) else None
    return torch.device("cpu") if param is None else param.device


def _copy(net: nn.Module, dtype: torch.dtype | None = None, channels_last: bool = False) -> nn.Module:
    """A copy that needs no gradients for its weights (guidance differentiates w.r.t. the image only). With a
    ``dtype`` (bf16, fp16) the weights of the layers :func:`_convert` casts are copied straight into it, never as a
    float32 copy first: the 256x256 UNet would otherwise hold a second 2.06 GiB of float32 weights for a moment. Where
    a weight was read from a memory-mapped checkpoint, its float32 pages are given back once it is cast
    (:mod:`repaint.checkpoints.mapped`), so the peak is the cast copy plus one weight, not both networks. With
    ``channels_last`` the cast copies of 4-D weights are made in that layout at once, so :func:`_convert` does not copy
    them a second time."""
    memo: dict[int, object] = {}
    if dtype is not None:
        from .checkpoints.mapped import releaser

        release = releaser()
        for layer in net.modules():
            if isinstance(layer, _CAST_LAYERS):
                for param in layer.parameters(recurse=False):
                    layout = torch.channels_last if channels_last and param.dim() == 4 else torch.preserve_format
                    memo[id(param)] = nn.Parameter(param.detach().to(dtype, memory_format=layout), requires_grad=False)
                    release(param)
    clone = copy.deepcopy(net, memo)
    clone.requires_grad_(False)
    return clone


def _convert(net: nn.Module, plan: Accel) -> nn.Module:
    """Cast the weights of ``net`` (in place) for ``plan``; returns it in eval mode."""
    if plan.precision == "reference-fp16":
        if not hasattr(net, "convert_torso"):
            raise TypeError(f"{type(net).__name__} has no reference fp16 mode (convert_torso)")
        net.convert_torso(torch.float16)
    elif plan.precision in ("bf16", "fp16"):
        for layer in net.modules():
            if isinstance(layer, _CAST_LAYERS):
                layer.to(_DTYPES[plan.precision])
    if plan.compile and plan.channel_moments_norm:
        _swap_group_norms(net)
    if plan.channels_last:
        net.to(memory_format=torch.channels_last)
    return net.eval()


def _swap_group_norms(net: nn.Module) -> None:
    """Every GroupNorm32 of ``net`` becomes a GroupNormForCompile (same function and parameters), whose per-channel
    reductions compile to kernels that read channels-last memory with unit stride."""
    from .models.nn import GroupNorm32, GroupNormForCompile

    for module in net.modules():
        if type(module) is GroupNorm32:
            module.__class__ = GroupNormForCompile


class _Forward(nn.Module):
    """The converted network's call: channels-last input, autocast, float32 contiguous output."""

    def __init__(self, net: Callable[..., torch.Tensor], plan: Accel, device: torch.device):
        super().__init__()
        self.net = net
        self.channels_last = plan.channels_last
        self.autocast = plan.precision in ("bf16", "fp16")
        self.dtype = _DTYPES.get(plan.precision, torch.float32)
        self.device_type = device.type

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if not self.autocast:
            return self.net(x, *args, **kwargs).float().contiguous()
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.net(x, *args, **kwargs)
        return out.float().contiguous()


class _Compiled:
    """``torch.compile`` of a call, with the batch dimension dynamic and compiled code cached on disk.

    Every tensor argument whose first dimension is the batch is marked dynamic when the batch is 2 or more (a batch
    of 1 is specialised by the compiler anyway), so tiles, images and samples in batches of any size share one
    compilation. ``fallback`` (an eager callable) replaces the compiled one, with a warning, if compiling fails;
    without it the error is raised.
    """

    def __init__(self, fn: Callable[..., torch.Tensor], plan: Accel, fallback: Callable[..., torch.Tensor] | None):
        os.environ[CACHE_ENV] = str(compile_cache_dir())
        options = {**dict(plan.compile_options), **({"freezing": True} if plan.freeze else {})} or None
        self.compiled = torch.compile(fn, mode=plan.compile_mode, options=options,
                                      dynamic=None if plan.dynamic_batch else False)
        self.fn = self.compiled
        self.fallback = fallback
        self.dynamic_batch = plan.dynamic_batch
        self.freeze = plan.freeze

    def __call__(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self.fn is self.compiled and self.dynamic_batch and x.shape[0] > 1:
            for value in (x, *args, *kwargs.values()):
                if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == x.shape[0]:
                    torch._dynamo.mark_dynamic(value, 0)
        try:
            with self._freezing():
                return self.fn(x, *args, **kwargs)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as error:
            if self.fallback is None or self.fn is self.fallback:
                raise
            first = " ".join(str(error).split())[:300]
            warnings.warn(f"torch.compile failed ({type(error).__name__}: {first}); the network runs eagerly",
                          stacklevel=2)
            self.fn = self.fallback
            return self.fn(x, *args, **kwargs)

    def _freezing(self):
        """The process-wide inductor setting, for the span of a call: dynamo reads it when it traces (to take the
        weights as constants), not from ``torch.compile``'s options, which only keep the two compilations apart."""
        if not self.freeze:
            return contextlib.nullcontext()
        import torch._inductor.config as inductor_config

        return inductor_config.patch(freezing=True)


class _GraphedCall:
    """Replays one CUDA graph per input signature (shapes, dtypes, None-ness of every argument).

    Inputs are copied into static buffers, the graph is replayed, and the output is cloned out of the graph's memory
    (a sampler may keep earlier outputs). Capture follows the PyTorch recipe: a few warm-up calls on a side stream,
    then one call captured. All graphs share one memory pool; they never run concurrently.
    """

    def __init__(self, fn: Callable[..., torch.Tensor], warmup: int = 3):
        self.fn = fn
        self.warmup = warmup
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, list, torch.Tensor]] = {}
        self.pool = None

    def __call__(self, *args: torch.Tensor | None) -> torch.Tensor:
        if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            return self.fn(*args)
        key = tuple((tuple(a.shape), a.dtype, a.device) if isinstance(a, torch.Tensor) else a for a in args)
        if key not in self.graphs:
            self.graphs[key] = self._capture(args)
        graph, static_args, static_out = self.graphs[key]
        for buffer, value in zip(static_args, args):
            if isinstance(buffer, torch.Tensor):
                buffer.copy_(value)
        graph.replay()
        return static_out.clone()

    def _capture(self, args):
        static_args = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(self.warmup):
                self.fn(*static_args)
        torch.cuda.current_stream().wait_stream(side)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph, pool=self.pool):
            static_out = self.fn(*static_args)
        return graph, static_args, static_out

"""Fast execution of the denoiser: reduced precision, channels-last, ``torch.compile`` and CUDA graphs.

The sampler (:mod:`repaint.sampler`) calls the network 2,410 times per image at the paper's schedule; all of the time
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
``"auto"``          ``"fp16"`` on CUDA, ``"fp32"`` elsewhere (CPU stays exactly as it was). fp16 rather than bf16:
                    both run at the same tensor-core rate on Hopper, and fp16's 11 significand bits keep one call
                    within 0.1-0.2 % of float32 where bf16 measures 0.8-1.5 % (tests/test_accel.py); the released
                    ImageNet models were themselves run with an fp16 torso by the reference.
==================  ================================================================================================

Weights are cast once, up front: autocast alone would cast all 552.8M parameters of the 256x256 model again on every
call (about 3.3 GB of memory traffic per call).

Nothing here synchronises the host with the device, so the sampling loop keeps queueing work ahead of the GPU.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

__all__ = ["Accel", "PRECISIONS", "TRAINING_PRECISIONS", "REFERENCE", "accelerate", "is_noop"]

# The one vocabulary of network precisions (sampling, training, the CLI). A checkpoint config's use_fp16 is the
# reference's own flag for what is called "reference-fp16" here.
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "reference-fp16")
TRAINING_PRECISIONS = ("fp32", "bf16", "fp16")   # training autocasts; it has no "auto" or reference mode
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "reference-fp16": torch.float16}
_CAST_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.Embedding)  # matmul-like layers; norms stay float32


@dataclass(frozen=True)
class Accel:
    """How to execute the network. ``Accel()`` is the safe default: fast on CUDA, untouched on CPU."""

    precision: str = "auto"             # one of PRECISIONS
    channels_last: bool | None = None   # NHWC activations and weights; None = on for CUDA with bf16/fp16
    compile: bool = False               # torch.compile the network (costs a warm-up of tens of seconds)
    cuda_graphs: bool = False           # capture one CUDA graph per input shape and replay it
    compile_mode: str | None = None     # torch.compile mode (None = inductor's default)

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    @classmethod
    def reference(cls) -> "Accel":
        """Execute exactly like the reference implementation: float32, eager, contiguous (NCHW)."""
        return cls(precision="fp32", channels_last=False, compile=False, cuda_graphs=False)

    def resolve(self, device: torch.device | str) -> "Accel":
        """The concrete plan on ``device``: ``precision`` never "auto", ``channels_last`` never None."""
        device = torch.device(device)
        precision = self.precision
        if precision == "auto":
            precision = "fp16" if device.type == "cuda" else "fp32"
        channels_last = self.channels_last
        if channels_last is None:
            channels_last = device.type == "cuda" and precision in ("bf16", "fp16")
        if self.cuda_graphs and device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, not {device}")
        return replace(self, precision=precision, channels_last=channels_last)

    def label(self) -> str:
        """Short name, e.g. "bf16+cl+compile+graphs"."""
        parts = [self.precision]
        parts += ["cl"] if self.channels_last else []
        parts += ["compile"] if self.compile else []
        parts += ["graphs"] if self.cuda_graphs else []
        return "+".join(parts)


REFERENCE = Accel.reference()


def is_noop(accel: Accel, device: torch.device | str) -> bool:
    """Whether ``accel`` leaves the network exactly as it is on ``device``."""
    plan = accel.resolve(device)
    return plan.precision == "fp32" and not (plan.channels_last or plan.compile or plan.cuda_graphs)


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

    Returns ``net`` itself when the plan changes nothing (``Accel()`` on CPU, :data:`REFERENCE` anywhere), so those
    outputs are bitwise those of ``net``. The returned callable's first argument ``x`` is float [B, C, H, W].
    CUDA graphs are used only without autograd (under ``torch.no_grad``); a call that needs gradients (classifier
    guidance) runs the converted network directly.
    """
    device = torch.device(device) if device is not None else _device_of(net)
    plan = accel.resolve(device)
    if is_noop(plan, device):
        return net
    if isinstance(net, nn.Module):
        net = _convert(net if inplace else _copy(net), plan)
    elif plan.precision == "reference-fp16":
        raise TypeError("precision 'reference-fp16' converts a network's weights: pass the nn.Module, not a callable")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # process-wide: fixed shapes, so let cuDNN pick the fastest kernels
    fn: Callable[..., torch.Tensor] = _Forward(net, plan, device)
    if plan.compile:
        fn = torch.compile(fn, mode=plan.compile_mode, dynamic=False)
    if plan.cuda_graphs:
        fn = _GraphedCall(fn)
    return fn


def _device_of(net) -> torch.device:
    param = next(net.parameters(), None) if isinstance(net, nn.Module) else None
    return torch.device("cpu") if param is None else param.device


def _copy(net: nn.Module) -> nn.Module:
    """A copy that needs no gradients for its weights (guidance differentiates w.r.t. the image only)."""
    clone = copy.deepcopy(net)
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
    if plan.channels_last:
        net.to(memory_format=torch.channels_last)
    return net.eval()


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

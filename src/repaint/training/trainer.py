"""The training loop: :class:`TrainConfig` and :func:`train` (AdamW, EMA, uniform timesteps, random flips, mixed
precision, periodic sample grids, self-describing checkpoints that resume bit for bit, DDP under ``torchrun``), and
:func:`export_ema` (a training checkpoint -> float16 ``.safetensors`` that ``repaint inpaint --model`` loads).

Randomness is reproducible by construction: every step seeds its own generator from ``(seed, rank, step)`` for the
timesteps and the noise (and the global RNG, for dropout), and the data order is a function of ``(seed, epoch)``
(:mod:`repaint.training.data`). Resuming from step ``s`` therefore replays exactly what an uninterrupted run does after
``s``, and no RNG state needs to be stored.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..accel import TRAINING_PRECISIONS, resolve_device
from ..distributed import Shard, shard
from .data import ImageDataset, batches_per_epoch, epoch_batches
from ..files import atomic_write
from ..diffusion import Diffusion, DiffusionConfig
from ..models.nn import AttentionBlock, ResBlock
from ..checkpoints import FACE64_DIFFUSION, FACE64_UNET, CheckpointError, config_record, save_checkpoint
from ..models.config import DiffusionSettings, UNetConfig, build_model
from .losses import hybrid_loss
from .samples import sample, save_grid

__all__ = ["TrainConfig", "TrainResult", "train", "load_training_checkpoint", "export_ema", "list_checkpoints"]

CHECKPOINT_FORMAT = "repaint-train-1"



# ----------------------------------------------------------------------------------------------
# Configuration


@dataclass
class TrainConfig:
    """Everything a training run needs; stored in every checkpoint. ``batch_size`` is per process."""

    data: str                                     # folder of images or a .tar of them
    out: str                                      # run folder: checkpoints, log.jsonl, samples/
    model: UNetConfig = FACE64_UNET               # architecture (image_size is the training resolution)
    diffusion: DiffusionSettings = FACE64_DIFFUSION  # forward process: T, schedule, learned variance
    batch_size: int = 8                           # images per step and process
    lr: float = 2e-4                              # AdamW learning rate
    lr_warmup: int = 0                            # steps of linear learning-rate warm-up
    weight_decay: float = 0.0                     # AdamW decoupled weight decay
    grad_clip: float = 1.0                        # max global gradient norm (0 = off)
    vlb_weight: float = 0.001                     # lambda of IDDPM eq. 16
    ema_rate: float = 0.9999                      # EMA decay of the exported weights
    ema_warmup: bool = True                       # decay min(rate, (1 + n) / (10 + n)) at update n
    steps: int = 100_000                          # total optimiser steps
    log_interval: int = 50                        # steps per line in log.jsonl
    sample_interval: int = 5000                   # steps per sample grid (0 = never)
    sample_count: int = 16                        # images per grid
    sample_steps: int = 50                        # respaced DDPM steps of a grid
    save_interval: int = 2000                     # steps per checkpoint (0 = only at the end)
    save_minutes: float = 0.0                     # also checkpoint after this many minutes (0 = off)
    keep_checkpoints: int = 2                     # newest checkpoints kept on disk
    max_minutes: float = 0.0                      # stop (with a checkpoint) after this long (0 = off)
    seed: int = 0                                 # seeds data order, flips, timesteps, noise
    precision: str = "fp32"                       # "fp32", "bf16" (autocast) or "fp16" (autocast + GradScaler, CUDA)
    channels_last: bool = False                   # NHWC memory format (faster convolutions on some CPUs/GPUs)
    flip: bool = True                             # random horizontal flips
    num_workers: int = 0                          # DataLoader worker processes
    device: str = "auto"                          # "auto" (cuda if available), "cpu", "cuda"
    resume: str = "auto"                          # "auto" (newest checkpoint in out), a checkpoint path, or "none"

    def __post_init__(self):
        if isinstance(self.model, Mapping):
            self.model = UNetConfig.from_dict(self.model)
        if isinstance(self.diffusion, Mapping):
            self.diffusion = DiffusionSettings.from_dict(self.diffusion)
        if self.precision not in TRAINING_PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(TRAINING_PRECISIONS)}, got {self.precision!r}")
        if self.model.learn_sigma != self.diffusion.learn_sigma:
            raise ValueError("model.learn_sigma and diffusion.learn_sigma disagree")
        if self.batch_size < 1 or self.steps < 0 or not 0 <= self.ema_rate < 1:
            raise ValueError("need batch_size >= 1, steps >= 0 and 0 <= ema_rate < 1")

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**data, "model": self.model.to_dict(), "diffusion": self.diffusion.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {unknown}")
        return cls(**data)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


@dataclass
class TrainResult:
    step: int                     # optimiser steps done
    checkpoint: Path | None       # the last checkpoint written (None on ranks > 0)
    loss: float                   # mean loss of the last logging interval (nan if none)
    stopped_early: bool           # stopped by max_minutes or SIGTERM before config.steps


# ----------------------------------------------------------------------------------------------
# Model set-up


def zero_init_residuals(model: nn.Module) -> nn.Module:
    """Zero the last conv of every ResBlock, every attention output projection and the output conv.

    As in ADM: each residual branch starts as the identity and the network's first prediction is 0.
    """
    for module in model.modules():
        if isinstance(module, ResBlock):
            _zero(module.out_layers[-1])
        elif isinstance(module, AttentionBlock):
            _zero(module.proj_out)
    _zero(model.out[-1])
    return model


def _zero(layer: nn.Module) -> None:
    for p in layer.parameters():
        nn.init.zeros_(p)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, rate: float) -> None:
    """ema <- rate * ema + (1 - rate) * model, parameter by parameter (buffers are copied)."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach().to(e.dtype), 1.0 - rate)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def ema_decay(config: TrainConfig, update: int) -> float:
    """The decay at update ``update`` (0-based): ``ema_rate``, capped by (1 + n) / (10 + n) during warm-up."""
    return min(config.ema_rate, (1 + update) / (10 + update)) if config.ema_warmup else config.ema_rate


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up over ``lr_warmup`` steps, then constant."""
    return config.lr * min(1.0, (step + 1) / config.lr_warmup) if config.lr_warmup else config.lr


def _step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, dtype=np.uint64)[0] >> 1)


# ----------------------------------------------------------------------------------------------
# Checkpoints


def _checkpoint_name(step: int) -> str:
    return f"ckpt_{step:08d}.pt"


def list_checkpoints(out: str | os.PathLike) -> list[Path]:
    """The run's checkpoints, oldest first."""
    return sorted(Path(out).glob("ckpt_*.pt"))


def _save_training_checkpoint(state: dict[str, Any], out: Path, keep: int) -> Path:
    path = out / _checkpoint_name(state["step"])
    atomic_write(path, lambda f: torch.save(state, f))
    for old in list_checkpoints(out)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


_CHECKPOINT_KEYS = ("step", "model", "ema", "optimizer", "train_config")


def load_training_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """A training checkpoint's dict (``weights_only`` load): model, ema, optimizer, scaler, step, configs.

    A missing, damaged or foreign file raises :class:`CheckpointError` (a ValueError) with one line naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"training checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # pickle, zip and torch raise many types for a damaged file
        reason = " ".join(str(error).split()).split(". ")[0][:160] or type(error).__name__
        raise CheckpointError(f"cannot read training checkpoint {path} (damaged or not a torch file): "
                              f"{type(error).__name__}: {reason}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a repaint training checkpoint ({CHECKPOINT_FORMAT})")
    missing = [key for key in _CHECKPOINT_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"training checkpoint {path} is incomplete: no {', '.join(missing)}")
    return state


def _load_resume_state(config: TrainConfig, device: torch.device, main: bool) -> tuple[Path, dict] | None:
    """The checkpoint to resume from and its state, or None for a fresh run.

    ``resume="auto"`` takes the newest readable checkpoint of the run folder: a damaged one (a crash while the disk
    filled, a bad copy) is renamed ``*.pt.corrupt`` with a warning and the one before it is used, so finished work is
    not lost. A checkpoint named explicitly must be readable.
    """
    if config.resume in ("", "none", None):
        return None
    if config.resume != "auto":
        return Path(config.resume), load_training_checkpoint(config.resume, map_location=device)
    found = list_checkpoints(config.out)
    for path in reversed(found):
        try:
            return path, load_training_checkpoint(path, map_location=device)
        except CheckpointError as error:
            if main:
                path.replace(path.with_name(path.name + ".corrupt"))
            warnings.warn(f"{error}; set aside as {path.name}.corrupt, resuming from the checkpoint before it",
                          stacklevel=2)
    if found:
        raise CheckpointError(f"no readable checkpoint in {config.out} (damaged ones were renamed *.corrupt); "
                              "pass --resume none to start the run again")
    return None


def _trim_log(out: Path, step: int) -> None:
    """Drop log.jsonl lines of steps after ``step`` (logged after the checkpoint a resume starts from), so the log
    of a resumed run has every step once."""
    log = out / "log.jsonl"
    if not log.is_file():
        return
    lines = log.read_text().splitlines(keepends=True)
    kept = [line for line in lines if _logged_step(line) <= step]
    if len(kept) != len(lines):
        atomic_write(log, "".join(kept))


def _logged_step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf  # a torn last line of a killed run


_MUST_MATCH = ("model", "diffusion", "batch_size", "seed", "data", "flip")


def _check_resumable(stored: Mapping[str, Any], config: TrainConfig, path: Path) -> None:
    now = config.to_dict()
    differ = [k for k in _MUST_MATCH if stored.get(k) != now[k]]
    if differ:
        raise ValueError(f"cannot resume {path}: {', '.join(differ)} differ from the checkpoint's run")


def export_ema(
    checkpoint: str | os.PathLike, out: str | os.PathLike, half: bool = True, use_ema: bool = True
) -> Path:
    """Write a training checkpoint's EMA (or raw) weights as ``.safetensors`` with config + diffusion metadata.

    The file loads like a released model: ``Inpainter.load(out)`` / ``repaint inpaint --model out``.
    """
    if Path(out).suffix != ".safetensors":
        raise CheckpointError(f"the exported file must end in .safetensors (that is its format), got {out}")
    state = load_training_checkpoint(checkpoint)
    train_config = TrainConfig.from_dict(state["train_config"])
    model = build_model(train_config.model)
    model.load_state_dict(state["ema" if use_ema else "model"])
    extra = {
        "repaint_training": json.dumps(
            {"step": state["step"], "weights": "ema" if use_ema else "raw", "ema_rate": train_config.ema_rate,
             "batch_size": train_config.batch_size, "loss": state.get("loss")}
        )
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(model, train_config.model, out, half=half, diffusion=train_config.diffusion, extra=extra)


# ----------------------------------------------------------------------------------------------
# The loop


def _batches(dataset: ImageDataset, config: TrainConfig, d: Shard, start_step: int) -> Iterator[torch.Tensor]:
    """An endless stream of [B, 3, H, W] batches, beginning with the one of step ``start_step``."""
    per_epoch = batches_per_epoch(len(dataset), config.batch_size, d.world)
    epoch, start = divmod(start_step, per_epoch)
    while True:
        dataset.set_epoch(epoch)
        sampler = list(epoch_batches(len(dataset), config.batch_size, epoch, config.seed, d.rank, d.world, start))
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=sampler, num_workers=config.num_workers, pin_memory=d.device.type == "cuda"
        )
        yield from loader
        epoch, start = epoch + 1, 0


class _Stopper:
    """Turns SIGTERM/SIGINT into a graceful stop (checkpoint, then return) in the main thread."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def _autocast(config: TrainConfig, device: torch.device) -> Callable[[], Any] | None:
    if config.precision == "fp32":
        return None
    if config.precision == "fp16" and device.type != "cuda":
        raise ValueError("precision 'fp16' needs CUDA (GradScaler); use 'bf16' on CPU")
    dtype = torch.bfloat16 if config.precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def _log(out: Path, record: dict[str, Any]) -> None:
    with open(out / "log.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()]
    print(" ".join(parts), flush=True)


def train(config: TrainConfig) -> TrainResult:
    """Train (or resume) a run; returns where it stopped. Only rank 0 writes files.

    Each step: draw a batch, t ~ U{0..T-1}, eps ~ N(0, I), minimise :func:`hybrid_loss` with AdamW, update the EMA.
    """
    device = resolve_device(config.device)
    d = shard(device, backend="nccl" if device.startswith("cuda") else "gloo")
    autocast = _autocast(config, d.device)  # fp16 without CUDA: an error before anything is created
    dataset = ImageDataset(config.data, config.model.image_size, flip=config.flip, seed=config.seed)
    batches_per_epoch(len(dataset), config.batch_size, d.world)  # too few images: an error before any file is written
    out = Path(config.out)
    diffusion = Diffusion(DiffusionConfig(config.diffusion.steps, config.diffusion.noise_schedule, "",
                                          config.diffusion.learn_sigma), d.device)
    torch.manual_seed(config.seed)
    model = zero_init_residuals(build_model(config.model)).to(d.device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if config.precision == "fp16" else None

    step, last_loss = 0, float("nan")
    if d.main and out.is_dir():  # a run killed while saving left its half-written checkpoint behind
        for stale in out.glob(".ckpt_*.tmp"):
            stale.unlink(missing_ok=True)
    resumed = _load_resume_state(config, d.device, d.main)
    if resumed is not None:
        resume, state = resumed
        _check_resumable(state["train_config"], config, resume)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        step, last_loss = state["step"], state.get("loss") or float("nan")

    # The first batch is read before the run folder exists: data that cannot be read at all leaves nothing behind.
    batches = _batches(dataset, config, d, step)
    first_batch = next(batches)
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        if resumed is not None:
            _trim_log(out, step)
            print(f"resumed {resume} at step {step}", flush=True)

    net = model
    if d.world > 1:
        ids = [d.device.index] if d.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    started = time.monotonic()
    last_save = started
    window: dict[str, list[float]] = {"loss": [], "mse": [], "vb": []}
    window_start = time.monotonic()
    checkpoint = None
    stopped_early = False

    def state_dict() -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "config": config_record(config.model, config.diffusion),
            "train_config": config.to_dict(),
            "loss": last_loss,
        }

    def save() -> Path | None:
        nonlocal last_save
        last_save = time.monotonic()
        if d.main:
            return _save_training_checkpoint(state_dict(), out, config.keep_checkpoints)
        return None

    if d.main:
        params = sum(p.numel() for p in model.parameters())
        print(f"training {params / 1e6:.2f}M parameters on {d.device} x{d.world}, {len(dataset)} images, "
              f"from step {step} to {config.steps}", flush=True)
        (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))

    with _Stopper() as stopper:
        while step < config.steps:
            x_start, first_batch = (first_batch if first_batch is not None else next(batches)), None
            x_start = x_start.to(d.device, non_blocking=True)
            if config.channels_last:
                x_start = x_start.contiguous(memory_format=torch.channels_last)
            seed = _step_seed(config.seed, d.rank, step)
            torch.manual_seed(seed)  # dropout
            generator = torch.Generator(d.device).manual_seed(seed)
            t = torch.randint(0, diffusion.num_timesteps, (x_start.shape[0],), generator=generator, device=d.device)
            noise = torch.randn(x_start.shape, generator=generator, device=d.device)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step)

            terms = hybrid_loss(net, diffusion, x_start, t, noise, config.vlb_weight, autocast)
            loss = terms["loss"].mean()
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if config.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            update_ema(ema, model, ema_decay(config, step))
            step += 1

            for key in window:
                window[key].append(float(terms[key].detach().mean()))
            if config.log_interval and step % config.log_interval == 0:
                means = d.mean([float(np.mean(v)) for v in window.values()])
                last_loss = means[0]
                if d.main:
                    seconds = (time.monotonic() - window_start) / len(window["loss"])
                    _log(out, {"step": step, "loss": means[0], "mse": means[1], "vb": means[2],
                               "lr": learning_rate(config, step - 1), "sec_per_step": seconds,
                               "minutes": (time.monotonic() - started) / 60})
                window = {k: [] for k in window}
                window_start = time.monotonic()
            if d.main and config.sample_interval and step % config.sample_interval == 0:
                _write_samples(ema, config, out, step, d.device)

            out_of_time = config.max_minutes and time.monotonic() - started > 60 * config.max_minutes
            stop = d.any(stopper.requested or bool(out_of_time))
            due = (config.save_interval and step % config.save_interval == 0) or (
                config.save_minutes and time.monotonic() - last_save > 60 * config.save_minutes
            )
            if stop or d.any(bool(due)) or step == config.steps:
                checkpoint = save()
            if stop:
                stopped_early = step < config.steps
                break
    if checkpoint is None:  # nothing left to train (resumed at the end, or steps=0)
        checkpoint = save()
    if dataset.unreadable and d.main:
        warnings.warn(f"{len(dataset.unreadable)} unreadable training image(s) were skipped (each replaced by the "
                      f"next readable one): {', '.join(sorted(dataset.unreadable)[:3])}"
                      f"{', ...' if len(dataset.unreadable) > 3 else ''}", stacklevel=2)
    d.close()
    return TrainResult(step, checkpoint, last_loss, stopped_early)


def _write_samples(ema: nn.Module, config: TrainConfig, out: Path, step: int, device: torch.device) -> Path:
    size, channels = config.model.image_size, config.model.in_channels
    images = sample(lambda x, t: ema(x, t), config.diffusion, (config.sample_count, channels, size, size),
                    config.sample_steps, seed=config.seed, device=device)
    return save_grid(images, out / "samples" / f"step_{step:08d}.png", ncol=int(math.ceil(config.sample_count ** 0.5)))

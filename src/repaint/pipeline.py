"""From checkpoint to inpainted images: model resolution, the UNet adapter and the sampler registry.

This is the layer the CLI, the evaluation and the benchmarks share. The sampler itself (:mod:`repaint.sampler`)
knows nothing about checkpoints; the networks (:mod:`repaint.models`) know nothing about diffusion. The adapter
:func:`unet_model_fn` is where checkpoint quirks live: class labels are bound here, and the network is handed the
original-process timesteps the sampler passes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch

from .accel import Accel, accelerate
from .diffusion import Diffusion, DiffusionConfig
from .presets import (
    PRESETS,
    CheckpointError,
    DiffusionSettings,
    UNetConfig,
    get_preset,
    load_checkpoint,
    read_checkpoint,
)
from .sampler import ModelFn, Step, classifier_guidance, make_generators, repaint
from .schedule import JumpSchedule
from .copaint import copaint
from .lanpaint import lanpaint
from .smc import smc

__all__ = [
    "SamplerSettings",
    "SAMPLERS",
    "register_sampler",
    "Inpainter",
    "unet_model_fn",
    "resolve_checkpoint",
    "default_model_path",
]

CHECKPOINT_DIRS_ENV = "REPAINT_CHECKPOINTS"


@dataclass(frozen=True)
class SamplerSettings:
    """How to sample. Defaults are the paper's: 250 respaced steps, jump length 10, 10 resamplings."""

    steps: int = 250                  # respaced steps T (timestep_respacing is str(steps) unless given)
    jump_length: int = 10             # j
    jump_n_sample: int = 10           # r
    n_sample: int = 1
    start_resampling: int = 100_000_000
    jump2_length: int = 1
    jump2_n_sample: int = 1
    jump3_length: int = 1
    jump3_n_sample: int = 1
    timestep_respacing: str = ""      # overrides steps, e.g. "10,10,10" or "ddim50"
    sampler: str = "repaint"          # name in SAMPLERS
    injection: str = "reference"      # "reference" or "paper" (see repaint.sampler)
    paste_known: bool = True          # copy the exact known pixels into the result at the end
    clip_denoised: bool = True
    eta: float = 1.0                  # stochasticity of DDIM-type samplers (1 = DDPM-like)
    options: dict = field(default_factory=dict)  # extra settings of other samplers

    def respacing(self) -> str:
        return self.timestep_respacing or str(self.steps)

    def diffusion_config(self, trained: DiffusionSettings) -> DiffusionConfig:
        return DiffusionConfig(
            steps=trained.steps, noise_schedule=trained.noise_schedule, timestep_respacing=self.respacing(),
            learn_sigma=trained.learn_sigma,
        )

    def jump_schedule(self, t_T: int) -> JumpSchedule:
        return JumpSchedule(
            t_T=t_T, jump_length=self.jump_length, jump_n_sample=self.jump_n_sample, n_sample=self.n_sample,
            start_resampling=self.start_resampling, jump2_length=self.jump2_length,
            jump2_n_sample=self.jump2_n_sample, jump3_length=self.jump3_length, jump3_n_sample=self.jump3_n_sample,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SamplerSettings":
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown sampler setting(s): {', '.join(unknown)}")
        return cls(**data)


SamplerFn = Callable[..., torch.Tensor]


def _repaint_sampler(model, diffusion, gt, mask, *, settings, generators, cond_fn=None, callback=None):
    """RePaint with the jump schedule (the paper's method)."""
    times = settings.jump_schedule(diffusion.num_timesteps).times()
    return repaint(
        model, diffusion, times, gt, mask, generators=generators, cond_fn=cond_fn, callback=callback,
        clip_denoised=settings.clip_denoised, injection=settings.injection, paste_known=settings.paste_known,
    )


SAMPLERS: dict[str, SamplerFn] = {
    "repaint": _repaint_sampler,
    "smc": smc,                       # repaint.smc: twisted SMC, K particles per image (T * K calls)
    "lanpaint": lanpaint,             # repaint.lanpaint: Langevin inner steps (T * (steps + 1) calls)
    "copaint": copaint,               # repaint.copaint: gradient descent on x_t, DDIM steps (T * (grad_steps + 1))
}


def register_sampler(name: str, fn: SamplerFn) -> SamplerFn:
    """Make ``fn(model, diffusion, gt, mask, *, settings, generators, cond_fn, callback)`` selectable by name."""
    SAMPLERS[name] = fn
    return fn


def get_sampler(name: str) -> SamplerFn:
    from . import fast_samplers  # noqa: F401  (registers the samplers beyond the paper)

    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; available: {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[name]


def unet_model_fn(unet: torch.nn.Module, y: torch.Tensor | None = None) -> ModelFn:
    """Adapt an ADM UNet to the sampler's ``model(x, model_t)`` contract, binding class labels ``y``."""

    def model(x: torch.Tensor, model_t: torch.Tensor) -> torch.Tensor:
        return unet(x, model_t, y)

    return model


def default_model_path() -> Path:
    """The bundled face model shipped inside the package."""
    return Path(__file__).resolve().parent / "weights" / "face64.safetensors"


def _search_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get(CHECKPOINT_DIRS_ENV, "").split(os.pathsep) if p]
    return dirs + [Path.cwd(), Path.cwd() / "data" / "pretrained", Path.home() / ".cache" / "repaint"]


def resolve_checkpoint(name_or_path: str) -> tuple[Path, str | None]:
    """(file, preset name or None) for "default", a preset name or a file path; one-line error if not found."""
    if name_or_path == "default":
        path = default_model_path()
        if not path.exists():
            raise CheckpointError(f"the bundled model {path} is missing from this installation")
        return path, None
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path, None
    if name_or_path in PRESETS:
        preset = get_preset(name_or_path)
        for folder in _search_dirs():
            if (folder / preset.filename).exists():
                return folder / preset.filename, preset.name
        raise CheckpointError(
            f"preset {preset.name!r} needs {preset.filename} (published at: {preset.published}); put it in the "
            f"current folder, ./data/pretrained or a folder named in ${CHECKPOINT_DIRS_ENV}"
        )
    raise CheckpointError(
        f"no checkpoint file {name_or_path!r} and no preset of that name (presets: {', '.join(PRESETS)}, default)"
    )


@dataclass
class Inpainter:
    """A loaded denoiser (and optional classifier) ready to inpaint batches of images."""

    unet: torch.nn.Module
    config: UNetConfig
    trained: DiffusionSettings = DiffusionSettings()
    classifier: torch.nn.Module | None = None
    device: torch.device = torch.device("cpu")
    accel: Accel = Accel()  # how the networks execute (repaint.accel); the default changes nothing on CPU
    _fast: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def load(
        cls,
        model: str = "default",
        classifier: str | None = None,
        device: str | torch.device = "cpu",
        preset: str | None = None,
        accel: Accel = Accel(),
    ) -> "Inpainter":
        """Load by preset name, file path or "default" (the bundled face model)."""
        device = torch.device(device)
        path, found_preset = resolve_checkpoint(model)
        preset = preset or found_preset
        contents = read_checkpoint(path)
        unet, config = load_checkpoint(path, preset=preset, kind="unet", contents=contents)
        trained = get_preset(preset).diffusion if preset else _stored_diffusion(contents[1])
        clf = None
        if classifier is not None:
            clf_path, clf_preset = resolve_checkpoint(classifier)
            clf, _ = load_checkpoint(clf_path, preset=clf_preset, kind="classifier", map_location="cpu")
            clf = clf.to(device)
        trained = trained or DiffusionSettings(learn_sigma=config.learn_sigma)
        return cls(unet.to(device), config, trained, clf, device, accel)

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def num_classes(self) -> int | None:
        return self.config.num_classes if self.config.class_cond else None

    def diffusion(self, settings: SamplerSettings) -> Diffusion:
        return Diffusion(settings.diffusion_config(self.trained), self.device)

    @torch.no_grad()
    def __call__(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        seeds: Sequence[int],
        settings: SamplerSettings = SamplerSettings(),
        labels: Sequence[int] | None = None,
        classifier_scale: float = 1.0,
        callback: Callable[[Step], None] | None = None,
    ) -> torch.Tensor:
        """Inpaint ``images`` [B, 3, H, W] in [-1, 1] where ``masks`` [B, 1, H, W] is 0; one seed per image."""
        images = images.to(self.device, torch.float32)
        masks = masks.to(self.device, torch.float32)
        if len(seeds) != images.shape[0]:
            raise ValueError(f"{len(seeds)} seeds for {images.shape[0]} images")
        y = self._labels(labels, images.shape[0])
        cond_fn = None
        if self.classifier is not None:
            if y is None:
                raise ValueError("classifier guidance needs a class label (--class-label)")
            cond_fn = classifier_guidance(self._accelerated("classifier"), y, classifier_scale)
        sampler = get_sampler(settings.sampler)
        unet = self._accelerated("unet")
        return sampler(
            unet_model_fn(unet, y if self.config.class_cond else None), self.diffusion(settings), images, masks,
            settings=settings, generators=make_generators(seeds, self.device), cond_fn=cond_fn, callback=callback,
        )

    def _accelerated(self, name: str) -> Callable[..., torch.Tensor]:
        """``self.unet`` / ``self.classifier`` executed as ``self.accel`` says, converted once and cached.

        The classifier gets the same precision but no compilation or graphs: guidance differentiates through it.
        """
        accel = self.accel if name == "unet" else replace(self.accel, compile=False, cuda_graphs=False)
        key = (name, accel, self.device)
        if key not in self._fast:
            self._fast[key] = accelerate(getattr(self, name), accel, self.device)
        return self._fast[key]

    def _labels(self, labels: Sequence[int] | None, batch: int) -> torch.Tensor | None:
        if labels is None:
            if self.config.class_cond:
                raise ValueError(
                    f"this model is class-conditional: choose a class label in 0..{self.num_classes - 1}"
                )
            return None
        labels = list(labels)
        if len(labels) == 1:
            labels = labels * batch
        classes = self.num_classes or (1000 if self.classifier is not None else None)
        if classes is None:
            raise ValueError("a class label was given but neither the model nor a classifier uses one")
        bad = [label for label in labels if not 0 <= int(label) < classes]
        if bad or len(labels) != batch:
            raise ValueError(f"class label(s) {bad or labels} out of range 0..{classes - 1} or not one per image")
        return torch.tensor(labels, dtype=torch.int64, device=self.device)


def _stored_diffusion(stored) -> DiffusionSettings | None:
    """Diffusion settings stored with our own checkpoints (absent in the official .pt files)."""
    if isinstance(stored, dict) and isinstance(stored.get("diffusion"), dict):
        return DiffusionSettings.from_dict(stored["diffusion"])
    return None


def with_overrides(settings: SamplerSettings, **changes) -> SamplerSettings:
    """``settings`` with the non-None ``changes`` applied."""
    return replace(settings, **{k: v for k, v in changes.items() if v is not None})

"""From checkpoint to inpainted images: model resolution, the UNet adapter and the :class:`Inpainter`.

This is the layer the CLI, the evaluation and the benchmarks share. The sampler itself (:mod:`repaint.samplers`)
knows nothing about checkpoints; the networks (:mod:`repaint.models`) know nothing about diffusion. The adapter
:func:`unet_model_fn` is where checkpoint quirks live: class labels are bound here, and the network is handed the
original-process timesteps the sampler passes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .accel import Accel, accelerate
from .diffusion import Diffusion
from .home import home_dir
from .presets import (
    PRESETS,
    CheckpointError,
    DiffusionSettings,
    UNetConfig,
    get_preset,
    load_checkpoint,
    read_checkpoint,
)
from .samplers.common import ModelFn, Step, classifier_guidance, make_generators
from .samplers import get_sampler
from .settings import PAPER, SamplerSettings

__all__ = [
    "BUNDLED_DEFAULT",
    "Inpainter",
    "recommended_settings",
    "unet_model_fn",
    "resolve_checkpoint",
    "default_model_path",
]

CHECKPOINT_DIRS_ENV = "REPAINT_CHECKPOINTS"


# The bundled face model's default: LanPaint at 46 steps (230 network calls, the fast RePaint preset's cost), chosen
# by the pre-registered confirmation run on 32 face64 test faces (docs/fidelity.md, "Confirmation").
BUNDLED_DEFAULT = SamplerSettings(steps=46, sampler="lanpaint")


def recommended_settings(model: str) -> SamplerSettings:
    """The sampler and schedule a model gets unless told otherwise: :data:`BUNDLED_DEFAULT` (230 network calls) for
    the small bundled face model, so the main command takes seconds on a CPU; the paper's RePaint (2,410 calls) for
    everything else."""
    return BUNDLED_DEFAULT if model == "default" else PAPER


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
    return dirs + [Path.cwd(), Path.cwd() / "data" / "pretrained", home_dir()]


def resolve_checkpoint(name_or_path: str) -> tuple[Path, str | None]:
    """(file or diffusers folder, preset name or None) for "default", a preset name or a path; one-line error if not
    found."""
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

    unet: torch.nn.Module             # model(x, t, y) -> eps (+ variance value): an ADM UNet or a DiffusersDenoiser
    config: UNetConfig                # or a repaint.diffusers_adapter.DiffusersModelConfig
    trained: DiffusionSettings = DiffusionSettings()
    classifier: torch.nn.Module | None = None
    device: torch.device = torch.device("cpu")
    accel: Accel = Accel()  # how the networks execute (repaint.accel); the default changes nothing on CPU
    recommended: SamplerSettings = PAPER  # the schedule a run gets unless told otherwise (repaint.settings)
    _fast: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def load(
        cls,
        model: str = "default",
        classifier: str | None = None,
        device: str | torch.device = "cpu",
        preset: str | None = None,
        accel: Accel = Accel(),
        unet_config: Mapping[str, Any] | None = None,
    ) -> "Inpainter":
        """Load by preset name, file path, diffusers folder or "default" (the bundled face model).

        ``unet_config`` sets UNetConfig fields a checkpoint file does not determine (the attention-head settings of
        an inferred architecture, see :func:`repaint.presets.load_checkpoint`); they win over a config file beside
        it. Diffusers folders carry their own config (giving ``unet_config`` for one is an error).
        """
        device = torch.device(device)
        path, found_preset = resolve_checkpoint(model)
        if path.is_dir():
            if unet_config:
                raise CheckpointError(f"{path} is a diffusers folder, whose config.json sets the architecture; "
                                      "UNet settings (--unet-config) apply to checkpoint files only")
            unet, config, trained = _load_diffusers(path, preset)
        else:
            preset = preset or found_preset
            contents = read_checkpoint(path)
            unet, config = load_checkpoint(path, preset=preset, kind="unet", contents=contents,
                                           **(unet_config or {}))
            trained = get_preset(preset).diffusion if preset else _stored_diffusion(contents[1])
            trained = trained or DiffusionSettings(learn_sigma=config.learn_sigma)
        clf = None
        if classifier is not None:
            clf_path, clf_preset = resolve_checkpoint(classifier)
            clf, _ = load_checkpoint(clf_path, preset=clf_preset, kind="classifier", map_location="cpu")
            clf = clf.to(device)
        return cls(unet.to(device), config, trained, clf, device, accel, recommended_settings(model))

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
        if not self.trained.clip_sample:  # the model's scheduler says its x0 estimate is not to be clamped
            settings = replace(settings, clip_denoised=False)
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


def _load_diffusers(path: Path, preset: str | None):
    """A diffusers folder (see :mod:`repaint.diffusers_adapter`): (denoiser, its config, its training diffusion)."""
    from .diffusers_adapter import load_diffusers

    if preset is not None:
        raise CheckpointError(f"{path} is a diffusers folder; it brings its own configuration (drop the preset)")
    return load_diffusers(path)


def _stored_diffusion(stored) -> DiffusionSettings | None:
    """Diffusion settings stored with our own checkpoints (absent in the official .pt files)."""
    if isinstance(stored, dict) and isinstance(stored.get("diffusion"), dict):
        return DiffusionSettings.from_dict(stored["diffusion"])
    return None

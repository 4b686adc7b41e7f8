"""A loaded model ready to inpaint: the :class:`Inpainter`, the UNet adapter and the schedule a model gets.

This is the layer the CLI, the evaluation and the benchmarks share. The sampler itself (:mod:`repaint.samplers`)
knows nothing about checkpoints; the networks (:mod:`repaint.models`) know nothing about diffusion. The adapter
:func:`unet_model_fn` is where checkpoint quirks live: class labels are bound here, and the network is handed the
original-process timesteps the sampler passes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .accel import Accel, accelerate, execution_summary, network_parameters
from .diffusion import Diffusion
from .checkpoints import Preset, load_classifier, load_denoiser
from .models.config import DiffusionSettings, UNetConfig
from .samplers import entry, get_sampler
from .samplers.common import ModelFn, Step, classifier_guidance, make_generators
from .settings import PAPER, SamplerSettings

__all__ = [
    "BUNDLED_DEFAULT",
    "Inpainter",
    "model_description",
    "recommended_settings",
    "unet_model_fn",
    "labels_from_seeds",
]

# The bundled face model's default: LanPaint at 46 steps (230 network calls, the fast RePaint schedule's cost), chosen
# by the pre-registered confirmation run on 32 face64 test faces (docs/fidelity.md, "Confirmation").
BUNDLED_DEFAULT = SamplerSettings(steps=46, sampler="lanpaint")
# Its default for a thin hole (repaint.masks.is_thin_hole) in a photo other than a 64x64 face: the biharmonic fill
# noised to step 9 of 46 and refined, the mean of 8 draws (9 network calls per batch; 8 draws of every window or
# tile), chosen on scikit-image photos that the report does not use and reported on others (docs/real-photos.md,
# "The mean of several draws").
BUNDLED_THIN = SamplerSettings(steps=46, sampler="refine", options={"start": 0.2, "init": "biharmonic"}, average=8)


def recommended_settings(model: str) -> SamplerSettings:
    """The sampler and schedule a model gets unless told otherwise: :data:`BUNDLED_DEFAULT` (230 network calls) for
    the small bundled face model, so the main command takes seconds on a CPU; the paper's RePaint (2,410 calls) for
    everything else."""
    return BUNDLED_DEFAULT if model == "default" else PAPER


def model_description(model: str, preset: str | Preset | None = None) -> str:
    """What a model was trained on, at what size: its preset's description (``repaint models``), or for a file that
    names no preset, that its training data is not recorded here."""
    from .checkpoints import PRESETS

    if isinstance(preset, Preset):
        return f"{preset.description} (architecture of preset {preset.name!r})"
    if preset is not None and preset in PRESETS:
        return f"{PRESETS[preset].description} (architecture of preset {preset!r})"
    if model in PRESETS:
        return PRESETS[model].description
    return "a checkpoint file: what it was trained on is not recorded here (`repaint models` lists the known ones)"


def labels_from_seeds(seeds: Sequence[int], num_classes: int) -> list[int]:
    """One class label per sample, drawn from the sample's seed: the label a class-conditional model gets when none is
    given (the reference draws a random class per image). The same rule in the CLI and the evaluation."""
    return [int(torch.randint(num_classes, (1,), generator=torch.Generator().manual_seed(int(seed))))
            for seed in seeds]


def unet_model_fn(unet: torch.nn.Module, y: torch.Tensor | None = None) -> ModelFn:
    """Adapt an ADM UNet to the sampler's ``model(x, model_t)`` contract, binding class labels ``y``."""

    def model(x: torch.Tensor, model_t: torch.Tensor) -> torch.Tensor:
        return unet(x, model_t, y)

    return model


@dataclass
class Inpainter:
    """A loaded denoiser (and optional classifier) ready to inpaint batches of images."""

    unet: torch.nn.Module             # model(x, t, y) -> eps (+ variance value): an ADM UNet or a DiffusersDenoiser
    config: UNetConfig                # or a repaint.checkpoints.diffusers_adapter.DiffusersModelConfig
    trained: DiffusionSettings = DiffusionSettings()
    classifier: torch.nn.Module | None = None
    device: torch.device = torch.device("cpu")
    accel: Accel = Accel()  # how the networks execute (repaint.accel); on CPU the default changes only large networks
    recommended: SamplerSettings = PAPER  # the schedule a run gets unless told otherwise (repaint.settings)
    description: str = ""             # what it was trained on, at what size (model_description)
    bundled: bool = False             # the bundled 64x64 face demo model (preset "default")
    thin: SamplerSettings | None = None   # the schedule for a thin hole in a photo it does not know (recommended_for)
    _fast: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def load(
        cls,
        model: str = "default",
        classifier: str | None = None,
        device: str | torch.device = "cpu",
        preset: str | Preset | None = None,
        accel: Accel = Accel(),
        unet_config: Mapping[str, Any] | None = None,
        classifier_preset: str | Preset | None = None,
    ) -> "Inpainter":
        """Load by model name, ``hf:ORG/NAME[@REVISION]``, file path, diffusers folder or "default" (the bundled face
        model), as
        :func:`repaint.checkpoints.load_denoiser` does, and the classifier for guidance if one is named."""
        device = torch.device(device)
        unet, config, trained = load_denoiser(model, preset=preset, unet_config=unet_config)
        clf = None
        if classifier is not None:
            clf = load_classifier(classifier, preset=classifier_preset).to(device)
        bundled = model == "default"
        return cls(unet.to(device), config, trained, clf, device, accel, recommended_settings(model),
                   model_description(model, preset), bundled, BUNDLED_THIN if bundled else None)

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def num_classes(self) -> int | None:
        return self.config.num_classes if self.config.class_cond else None

    def recommended_for(self, keep) -> SamplerSettings:
        """The schedule a run on this keep-mask (bool [H, W], True = keep) gets unless told otherwise: :attr:`thin` for
        a thin hole (:func:`repaint.masks.is_thin_hole`) in a photo other than the model's own size, where it was
        chosen; :attr:`recommended` for everything else."""
        from .masks import is_thin_hole

        if self.thin is not None and tuple(keep.shape) != (self.image_size, self.image_size) and is_thin_hole(keep):
            return self.thin
        return self.recommended

    def note_for(self, height: int, width: int) -> str | None:
        """One line for a photo this model does not know, or None: the bundled face model meeting anything but a
        64x64 input is told that it was trained on 64x64 faces only, and where other models are listed."""
        size = self.image_size
        if not self.bundled or (height, width) == (size, size):
            return None
        return (f"note: the bundled model was trained on {size}x{size} faces only (UTKFace); on this {width}x{height} "
                "photo expect face-like or blurred fills. `repaint models` lists models for other photos")

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
        init: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Inpaint ``images`` [B, 3, H, W] in [-1, 1] where ``masks`` [B, 1, H, W] is 0; one seed per image.

        ``init`` [B, 3, H, W]: the starting fill of a sampler that takes one (a table row with ``prefill``, e.g.
        ``refine``); refused by the others."""
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
        unet = self.network()
        extra = {}
        if init is not None:
            if entry(settings.sampler).prefill is None:
                raise ValueError(f"sampler {settings.sampler!r} takes no starting fill (init)")
            extra["init"] = init.to(self.device, torch.float32)
        return sampler(
            unet_model_fn(unet, y if self.config.class_cond else None), self.diffusion(settings), images, masks,
            settings=settings, generators=make_generators(seeds, self.device), cond_fn=cond_fn, callback=callback,
            **extra,
        )

    def plan(self) -> Accel:
        """How the denoiser executes here (:attr:`accel` resolved for this device and this network's size)."""
        return self.accel.resolve(self.device, network_parameters(self.unet))

    def execution(self) -> str:
        """One line on how the denoiser executes (:func:`repaint.accel.execution_summary`)."""
        return execution_summary(self.accel, self.device, network_parameters(self.unet))

    def network(self) -> Callable[..., torch.Tensor]:
        """The denoiser ``net(x, t, y)`` as a run executes it (:attr:`accel` applied, converted once and cached):
        what :mod:`repaint.cost` times."""
        return self._accelerated("unet")

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

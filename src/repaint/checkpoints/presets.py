"""The models the tool knows by name (presets): file name, provenance, and the configuration that rebuilds each.

A *preset* is a named model, never a schedule. The bundled 64x64 face model is the preset "default", a row like
the others whose file ships inside the package. ``repaint models`` prints this table; ``repaint download NAME``
fetches a row's file from its ``source`` (:mod:`repaint.checkpoints.download`).

Sizes and hashes are written here only where they were published or measured; ``None`` means "unknown until first
download", when the hash is recorded beside the file and checked on every later download.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..models.config import ClassifierConfig, Config, DiffusionSettings, UNetConfig, config_kind

__all__ = ["Preset", "PRESETS", "get_preset", "closest", "default_model_path", "FACE64_UNET", "FACE64_DIFFUSION"]


@dataclass(frozen=True)
class Preset:
    """A released checkpoint: file name, provenance and the configuration that rebuilds it."""

    name: str
    filename: str                                 # the file's name on disk ("" for a Hub model: the Hub's cache)
    description: str
    published: str                                # where the file is published, in words
    config: Config | None                         # None for a diffusers model: its folder carries the config
    diffusion: DiffusionSettings | None = None    # UNets only
    source: str = ""                              # what `repaint download` fetches: a URL, "hf:ORG/NAME", ""
    license: str = "unknown"
    sha256: str | None = None                     # published hash; None: recorded at first download
    size: int | None = None                       # bytes; None: unknown until first download
    resolution: int | None = None                 # for diffusers rows (ADM rows read it from the config)

    def __post_init__(self):
        if self.diffusion is not None and self.diffusion.learn_sigma != getattr(self.config, "learn_sigma", None):
            raise ValueError(f"preset {self.name!r}: diffusion.learn_sigma disagrees with the UNet config")

    @property
    def kind(self) -> str:
        """"unet" (a denoiser), "classifier" or "diffusers" (a Hub DDPM folder, also a denoiser)."""
        return "diffusers" if self.config is None else config_kind(self.config)

    @property
    def image_size(self) -> int:
        return self.resolution if self.config is None else self.config.image_size

    @property
    def class_cond(self) -> bool:
        return bool(getattr(self.config, "class_cond", False))

    @property
    def denoiser(self) -> bool:
        """Whether ``--model`` takes it (classifiers go to ``--classifier``)."""
        return self.kind != "classifier"


_REPAINT_DRIVE = ("the RePaint authors' Google Drive: their download.sh fetches it with gdown (file ids "
                  "1norNWWGYP3EZ_o05DmoW1ryKuKMmhlCX and 1QEl-btGbzQz6IwkXiFGd49uQNTUtTHsk, one per model; "
                  "download.sh does not say which is which)")
_OPENAI = "openai/guided-diffusion README (openaipublic.blob.core.windows.net/diffusion/jul-2021/)"
_OPENAI_URL = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/"
_REPAINT_LICENCE = "CC BY-NC-SA 4.0, academic research only (the RePaint repository's licence)"
_MIT = "MIT (the guided-diffusion repository's licence)"
_HUB = "the Hugging Face Hub (diffusers UNet2DModel + DDPMScheduler), from Ho et al.'s DDPM release"
_APACHE = "Apache-2.0 (model card)"
_ADM256 = dict(  # the 256x256 ADM architecture shared by every released 256px UNet
    image_size=256, model_channels=256, num_res_blocks=2, attention_resolutions=(32, 16, 8),
    channel_mult=(1, 1, 2, 2, 4, 4), learn_sigma=True, num_heads=4, num_head_channels=64,
    num_heads_upsample=-1, use_scale_shift_norm=True, resblock_updown=True,
    use_new_attention_order=False, dropout=0.0,
)
_LINEAR_1000 = DiffusionSettings(steps=1000, noise_schedule="linear", learn_sigma=True)

# The bundled demo face model (src/repaint/weights/face64.safetensors): small enough to train on two CPU cores.
FACE64_UNET = UNetConfig(
    image_size=64,
    model_channels=32,                  # narrowest width GroupNorm(32) allows
    num_res_blocks=1,
    attention_resolutions=(16, 8),
    channel_mult=(1, 2, 2, 2),          # 64 -> 32 -> 16 -> 8 pixels
    learn_sigma=True,                   # [eps, v] output, IDDPM eq. 15
    num_head_channels=32,
    use_scale_shift_norm=True,
    resblock_updown=False,
)
FACE64_DIFFUSION = DiffusionSettings(steps=1000, noise_schedule="cosine", learn_sigma=True)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("default", "face64.safetensors",
               "64x64 faces (UTKFace, non-commercial research only), bundled: trained with `repaint train` on 22,480 "
               "faces on two CPU cores, a demo", "shipped inside the package (src/repaint/weights/)",
               FACE64_UNET, FACE64_DIFFUSION, license="non-commercial research (UTKFace terms)",
               size=3_382_284),
        Preset("celeba256", "celeba256_250000.pt",
               "CelebA-HQ 256x256 unconditional face model (RePaint confs/test_c256_*.yml)",
               _REPAINT_DRIVE, UNetConfig(**_ADM256, use_fp16=False), _LINEAR_1000,
               license=_REPAINT_LICENCE),
        Preset("places256", "places256_300000.pt",
               "Places2 256x256 unconditional scene model (RePaint confs/test_p256_*.yml)",
               _REPAINT_DRIVE, UNetConfig(**_ADM256, use_fp16=False), _LINEAR_1000,
               license=_REPAINT_LICENCE),
        Preset("imagenet256", "256x256_diffusion.pt",
               "ImageNet 256x256 class-conditional model (RePaint confs/test_inet256_*.yml)",
               f"{_OPENAI}; RePaint's download.sh also fetches a copy",
               UNetConfig(**_ADM256, class_cond=True, use_fp16=True), _LINEAR_1000,
               source=_OPENAI_URL + "256x256_diffusion.pt", license=_MIT),
        Preset("imagenet256_classifier", "256x256_classifier.pt",
               "ImageNet 256x256 noisy-image classifier for guidance (RePaint confs/test_inet256_*.yml)",
               f"{_OPENAI}; RePaint's download.sh also fetches a copy",
               ClassifierConfig(image_size=256, width=128, depth=2, attention_resolutions=(32, 16, 8),
                                use_scale_shift_norm=True, resblock_updown=True, pool="attention",
                                use_fp16=False),
               source=_OPENAI_URL + "256x256_classifier.pt", license=_MIT),
        Preset("openai256_uncond", "256x256_diffusion_uncond.pt",
               "ImageNet 256x256 unconditional model of guided-diffusion",
               _OPENAI, UNetConfig(**_ADM256, use_fp16=True), _LINEAR_1000,
               source=_OPENAI_URL + "256x256_diffusion_uncond.pt", license=_MIT),
        *[Preset(f"lsun_{scene}", f"lsun_{scene}.pt",
                 f"LSUN {scene} 256x256 unconditional ADM model of guided-diffusion (trained with dropout 0.1)",
                 _OPENAI, UNetConfig(**_ADM256, use_fp16=True), _LINEAR_1000,
                 source=_OPENAI_URL + f"lsun_{scene}.pt", license=_MIT)
          for scene in ("bedroom", "cat", "horse")],
        *[Preset(f"ddpm-{scene}256", "", f"{what} 256x256 DDPM (Ho et al. 2020), EMA weights, diffusers format",
                 _HUB, None, source=f"hf:google/ddpm-ema-{hub}-256", license=_APACHE, resolution=256)
          for scene, hub, what in (("celebahq", "celebahq", "CelebA-HQ faces"), ("church", "church", "LSUN church"),
                                   ("bedroom", "bedroom", "LSUN bedroom"), ("cat", "cat", "LSUN cat"))],
    ]
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a ValueError lists the valid names otherwise, the closest first."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}{closest(name)}; valid presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def closest(name: str) -> str:
    """" (did you mean 'x'?)" for the model names nearest ``name``, else ""."""
    import difflib

    near = difflib.get_close_matches(name, list(PRESETS), n=3, cutoff=0.5)
    return f" (did you mean {' or '.join(repr(n) for n in near)}?)" if near else ""


def default_model_path() -> Path:
    """The file of the "default" row: the bundled face model shipped inside the package."""
    return Path(__file__).resolve().parents[1] / "weights" / "face64.safetensors"

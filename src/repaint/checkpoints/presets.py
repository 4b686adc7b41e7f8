"""The models the tool knows by name (presets): file name, provenance, and the configuration that rebuilds each.

A *preset* is a named model, never a schedule. The bundled 64x64 face model is the preset "default", a row like
the others whose file ships inside the package.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..models.config import ClassifierConfig, Config, DiffusionSettings, UNetConfig, config_kind

__all__ = ["Preset", "PRESETS", "get_preset", "FACE64_UNET", "FACE64_DIFFUSION"]


@dataclass(frozen=True)
class Preset:
    """A released checkpoint: file name, provenance and the configuration that rebuilds it."""

    name: str
    filename: str
    description: str
    published: str                                # where the file can be downloaded (not fetched here)
    config: Config
    diffusion: DiffusionSettings | None = None    # UNets only

    def __post_init__(self):
        if self.diffusion is not None and self.diffusion.learn_sigma != getattr(self.config, "learn_sigma", None):
            raise ValueError(f"preset {self.name!r}: diffusion.learn_sigma disagrees with the UNet config")

    @property
    def kind(self) -> str:
        return config_kind(self.config)


_REPAINT_DRIVE = "RePaint README: download.sh fetches it from the authors' Google Drive folder into data/pretrained/"
_OPENAI = "openai/guided-diffusion README (openaipublic.blob.core.windows.net/diffusion/jul-2021/)"
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
               FACE64_UNET, FACE64_DIFFUSION),
        Preset("celeba256", "celeba256_250000.pt",
               "CelebA-HQ 256x256 unconditional face model (RePaint confs/test_c256_*.yml)",
               _REPAINT_DRIVE, UNetConfig(**_ADM256, use_fp16=False), _LINEAR_1000),
        Preset("places256", "places256_300000.pt",
               "Places2 256x256 unconditional scene model (RePaint confs/test_p256_*.yml)",
               _REPAINT_DRIVE, UNetConfig(**_ADM256, use_fp16=False), _LINEAR_1000),
        Preset("imagenet256", "256x256_diffusion.pt",
               "ImageNet 256x256 class-conditional model (RePaint confs/test_inet256_*.yml)",
               f"{_OPENAI}; RePaint's download.sh also fetches a copy",
               UNetConfig(**_ADM256, class_cond=True, use_fp16=True), _LINEAR_1000),
        Preset("imagenet256_classifier", "256x256_classifier.pt",
               "ImageNet 256x256 noisy-image classifier for guidance (RePaint confs/test_inet256_*.yml)",
               f"{_OPENAI}; RePaint's download.sh also fetches a copy",
               ClassifierConfig(image_size=256, width=128, depth=2, attention_resolutions=(32, 16, 8),
                                use_scale_shift_norm=True, resblock_updown=True, pool="attention",
                                use_fp16=False)),
        Preset("openai256_uncond", "256x256_diffusion_uncond.pt",
               "ImageNet 256x256 unconditional model of guided-diffusion",
               _OPENAI, UNetConfig(**_ADM256, use_fp16=True), _LINEAR_1000),
    ]
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a ValueError lists the valid names otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return PRESETS[name]



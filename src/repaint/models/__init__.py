"""Network architectures (pure; no diffusion maths): the ADM UNet and the noisy-image classifier."""

from .classifier import EncoderUNetModel
from .nn import timestep_embedding
from .unet import UNetModel

__all__ = ["EncoderUNetModel", "UNetModel", "timestep_embedding"]

"""RePaint: inpainting with denoising diffusion probabilistic models (Lugmayr et al., CVPR 2022)."""

__version__ = "0.1.0"

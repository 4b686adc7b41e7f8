"""Training ADM UNets with the improved-DDPM hybrid objective, and exporting them for inpainting.

* :mod:`.losses`: the objective as pure functions (:func:`hybrid_loss` and its terms).
* :mod:`.trainer`: :class:`TrainConfig`, :func:`train`, checkpoints and resume, :func:`export_ema`.
* :mod:`.data`: image folders and tars as a seeded, epoch-ordered dataset.
* :mod:`.samples`: unconditional sample grids to watch a run.

Run it as ``repaint train DATA --out DIR`` (see ``repaint train --help``) or from Python::

    from repaint.training import TrainConfig, train, export_ema
    result = train(TrainConfig(data="faces.tar", out="runs/faces", steps=20_000))
    export_ema(result.checkpoint, "faces.safetensors")
"""

from ..checkpoints import FACE64_DIFFUSION, FACE64_UNET
from .data import ImageDataset, batches_per_epoch, epoch_batches, to_tensor
from .losses import approx_standard_normal_cdf, discretized_gaussian_log_likelihood, hybrid_loss, normal_kl, vlb_terms
from .samples import sample, save_grid
from .trainer import TrainConfig, TrainResult, export_ema, list_checkpoints, load_training_checkpoint, train

__all__ = [
    "FACE64_UNET", "FACE64_DIFFUSION", "TrainConfig", "TrainResult", "train", "load_training_checkpoint",
    "list_checkpoints", "export_ema", "normal_kl", "approx_standard_normal_cdf", "discretized_gaussian_log_likelihood",
    "vlb_terms", "hybrid_loss", "sample", "save_grid", "ImageDataset", "batches_per_epoch", "epoch_batches",
    "to_tensor",
]

"""Classical fills as table rows: scikit-image's biharmonic fill and OpenCV's Telea and Navier-Stokes fills.

They are baselines, not diffusion samplers: no model, no noise, no network call. Each row carries its ``fill``
(uint8 photo [H, W, 3] and keep-mask bool [H, W], True = keep, in; the filled uint8 photo out), and
:func:`repaint.api.inpaint` gives such a row the whole photo at its own resolution (fit ``"native"``: one window,
no scaling, every seed the same result). Their ``run`` keeps the sampler contract of
:mod:`repaint.samplers.common`, so a batch at model size (``Inpainter.__call__``) fills the same way.

* ``biharmonic``: ``skimage.restoration.inpaint_biharmonic`` (Damelin & Hoang 2018), per connected hole region.
* ``telea``: ``cv2.inpaint(..., cv2.INPAINT_TELEA)`` (Telea 2004, fast marching), radius 3 px.
* ``ns``: ``cv2.inpaint(..., cv2.INPAINT_NS)`` (Bertalmio, Bertozzi & Sapiro 2001, Navier-Stokes), radius 3 px.
"""

from __future__ import annotations

import numpy as np
import torch

from .common import Sampler, as_batch_mask, check_options

__all__ = ["BIHARMONIC", "TELEA", "NS", "RADIUS", "biharmonic_fill", "telea_fill", "ns_fill", "classical_run"]

RADIUS = 3   # OpenCV's neighbourhood radius in pixels (its documentation's example value)


def _check(image: np.ndarray, keep: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or keep.shape != image.shape[:2]:
        raise ValueError(f"a classical fill takes uint8 [H, W, 3] and a keep-mask [H, W], got {image.dtype} "
                         f"{list(image.shape)} and {list(keep.shape)}")
    if not keep.any():
        raise ValueError("the mask keeps no pixel: a classical fill spreads known pixels into the hole and has none "
                         "to spread")


def biharmonic_fill(image: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """scikit-image's biharmonic fill where ``keep`` is False, rounded to uint8; known pixels untouched."""
    from skimage.restoration import inpaint_biharmonic

    _check(image, keep)
    filled = inpaint_biharmonic(image, ~keep, split_into_regions=True, channel_axis=-1)   # float in [0, 1]
    out = image.copy()
    out[~keep] = np.clip(np.round(filled[~keep] * 255), 0, 255).astype(np.uint8)
    return out


def _opencv_fill(image: np.ndarray, keep: np.ndarray, method: str) -> np.ndarray:
    import cv2

    _check(image, keep)
    flag = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}[method]
    hole = np.ascontiguousarray((~keep).astype(np.uint8) * 255)
    filled = cv2.inpaint(np.ascontiguousarray(image), hole, RADIUS, flag)   # channels filled independently
    out = image.copy()
    out[~keep] = filled[~keep]
    return out


def telea_fill(image: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """OpenCV's fast-marching fill (``cv2.INPAINT_TELEA``) where ``keep`` is False."""
    return _opencv_fill(image, keep, "telea")


def ns_fill(image: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """OpenCV's Navier-Stokes fill (``cv2.INPAINT_NS``) where ``keep`` is False."""
    return _opencv_fill(image, keep, "ns")


def classical_run(fill):
    """The sampler-contract function of a fill: gt [B, C, H, W] in [-1, 1] and mask (1 = keep) in, each image
    filled on its own at 8 bits (a C other than 3 one channel at a time: the fills treat channels independently),
    [B, C, H, W] in [-1, 1] out, the known pixels those of ``gt``. Model, diffusion, generators and callback are
    unused; options are refused."""

    def run(model, diffusion, gt, mask, *, settings=None, generators=None, cond_fn=None, callback=None):
        if settings is not None:
            check_options(settings, {})
        keep = (as_batch_mask(mask, gt)[:, 0] > 0.5).cpu().numpy()
        pixels = ((gt.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        out = np.stack([_fill_channels(fill, p, k) for p, k in zip(pixels, keep)])
        filled = (torch.from_numpy(out).float() / 127.5 - 1).to(gt.device, gt.dtype)
        known = as_batch_mask(mask, gt).to(gt.dtype)
        return gt * known + filled * (1 - known)  # the known pixels exactly as given, not rounded to 8 bits

    return run


def _fill_channels(fill, pixels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """uint8 [C, H, W] filled where ``keep`` is False."""
    if pixels.shape[0] == 3:
        return fill(np.ascontiguousarray(pixels.transpose(1, 2, 0)), keep).transpose(2, 0, 1)
    return np.stack([fill(np.ascontiguousarray(np.repeat(c[..., None], 3, axis=2)), keep)[..., 0] for c in pixels])


def _no_calls(settings, num_timesteps: int) -> int:
    check_options(settings, {})
    return 0


def _row(fill, summary: str) -> Sampler:
    return Sampler(classical_run(fill), _no_calls, summary, fill=fill)


BIHARMONIC = _row(biharmonic_fill, "classical baseline: scikit-image biharmonic fill at full resolution, no model")
TELEA = _row(telea_fill, "classical baseline: OpenCV Telea (fast marching) fill at full resolution, no model")
NS = _row(ns_fill, "classical baseline: OpenCV Navier-Stokes fill at full resolution, no model")

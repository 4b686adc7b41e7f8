"""What the sampler tests share: a run on 4x4 Gaussian-mixture images with the left half known, and the check that
the known region is exact and that each image depends on its own seed only."""

import torch

from repaint.diffusion import Diffusion, DiffusionConfig
from repaint.evaluation.gmm import image_mixture
from repaint.samplers.common import make_generators
from repaint.samplers import get_sampler

MIX = image_mixture(4)


def run_on_mixture(settings, seeds, callback=None, model=None):
    """``settings.sampler`` over the exact denoiser (or ``model``), under no_grad as the pipeline calls samplers."""
    diffusion = Diffusion(DiffusionConfig(timestep_respacing=settings.respacing()))
    gt = MIX.sample(3, torch.Generator().manual_seed(0))[3 - len(seeds):]
    mask = torch.zeros(len(seeds), 1, 4, 4)
    mask[:, :, :, :2] = 1
    model = model or MIX.denoiser(diffusion)
    with torch.no_grad():
        out = get_sampler(settings.sampler)(model, diffusion, gt, mask, settings=settings,
                                            generators=make_generators(seeds), callback=callback)
    return out, gt, mask


def assert_known_exact_and_seeded_per_image(run):
    """``run(seeds)`` -> (out, gt, mask): known pixels exact, reproducible, an image independent of its batch."""
    out, gt, mask = run([1, 2, 3])
    assert torch.equal(out * mask, gt * mask)
    assert torch.equal(out, run([1, 2, 3])[0])
    torch.testing.assert_close(run([3])[0][0], out[2], rtol=1e-5, atol=1e-5)   # not dependent on the batch
    assert not torch.equal(run([4, 2, 3])[0][0], out[0])

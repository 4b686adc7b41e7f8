"""Our RePaint against diffusers' deprecated RePaintPipeline on the same model (docs/diffusers.md).

    python benchmarks/diffusers_repaint.py

1. Where the two algorithms coincide (no resampling, eta = 1, no clipping, "leading" timesteps, the pipeline's one
   noise draw per step replayed into our paper-mode sampler): the largest pixel difference over a few seeds on a small
   random UNet2DModel.
2. Where they do not: RePaintScheduler.undo_step re-noises from level t - n to t with betas[t .. t + n - 1] instead of
   betas[t - n + 1 .. t]. Measured on the schedule of the google/ddpm-*-256 models (linear 1e-4 .. 0.02, 1000
   training steps) at the pipeline's 250 steps (n = 4): the noise variance of one re-noising step, and the noise level
   the network meets after a jump of j = 10 steps, against the exact values.

Nothing is downloaded; the model is built here with a fixed seed.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import diffusers
from test_diffusers_adapter import _replayed_noise, images_and_mask, save_pipeline

from repaint.inpainter import Inpainter
from repaint.samplers.repaint import repaint
from repaint.settings import SamplerSettings


def agreement(seeds=range(8), steps: int = 25) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        folder, unet, _ = save_pipeline(Path(tmp), dict(num_train_timesteps=1000, clip_sample=False))
        pipe = diffusers.RePaintPipeline(unet=unet, scheduler=diffusers.RePaintScheduler(clip_sample=False))
        pipe.set_progress_bar_config(disable=True)
        inpainter = Inpainter.load(str(folder))
        diffusion = inpainter.diffusion(SamplerSettings(timestep_respacing=f"ddim{steps}"))
        worst = 0.0
        for seed in seeds:
            gt, mask = images_and_mask(seed)
            theirs = pipe(gt, mask, num_inference_steps=steps, eta=1.0, jump_length=1, jump_n_sample=1,
                          generator=torch.Generator().manual_seed(seed), output_type="np").images[0]
            with torch.no_grad():
                ours = repaint(lambda x, t: inpainter.unet(x, t), diffusion, list(range(steps - 1, -2, -1)), gt, mask,
                               noise_fn=_replayed_noise(seed, steps, gt.shape), injection="paper",
                               clip_denoised=False, paste_known=False)
            ours = (ours[0] / 2 + 0.5).clamp(0, 1).permute(1, 2, 0).numpy()
            worst = max(worst, float(abs(ours - theirs).max()))
        return worst


def undo_shift(levels=(0, 1, 2, 5, 25, 100, 240), n: int = 4, jump: int = 10) -> list[tuple]:
    abar = diffusers.RePaintScheduler(num_train_timesteps=1000).alphas_cumprod.double()

    def at(i: int) -> float:
        return 1.0 if i < 0 else float(abar[i])

    rows = []
    for k in levels:
        t = n * k  # the timestep whose level the re-noising step reaches
        exact_var = 1 - at(t) / at(t - n)
        shifted_var = 1 - at(t + n - 1) / at(t - 1)
        top = n * (k + jump - 1)  # after `jump` steps up from level k - 1 the network is called at this timestep
        exact_sigma = (1 - at(top)) ** 0.5
        shifted_signal2 = at(t - n) * at(top + n - 1) / at(t - 1)
        rows.append((k, t, exact_var, shifted_var, top, exact_sigma, (1 - shifted_signal2) ** 0.5))
    return rows


def main() -> None:
    print(f"1. no resampling, eta=1, no clipping, 25 steps, 8 seeds: max |ours - RePaintPipeline| = {agreement():.2e}"
          " (pixels in [0, 1])")
    print("2. undo_step shift, linear 1e-4..0.02, 1000 -> 250 steps (n = 4), jump j = 10:")
    print("   level k  timestep  step var exact  step var diffusers  ratio | after jump: timestep  sigma exact  "
          "sigma diffusers")
    for k, t, ev, sv, top, es, ss in undo_shift():
        print(f"   {k:7d}  {t:8d}  {ev:14.3e}  {sv:18.3e}  {sv / ev:5.2f} | {top:20d}  {es:11.4f}  {ss:15.4f}")


if __name__ == "__main__":
    main()

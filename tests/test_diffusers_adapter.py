"""diffusers UNet2DModel folders as RePaint denoisers (repaint.checkpoints.diffusers_adapter).

Every model here is a small random UNet2DModel built and saved by the test into tmp_path; nothing is downloaded.
The references are diffusers' own DDPMScheduler (what a model's output implies for x0 and x_{t-1}) and its deprecated
RePaintPipeline/RePaintScheduler (docs/diffusers.md explains where the two RePaints agree and where they do not).
"""

from __future__ import annotations

import json
import sys

import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="the diffusers extra is not installed (pip install -e '.[test]')")

from repaint.checkpoints.diffusers_adapter import (
    MISSING_PACKAGE, is_diffusers_folder, load_diffusers, scheduler_settings
)
from repaint.diffusion import Diffusion
from repaint.inpainter import Inpainter
from repaint.samplers import SAMPLERS
from repaint.settings import SamplerSettings
from repaint.checkpoints import CheckpointError
from repaint.samplers.repaint import repaint
from repaint.schedule import JumpSchedule

SIZE = 16


def tiny_unet(out_channels: int = 3, seed: int = 0, num_class_embeds: int | None = None):
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(
        sample_size=SIZE, in_channels=3, out_channels=out_channels, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=8, norm_num_groups=8, num_class_embeds=num_class_embeds,
    )


def save_pipeline(tmp_path, scheduler_kwargs: dict, name: str = "model", **unet_kwargs):
    """A pipeline-shaped folder (unet/ + scheduler/) as save_pretrained writes it; returns (folder, unet, scheduler)."""
    learned = scheduler_kwargs.get("variance_type") == "learned_range"
    unet = tiny_unet(out_channels=6 if learned else 3, **unet_kwargs)
    scheduler = diffusers.DDPMScheduler(**scheduler_kwargs)
    folder = tmp_path / name
    unet.save_pretrained(folder / "unet")
    scheduler.save_pretrained(folder / "scheduler")
    return folder, unet.eval(), scheduler


def images_and_mask(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand((1, 3, SIZE, SIZE), generator=g) * 2 - 1
    mask = torch.ones(1, 1, SIZE, SIZE)
    mask[..., 4:12, 3:13] = 0
    return gt, mask


# ----------------------------------------------------------------------------------------------
# The scheduler's settings


@pytest.mark.parametrize("schedule,steps", [("linear", 1000), ("linear", 100), ("scaled_linear", 200),
                                            ("squaredcos_cap_v2", 300)])
def test_beta_schedules_give_diffusers_alphas_cumprod(schedule, steps):
    kwargs = dict(num_train_timesteps=steps, beta_schedule=schedule, beta_start=0.00085, beta_end=0.012)
    trained, _ = scheduler_settings(diffusers.DDPMScheduler(**kwargs).config)
    ours = torch.from_numpy(Diffusion(trained.diffusion_config()).tables64["alphas_cumprod"])
    theirs = diffusers.DDPMScheduler(**kwargs).alphas_cumprod.double()
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=2e-6, atol=1e-7)  # theirs is computed in float32


def test_unsupported_settings_are_one_error_naming_each():
    config = dict(diffusers.DDPMScheduler(beta_schedule="sigmoid", variance_type="learned", thresholding=True).config)
    config["mystery_knob"] = 3
    with pytest.raises(CheckpointError) as error:
        scheduler_settings(config)
    message = str(error.value)
    assert "\n" not in message
    for name in ("beta_schedule='sigmoid'", "variance_type='learned'", "thresholding", "mystery_knob"):
        assert name in message


def test_inference_only_settings_are_read_past_and_defaults_filled():
    trained, prediction = scheduler_settings({"_class_name": "DDIMScheduler", "timestep_spacing": "trailing",
                                              "set_alpha_to_one": False, "steps_offset": 1, "clip_sample": False})
    assert prediction == "epsilon"
    assert (trained.steps, trained.noise_schedule, trained.learn_sigma, trained.fixed_variance, trained.clip_sample) \
        == (1000, "linear", False, "small", False)


def test_early_diffusers_scheduler_configs():
    """The 2022 configs carry tensor_format and predict_epsilon instead of prediction_type."""
    trained, prediction = scheduler_settings({"_class_name": "DDPMScheduler", "tensor_format": "pt",
                                              "predict_epsilon": False, "variance_type": "fixed_large"})
    assert (prediction, trained.fixed_variance) == ("sample", "large")


# ----------------------------------------------------------------------------------------------
# The adapter's eps against what DDPMScheduler.step does with the raw output


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_small_log", "fixed_large", "learned_range"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_adapter_eps_gives_the_scheduler_step(tmp_path, prediction_type, variance_type):
    """x0 and x_{t-1} from our eps (+ variance) equal DDPMScheduler.step's on the same output and the same noise."""
    kwargs = dict(num_train_timesteps=200, variance_type=variance_type, prediction_type=prediction_type,
                  clip_sample=True)
    folder, unet, scheduler = save_pipeline(tmp_path, kwargs)
    inpainter = Inpainter.load(str(folder))
    scheduler.set_timesteps(20)  # "leading" spacing: 0, 10, ..., 190, which our "ddim20" respacing keeps too
    diffusion = inpainter.diffusion(SamplerSettings(timestep_respacing="ddim20"))
    assert diffusion.timestep_map.tolist() == sorted(scheduler.timesteps.tolist())
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    for t in (19, 10, 3, 1):
        model_t = diffusion.model_timesteps(torch.full((2,), t))
        with torch.no_grad():
            raw = unet(x, model_t).sample
            ours = diffusion.p_mean_variance(inpainter.unet(x, model_t), x, torch.full((2,), t), clip_denoised=True)
        theirs = scheduler.step(raw, int(model_t[0]), x, generator=torch.Generator().manual_seed(t))
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(t))
        x_prev = ours["mean"] + torch.exp(0.5 * ours["log_variance"]) * noise
        torch.testing.assert_close(ours["pred_xstart"], theirs.pred_original_sample, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(x_prev, theirs.prev_sample, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# Loading and full runs


def test_every_sampler_inpaints_with_a_diffusers_model(tmp_path):
    folder, _, _ = save_pipeline(tmp_path, dict(num_train_timesteps=100, variance_type="fixed_small"))
    inpainter = Inpainter.load(str(folder))
    gt, mask = images_and_mask()
    assert len(SAMPLERS) >= 3
    for name in SAMPLERS:
        settings = SamplerSettings(steps=10, jump_length=2, jump_n_sample=2, sampler=name)
        first = inpainter(gt, mask, [3], settings)
        again = inpainter(gt, mask, [3], settings)
        other = inpainter(gt, mask, [4], settings)
        assert first.shape == gt.shape and torch.isfinite(first).all(), name
        assert torch.equal(first, again), name                      # seeded
        if SAMPLERS[name].fill is None:                             # (the classical fills draw nothing)
            assert not torch.equal(first, other), name              # and the seed matters
        assert torch.equal(first * mask, gt * mask), name           # known pixels kept
        assert not torch.allclose(first * (1 - mask), gt * (1 - mask)), name


def test_class_conditional_unet_gets_the_labels(tmp_path):
    folder, _, _ = save_pipeline(tmp_path, dict(num_train_timesteps=100), num_class_embeds=5)
    inpainter = Inpainter.load(str(folder))
    assert inpainter.num_classes == 5
    gt, mask = images_and_mask()
    settings = SamplerSettings(steps=5, jump_n_sample=1)
    with pytest.raises(ValueError, match="class-conditional"):
        inpainter(gt, mask, [0], settings)
    assert not torch.equal(inpainter(gt, mask, [0], settings, labels=[1]),
                           inpainter(gt, mask, [0], settings, labels=[2]))


def test_bare_unet_folder_with_scheduler_config_beside_it(tmp_path):
    unet = tiny_unet()
    unet.save_pretrained(tmp_path / "bare")
    assert is_diffusers_folder(tmp_path / "bare")
    with pytest.raises(CheckpointError, match="no scheduler config"):
        Inpainter.load(str(tmp_path / "bare"))
    diffusers.DDPMScheduler(num_train_timesteps=50, prediction_type="v_prediction").save_pretrained(tmp_path / "bare")
    _, config, trained = load_diffusers(tmp_path / "bare")
    assert (config.image_size, config.prediction_type, trained.steps) == (SIZE, "v_prediction", 50)


def test_folder_errors_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty",):
        with pytest.raises(CheckpointError) as error:
            Inpainter.load(str(folder))
        assert "\n" not in str(error.value)
    folder, _, _ = save_pipeline(tmp_path, dict(num_train_timesteps=100))
    config = json.loads((folder / "unet" / "config.json").read_text())
    (folder / "unet" / "config.json").write_text(json.dumps({**config, "out_channels": 6}))
    with pytest.raises(CheckpointError, match="out_channels"):
        Inpainter.load(str(folder))


def test_evaluation_identity_of_a_diffusers_model(tmp_path):
    from repaint.evaluation import model_with_identity as load_model

    folder, _, _ = save_pipeline(tmp_path, dict(num_train_timesteps=100, prediction_type="v_prediction"))
    _, identity = load_model(str(folder), "cpu")
    assert json.loads(json.dumps(identity))["config"]["prediction_type"] == "v_prediction"
    other_folder, _, _ = save_pipeline(tmp_path, dict(num_train_timesteps=100), name="other", seed=1)
    assert load_model(str(other_folder), "cpu")[1]["weights_sha256_1mb"] != identity["weights_sha256_1mb"]


def test_missing_package_is_one_line(tmp_path, monkeypatch):
    folder, _, _ = save_pipeline(tmp_path, dict(num_train_timesteps=100))
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers now raises ImportError
    with pytest.raises(CheckpointError) as error:
        Inpainter.load(str(folder))
    assert str(error.value) == MISSING_PACKAGE


def test_clip_sample_false_turns_clipping_off(tmp_path):
    gt, mask = images_and_mask()
    settings = SamplerSettings(steps=10, jump_n_sample=1)
    unclipped = SamplerSettings(steps=10, jump_n_sample=1, clip_denoised=False)
    no_clip, _, _ = save_pipeline(tmp_path, dict(num_train_timesteps=100, clip_sample=False), name="a")
    clip, _, _ = save_pipeline(tmp_path, dict(num_train_timesteps=100, clip_sample=True), name="b")
    a, b = Inpainter.load(str(no_clip)), Inpainter.load(str(clip))
    assert torch.equal(a(gt, mask, [0], settings), a(gt, mask, [0], unclipped))
    assert not torch.equal(b(gt, mask, [0], settings), b(gt, mask, [0], unclipped))


# ----------------------------------------------------------------------------------------------
# diffusers' own RePaint (deprecated pipeline) on the same model


def _pipeline(tmp_path, clip: bool):
    folder, unet, _ = save_pipeline(tmp_path, dict(num_train_timesteps=200, clip_sample=clip))
    scheduler = diffusers.RePaintScheduler(num_train_timesteps=200, clip_sample=clip)
    pipe = diffusers.RePaintPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return folder, pipe


def _replayed_noise(seed: int, steps: int, shape):
    """Our sampler's draws in the order RePaintPipeline makes them: x_T, then ONE draw per step that it uses for
    both the unknown part's noise and the known part's (diffusers #1581); our "paper" injection draws twice per step
    (none for the known part at t = 0), so each step's draw is handed out twice."""
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(shape, generator=g)
    per_step = [torch.randn(shape, generator=g) for _ in range(steps)]
    queue = [x_T] + [n for draw in per_step[:-1] for n in (draw, draw)] + [per_step[-1]]
    return lambda like: queue.pop(0)


def test_jump_schedule_is_diffusers_set_timesteps():
    scheduler = diffusers.RePaintScheduler(num_train_timesteps=1000)
    for steps, j, r in [(250, 10, 10), (50, 5, 3), (20, 3, 2)]:
        scheduler.set_timesteps(steps, jump_length=j, jump_n_sample=r)
        ours = JumpSchedule(t_T=steps, jump_length=j, jump_n_sample=r).times()
        assert (scheduler.timesteps // (1000 // steps)).tolist() == ours[:-1]  # ours ends with the final -1


def test_equals_repaint_pipeline_without_resampling(tmp_path):
    """Where the algorithms coincide (no jumps, eta = 1, no clipping, leading spacing, the pipeline's shared noise
    replayed), our paper-mode RePaint gives diffusers' RePaintPipeline result: the known part is noised to the
    level of t - 1 in both (diffusers PR #1582)."""
    folder, pipe = _pipeline(tmp_path, clip=False)
    inpainter = Inpainter.load(str(folder))
    gt, mask = images_and_mask()
    steps = 20
    theirs = pipe(gt, mask, num_inference_steps=steps, eta=1.0, jump_length=1, jump_n_sample=1,
                  generator=torch.Generator().manual_seed(7), output_type="np").images[0]
    diffusion = inpainter.diffusion(SamplerSettings(timestep_respacing=f"ddim{steps}"))
    with torch.no_grad():
        ours = repaint(lambda x, t: inpainter.unet(x, t), diffusion, list(range(steps - 1, -2, -1)), gt, mask,
                       noise_fn=_replayed_noise(7, steps, gt.shape), injection="paper", clip_denoised=False,
                       paste_known=False)
    ours = (ours[0] / 2 + 0.5).clamp(0, 1).permute(1, 2, 0).numpy()
    assert abs(ours - theirs).max() < 1e-4


def test_repaint_pipeline_undo_step_is_shifted_by_n_minus_1_training_steps():
    """RePaintScheduler.undo_step(x, t) moves x from level t - n to t with betas[t .. t + n - 1] instead of
    betas[t - n + 1 .. t] (n = train steps // inference steps): the re-noised signal is sqrt(abar_{t+n-1} /
    abar_{t-1}) of x instead of sqrt(abar_t / abar_{t-n}). Measured on its own linear schedule, 1000 -> 250 steps."""
    scheduler = diffusers.RePaintScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(250)
    abar = scheduler.alphas_cumprod.double()
    for t in (4, 40, 400, 992):
        ones, zeros = (scheduler.undo_step(torch.full((1, 8), float(v)), t, generator=torch.Generator().manual_seed(t))
                       for v in (1, 0))
        signal = (ones - zeros).double()  # the same noise in both: what multiplies x
        shifted, exact = (abar[t + 3] / abar[t - 1]).sqrt(), (abar[t] / abar[t - 4]).sqrt()
        torch.testing.assert_close(signal, shifted.expand_as(signal), rtol=0, atol=1e-6)  # float32 products
        assert abs(shifted - exact) > 1e-5


# ----------------------------------------------------------------------------------------------
# Export: our checkpoints as diffusers folders


def _our_checkpoint(tmp_path, name: str = "ours", seed: int = 0, diffusion=None, **changes):
    from repaint.models.config import DiffusionSettings, UNetConfig, build_model
    from repaint.checkpoints import save_checkpoint

    config = UNetConfig(image_size=SIZE, model_channels=32, num_res_blocks=1, attention_resolutions=(8,),
                        channel_mult=(1, 2), num_head_channels=16, learn_sigma=True).replace(**changes)
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():  # the zero-initialised output layers would make every comparison trivially 0 == 0
        for p in model.parameters():
            p.normal_(0, 0.1)
    diffusion = diffusion or DiffusionSettings(steps=100, noise_schedule="linear", learn_sigma=config.learn_sigma)
    return save_checkpoint(model, config, tmp_path / f"{name}.safetensors", diffusion=diffusion), model.eval()


def _same_network(ours, folder, size, labels=None):
    theirs = diffusers.UNet2DModel.from_pretrained(str(folder / "unet"), low_cpu_mem_usage=False).eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([3, 97])
    with torch.no_grad():
        a, b = ours(x, t, labels), theirs(x, t, class_labels=labels).sample
    assert a.abs().max() > 0.1
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_export_bundled_face_model_loads_in_unet2dmodel_and_inpaints_the_same(tmp_path):
    from repaint.checkpoints.diffusers_export import export_diffusers

    folder = export_diffusers("default", tmp_path / "face64")
    ours = Inpainter.load("default")
    _same_network(ours.unet, folder, 64)
    again = Inpainter.load(str(folder))
    assert again.trained.diffusion_config() == ours.trained.diffusion_config()
    g = torch.Generator().manual_seed(0)
    gt = torch.rand((1, 3, 64, 64), generator=g) * 2 - 1
    mask = torch.ones(1, 1, 64, 64)
    mask[..., 16:48, 20:44] = 0
    settings = SamplerSettings(steps=8, jump_length=2, jump_n_sample=2)
    torch.testing.assert_close(again(gt, mask, [5], settings), ours(gt, mask, [5], settings), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("changes", [
    dict(resblock_updown=True),
    dict(class_cond=True, num_classes=7),
    dict(use_new_attention_order=True, use_scale_shift_norm=False, learn_sigma=False),
    dict(num_head_channels=-1, num_heads=2, attention_resolutions=(16,), channel_mult=(1, 1)),
])
def test_export_architecture_variants(tmp_path, changes):
    from repaint.checkpoints.diffusers_export import export_diffusers

    path, model = _our_checkpoint(tmp_path, **changes)
    folder = export_diffusers(path, tmp_path / "exported")
    labels = torch.tensor([1, 6]) if changes.get("class_cond") else None
    _same_network(model, folder, SIZE, labels)
    trained, _ = scheduler_settings(json.loads((folder / "scheduler" / "scheduler_config.json").read_text()))
    stored = Inpainter.load(str(path)).trained
    assert trained.learn_sigma == stored.learn_sigma == (model.out[2].out_channels == 6)
    ours, back = (Diffusion(d.diffusion_config()).tables64["alphas_cumprod"] for d in (stored, trained))
    assert abs(ours - back).max() < 1e-12


def test_export_refuses_what_unet2dmodel_cannot_express(tmp_path):
    from repaint.checkpoints.diffusers_export import export_diffusers

    for name, changes, message in [
        ("wide", dict(channel_mult=(2, 2)), "channel_mult\\[0\\] must be 1"),
        ("heads", dict(num_head_channels=-1, num_heads=4, attention_resolutions=(16, 8)), "one attention_head_dim"),
    ]:
        path, _ = _our_checkpoint(tmp_path, name=name, **changes)
        with pytest.raises(CheckpointError, match=message):
            export_diffusers(path, tmp_path / f"out_{name}")
        assert not (tmp_path / f"out_{name}").exists()
    (tmp_path / "taken").mkdir()
    with pytest.raises(CheckpointError, match="exists"):
        export_diffusers("default", tmp_path / "taken")


def test_repaint_export_format_diffusers_writes_a_folder_diffusers_loads(tmp_path):
    from click.testing import CliRunner

    from repaint.cli import cli

    out = tmp_path / "face64-diffusers"
    result = CliRunner().invoke(cli, ["export", "default", str(out), "--format", "diffusers"])
    assert result.exit_code == 0, result.output
    unet = diffusers.UNet2DModel.from_pretrained(out / "unet")
    ours = Inpainter.load("default")
    x, t = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)), torch.tensor([500])
    with torch.no_grad():
        assert torch.allclose(unet(x, t).sample, ours.unet(x, t), atol=1e-4)
    again = CliRunner().invoke(cli, ["export", "default", str(out), "--format", "diffusers"])
    assert again.exit_code == 2 and again.stderr.strip().startswith("repaint: error:") and "exists" in again.stderr

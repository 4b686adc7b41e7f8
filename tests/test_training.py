import json
import math
import os
import re
import socket

import numpy as np
import pytest
import torch
from PIL import Image

from repaint.diffusion import Diffusion, DiffusionConfig
from repaint.models.config import DiffusionSettings, UNetConfig, build_model
from repaint.checkpoints import load_checkpoint, read_checkpoint
from repaint.training.trainer import ema_decay, zero_init_residuals
from repaint.training import (
    TrainConfig,
    discretized_gaussian_log_likelihood,
    export_ema,
    hybrid_loss,
    list_checkpoints,
    load_training_checkpoint,
    normal_kl,
    sample,
    train,
    vlb_terms,
)

TINY = UNetConfig(image_size=16, model_channels=32, num_res_blocks=1, attention_resolutions=(8,),
                  channel_mult=(1, 1), learn_sigma=True, num_head_channels=32)
TINY_DIFFUSION = DiffusionSettings(steps=100, noise_schedule="cosine", learn_sigma=True)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    return folder


def _config(folder, out, **changes):
    base = dict(data=str(folder), out=str(out), model=TINY, diffusion=TINY_DIFFUSION, batch_size=4, steps=4,
                lr=1e-3, ema_rate=0.9, log_interval=1, sample_interval=0, save_interval=0, device="cpu")
    return TrainConfig(**{**base, **changes})


# ---------------------------------------------------------------------------------------------- losses


def test_normal_kl_closed_form():
    zero = torch.zeros(3)
    assert torch.equal(normal_kl(zero, zero, zero, zero), zero)
    torch.testing.assert_close(normal_kl(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(1.0), torch.tensor(0.0)),
                               torch.tensor(0.5))
    # KL(N(0, 1) || N(0, 4)) = log 2 + 1/8 - 1/2
    value = normal_kl(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(0.0), torch.tensor(math.log(4.0)))
    torch.testing.assert_close(value, torch.tensor(math.log(2) + 1 / 8 - 1 / 2))


@pytest.mark.parametrize("mean,log_scale", [(0.0, -3.0), (0.3, -5.0), (-0.98, -2.0), (1.2, 0.0)])
def test_discretized_likelihood_sums_to_one_over_the_256_bins(mean, log_scale):
    bins = torch.linspace(-1, 1, 256, dtype=torch.float64)
    log_p = discretized_gaussian_log_likelihood(bins, torch.full_like(bins, mean), torch.full_like(bins, log_scale))
    assert abs(float(log_p.exp().sum()) - 1.0) < 2e-3


def test_discretized_likelihood_of_a_narrow_gaussian_is_certain_at_its_bin():
    x = torch.tensor([0.0, -1.0, 1.0])
    log_p = discretized_gaussian_log_likelihood(x, x, torch.full_like(x, -8.0))
    torch.testing.assert_close(log_p, torch.zeros(3), atol=1e-6, rtol=0)


def test_vlb_terms_by_hand():
    diffusion = Diffusion(DiffusionConfig(steps=100, noise_schedule="cosine", learn_sigma=True))
    g = torch.Generator().manual_seed(0)
    # 8-bit data, x_t drawn from q, and a model output near the true noise: the decoder term stays well
    # conditioned in float32 (far-off means put every bin in the CDF's flat tail).
    x0 = (torch.randint(0, 256, (2, 3, 4, 4), generator=g).float() / 127.5 - 1)
    t = torch.tensor([0, 37])
    noise = torch.randn(2, 3, 4, 4, generator=g)
    xt = diffusion.q_sample(x0, t, noise)
    eps = noise + 0.05 * torch.randn(2, 3, 4, 4, generator=g)
    out = torch.cat([eps, torch.rand(2, 3, 4, 4, generator=g) * 2 - 1], dim=1)
    got = vlb_terms(diffusion, out, x0, xt, t)

    tab = diffusion.tables64
    eps, v = out[:, :3].double(), out[:, 3:].double()
    frac = (v + 1) / 2
    expected = []
    for i, ti in enumerate(t.tolist()):
        log_var = frac[i] * tab["log_betas"][ti] + (1 - frac[i]) * tab["posterior_log_variance_clipped"][ti]
        x0_hat = tab["sqrt_recip_alphas_cumprod"][ti] * xt[i].double() - tab["sqrt_recipm1_alphas_cumprod"][ti] * eps[i]
        mean = tab["posterior_mean_coef1"][ti] * x0_hat + tab["posterior_mean_coef2"][ti] * xt[i].double()
        if ti == 0:
            value = -discretized_gaussian_log_likelihood(x0[i].double(), mean, 0.5 * log_var).mean()
        else:
            true_mean = (tab["posterior_mean_coef1"][ti] * x0[i].double()
                         + tab["posterior_mean_coef2"][ti] * xt[i].double())
            true_log_var = torch.tensor(tab["posterior_log_variance_clipped"][ti], dtype=torch.float64)
            value = normal_kl(true_mean, true_log_var, mean, log_var).mean()
        expected.append(float(value) / math.log(2))
    torch.testing.assert_close(got.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-4, atol=1e-6)


def test_vlb_is_zero_when_the_model_is_the_true_posterior():
    diffusion = Diffusion(DiffusionConfig(steps=100, noise_schedule="cosine", learn_sigma=True))
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(3, 3, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(3, 3, 4, 4, generator=g)
    t = torch.tensor([5, 50, 99])
    xt = diffusion.q_sample(x0, t, noise)
    v = -torch.ones(3, 3, 4, 4)  # v = -1: the posterior variance beta~_t
    kl = vlb_terms(diffusion, torch.cat([noise, v], 1), x0, xt, t)
    torch.testing.assert_close(kl, torch.zeros(3), atol=1e-4, rtol=0)


def test_hybrid_loss_is_finite_and_decreases_on_a_toy_batch():
    torch.manual_seed(0)
    model = zero_init_residuals(build_model(TINY))
    diffusion = Diffusion(DiffusionConfig(steps=100, noise_schedule="cosine", learn_sigma=True))
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 16, 16, generator=g).round() * 2 - 1
    t = torch.randint(0, 100, (4,), generator=g)
    noise = torch.randn(4, 3, 16, 16, generator=g)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(8):
        terms = hybrid_loss(model, diffusion, x0, t, noise)
        assert all(torch.isfinite(v).all() for v in terms.values())
        loss = terms["loss"].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_hybrid_loss_weights_the_vlb_by_lambda_times_T():
    model = build_model(TINY)
    diffusion = Diffusion(DiffusionConfig(steps=100, noise_schedule="cosine", learn_sigma=True))
    x0, noise, t = torch.zeros(2, 3, 16, 16), torch.randn(2, 3, 16, 16), torch.tensor([0, 60])
    terms = hybrid_loss(model, diffusion, x0, t, noise, vlb_weight=0.01)
    torch.testing.assert_close(terms["loss"], terms["mse"] + 0.01 * 100 * terms["vb"])


def test_the_vlb_term_trains_only_the_variance_channels():
    model = build_model(TINY)
    diffusion = Diffusion(DiffusionConfig(steps=100, noise_schedule="cosine", learn_sigma=True))
    x0, noise, t = torch.zeros(2, 3, 16, 16), torch.randn(2, 3, 16, 16), torch.tensor([3, 60])
    out = None

    def spy(x, ts):
        nonlocal out
        out = model(x, ts)
        out.retain_grad()
        return out

    hybrid_loss(spy, diffusion, x0, t, noise)["vb"].sum().backward()
    assert out.grad[:, :3].abs().max() == 0 and out.grad[:, 3:].abs().max() > 0


def test_ema_warm_up():
    config = TrainConfig(data="", out="", ema_rate=0.999)
    assert ema_decay(config, 0) == pytest.approx(0.1)
    assert ema_decay(config, 10**6) == 0.999
    assert ema_decay(config.replace(ema_warmup=False), 0) == 0.999


def test_sample_from_pure_noise_is_in_range_and_seeded():
    model = build_model(TINY).eval()
    a = sample(lambda x, t: model(x, t), TINY_DIFFUSION, (2, 3, 16, 16), steps=4, seed=3)
    b = sample(lambda x, t: model(x, t), TINY_DIFFUSION, (2, 3, 16, 16), steps=4, seed=3)
    assert a.shape == (2, 3, 16, 16) and torch.equal(a, b) and a.abs().max() <= 1


# ---------------------------------------------------------------------------------------------- training runs


def _states(path):
    state = load_training_checkpoint(path)
    return state["model"], state["ema"], state["optimizer"]["state"]


def _assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            _assert_bitwise_equal(a[key], b[key])
        else:
            assert torch.equal(a[key], b[key]), key


def test_resume_continues_bit_for_bit(image_folder, tmp_path):
    straight = train(_config(image_folder, tmp_path / "a", steps=4))
    assert straight.step == 4 and not straight.stopped_early
    first = train(_config(image_folder, tmp_path / "b", steps=2))
    assert first.step == 2
    resumed = train(_config(image_folder, tmp_path / "b", steps=4))  # resume="auto" picks ckpt 2
    assert resumed.step == 4
    for a, b in zip(_states(straight.checkpoint), _states(resumed.checkpoint)):
        _assert_bitwise_equal(a, b)
    log_a = [json.loads(line)["loss"] for line in open(tmp_path / "a" / "log.jsonl")]
    log_b = [json.loads(line)["loss"] for line in open(tmp_path / "b" / "log.jsonl")]
    assert log_a == log_b  # 3 epochs of 12 images in batches of 4: crosses an epoch boundary too


def test_resume_refuses_a_different_run(image_folder, tmp_path):
    train(_config(image_folder, tmp_path, steps=1))
    with pytest.raises(ValueError, match="batch_size"):
        train(_config(image_folder, tmp_path, steps=2, batch_size=2))


def test_checkpoint_is_self_describing_and_weights_only(image_folder, tmp_path):
    result = train(_config(image_folder, tmp_path, steps=2, sample_interval=2, sample_count=4, sample_steps=3,
                           keep_checkpoints=1, precision="bf16"))
    state = torch.load(result.checkpoint, weights_only=True)
    assert state["step"] == 2 and TrainConfig.from_dict(state["train_config"]).model == TINY
    model, config = load_checkpoint(result.checkpoint)  # the generic loader takes the EMA weights
    assert config == TINY
    assert (tmp_path / "samples" / "step_00000002.png").exists()
    assert list_checkpoints(tmp_path) == [result.checkpoint]


def test_export_loads_like_an_official_model(image_folder, tmp_path):
    from repaint.inpainter import Inpainter

    result = train(_config(image_folder, tmp_path, steps=2))
    path = export_ema(result.checkpoint, tmp_path / "tiny.safetensors")
    weights, stored = read_checkpoint(path)
    assert all(v.dtype == torch.float16 for v in weights.values())
    assert stored["diffusion"] == TINY_DIFFUSION.to_dict()
    inpainter = Inpainter.load(str(path))
    assert inpainter.config == TINY and inpainter.trained == TINY_DIFFUSION
    ema = load_training_checkpoint(result.checkpoint)["ema"]
    for key, value in inpainter.unet.state_dict().items():
        assert torch.equal(value, ema[key].half().float())


def test_command_line_trains_and_exports(image_folder, tmp_path):
    from click.testing import CliRunner

    from repaint.cli import cli

    args = ["train", str(image_folder), "--out", str(tmp_path), "--steps", "1", "--batch-size", "4",
            "--image-size", "16", "--channel-mult", "1,1", "--attention-resolutions", "8", "--sample-interval", "0",
            "--diffusion-steps", "50", "--device", "cpu", "--no-flip"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    (checkpoint,) = list_checkpoints(tmp_path)
    config = TrainConfig.from_dict(load_training_checkpoint(checkpoint)["train_config"])
    assert config.model.channel_mult == (1, 1) and config.diffusion.steps == 50 and config.flip is False
    assert config.lr == TrainConfig(data="", out="").lr  # an option not given keeps the library's default
    result = CliRunner().invoke(cli, ["export", str(checkpoint), str(tmp_path / "m.safetensors")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.safetensors").exists()


def test_train_help_shows_every_setting_with_the_library_default():
    import dataclasses

    from click.testing import CliRunner

    from repaint.cli import cli

    output = CliRunner().invoke(cli, ["train", "--help"]).output
    text = "".join(output.split())  # help lines wrap; compare without white space
    defaults = TrainConfig(data="", out="")
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("data", "out", "model", "diffusion"):
            continue
        flag = "--" + f.name.replace("_", "-")
        value = getattr(defaults, f.name)
        shown = (flag[2:] if value else "no-" + flag[2:]) if isinstance(value, bool) else str(value)
        found = re.search(re.escape(flag) + r"(?![a-z-]).*?\[default:([^;\]]*)", text)
        assert found and found.group(1) == shown, f.name
    assert "Examples:" in output and "repaint train my_images/ --out runs/mine" in output


def test_command_line_reports_bad_data_in_one_line(tmp_path):
    from click.testing import CliRunner

    from repaint.cli import cli

    result = CliRunner().invoke(cli, ["train", str(tmp_path / "missing"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert result.output.startswith("repaint: error: training data must be") and result.output.count("\n") == 1
    assert not (tmp_path / "run").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, config_dict, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    result = train(TrainConfig.from_dict(config_dict))
    results.put((rank, result.step, result.checkpoint is not None, dist.is_initialized()))


def test_torchrun_style_two_process_gloo_run(image_folder, tmp_path):
    import torch.multiprocessing as mp

    config = _config(image_folder, tmp_path, steps=2, batch_size=2).to_dict()
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, config, results)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    got = sorted(results.get(timeout=5) for _ in procs)
    assert got == [(0, 2, True, False), (1, 2, False, False)]  # both stepped, rank 0 wrote, the group was closed
    assert len(list_checkpoints(tmp_path)) == 1


# ---------------------------------------------------------------------------------------------- bad input, resume


def test_a_damaged_checkpoint_is_one_line_and_resume_falls_back_to_the_one_before(image_folder, tmp_path):
    from repaint.checkpoints import CheckpointError

    straight = train(_config(image_folder, tmp_path / "a", steps=4))
    run = tmp_path / "b"
    train(_config(image_folder, run, steps=4, save_interval=2))
    newest = list_checkpoints(run)[-1]
    assert newest.name == "ckpt_00000004.pt"
    newest.write_bytes(np.random.default_rng(0).bytes(4096))  # random bytes, as a bad copy leaves
    with pytest.raises(CheckpointError, match="cannot read training checkpoint .*ckpt_00000004.pt") as error:
        export_ema(newest, tmp_path / "x.safetensors")
    assert "\n" not in str(error.value) and "weights_only" not in str(error.value)
    assert not (tmp_path / "x.safetensors").exists()
    with pytest.warns(UserWarning, match="ckpt_00000004.pt.corrupt, resuming from the checkpoint before it"):
        resumed = train(_config(image_folder, run, steps=4, save_interval=2))
    assert resumed.step == 4 and (run / "ckpt_00000004.pt.corrupt").exists()
    for a, b in zip(_states(straight.checkpoint), _states(resumed.checkpoint)):
        _assert_bitwise_equal(a, b)  # steps 3-4 were redone exactly
    steps = [json.loads(line)["step"] for line in open(run / "log.jsonl")]
    assert steps == [1, 2, 3, 4]  # the log lines of the lost steps 3-4 are not repeated


def test_no_readable_checkpoint_is_an_error_that_names_the_way_out(image_folder, tmp_path):
    from repaint.checkpoints import CheckpointError

    train(_config(image_folder, tmp_path, steps=1))
    list_checkpoints(tmp_path)[-1].write_bytes(b"PK\x03\x04 truncated")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="--resume none"):
        train(_config(image_folder, tmp_path, steps=2))
    with pytest.raises(CheckpointError, match="training checkpoint not found"):
        train(_config(image_folder, tmp_path, steps=2, resume=str(tmp_path / "absent.pt")))


def test_an_unreadable_training_image_is_skipped_and_resume_passes_it(image_folder, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(image_folder, data)
    (data / "05.png").write_bytes(b"not a png at all")
    with pytest.warns(UserWarning, match="unreadable training image .*05.png"):
        first = train(_config(data, tmp_path / "a", steps=3, seed=1))  # 3 steps of 4 images: every image is drawn
    assert first.step == 3
    with pytest.warns(UserWarning, match="1 unreadable training image"):
        resumed = train(_config(data, tmp_path / "a", steps=6, seed=1))
    assert resumed.step == 6
    with pytest.warns(UserWarning, match="unreadable training image"):
        straight = train(_config(data, tmp_path / "b", steps=6, seed=1))
    for a, b in zip(_states(straight.checkpoint), _states(resumed.checkpoint)):
        _assert_bitwise_equal(a, b)


def test_no_readable_training_image_leaves_no_run_folder(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        (data / f"{i}.png").write_bytes(b"broken")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="none of the 4 images"):
        train(_config(data, tmp_path / "run"))
    assert not (tmp_path / "run").exists()

"""Reference RePaint YAML configs (andreas128/RePaint confs/test_*.yml layout) through `repaint inpaint --conf`."""

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from repaint.cli import cli
from repaint.conf import ConfError, merge_choices, parse_conf, read_conf
from test_cli import TINY, tiny_checkpoint


def reference_conf(root, model_path, **changes):
    """A config with the reference's key set, sized for the tiny 16x16 test UNet."""
    conf = {
        "attention_resolutions": "8", "class_cond": False, "diffusion_steps": 1000, "learn_sigma": True,
        "noise_schedule": "linear", "num_channels": 32, "num_head_channels": -1, "num_heads": 4,
        "num_res_blocks": 1, "resblock_updown": False, "use_fp16": False, "use_scale_shift_norm": True,
        "classifier_scale": 4.0, "lr_kernel_n_std": 2, "num_samples": 100, "show_progress": True,
        "timestep_respacing": "8", "use_kl": False, "predict_xstart": False, "rescale_timesteps": False,
        "rescale_learned_sigmas": False, "classifier_use_fp16": False, "classifier_width": 128,
        "classifier_depth": 2, "classifier_attention_resolutions": "32,16,8", "classifier_use_scale_shift_norm": True,
        "classifier_resblock_updown": True, "classifier_pool": "attention", "num_heads_upsample": -1,
        "channel_mult": "1,2", "dropout": 0.0, "use_checkpoint": False, "use_new_attention_order": False,
        "clip_denoised": True, "use_ddim": False, "image_size": 16, "model_path": str(model_path),
        "name": "test_tiny", "inpa_inj_sched_prev": True, "n_jobs": 1, "print_estimated_vars": True,
        "inpa_inj_sched_prev_cumnoise": False,
        "schedule_jump_params": {"t_T": 8, "n_sample": 1, "jump_length": 2, "jump_n_sample": 2},
        "data": {"eval": {"tiny_eval": {
            "mask_loader": True, "gt_path": str(root / "gts"), "mask_path": str(root / "masks"), "image_size": 16,
            "class_cond": False, "deterministic": True, "random_crop": False, "random_flip": False,
            "return_dict": True, "drop_last": False, "batch_size": 2, "return_dataloader": True,
            "ds_conf": {"name": "random_thin_256"}, "max_len": 3,
            "paths": {"srs": str(root / "log/inpainted"), "lrs": str(root / "log/gt_masked"),
                      "gts": str(root / "log/gt"), "gt_keep_masks": str(root / "log/gt_keep_mask")},
        }}},
    }
    conf.update(changes)
    return conf


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("conf")
    (root / "gts").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):  # max_len: 3 keeps the first three
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / "gts" / f"{i:06d}.png")
        mask = np.full((16, 16), 255, np.uint8)
        mask[:, 8:] = 0
        Image.fromarray(mask).save(root / "masks" / f"{i:06d}.png")
    return root, tiny_checkpoint(root / "tiny.safetensors")


def write_conf(path, conf):
    path.write_text(yaml.safe_dump(conf))
    return path


def test_conf_runs_over_the_data_folders_and_reports_unknown_keys(setup):
    root, model = setup
    conf = reference_conf(root, model, my_typo_key=1)
    conf["schedule_jump_params"]["jump_lenght"] = 3
    path = write_conf(root / "test_tiny.yml", conf)
    result = CliRunner().invoke(cli, ["inpaint", "--conf", str(path), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "not understood" in line]
    assert len(warnings) == 1
    assert "my_typo_key" in warnings[0] and "schedule_jump_params.jump_lenght" in warnings[0]
    assert "use_checkpoint" not in warnings[0] and "print_estimated_vars" not in warnings[0]
    assert "steps=8 jump_length=2 jump_n_sample=2 -> 14 network calls" in result.stdout
    for folder in ("inpainted", "gt_masked", "gt", "gt_keep_mask"):
        names = sorted(p.name for p in (root / "log" / folder).iterdir())
        expected = [f"{i:06d}{'_s0' if folder == 'inpainted' else ''}.png" for i in range(3)]
        assert names == expected


def test_explicit_options_override_the_conf(setup, tmp_path):
    root, model = setup
    path = write_conf(tmp_path / "c.yml", reference_conf(root, model))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["inpaint", "--conf", str(path), "--device", "cpu", "--steps", "4",
                                      "--jump-n-sample", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "steps=4 jump_length=2 jump_n_sample=1 -> 4 network calls" in result.stdout
    assert len(list((out / "inpainted").glob("*.png"))) == 3


def test_parse_maps_architecture_and_schedule(setup):
    root, model = setup
    parsed = parse_conf(reference_conf(root, model))
    assert parsed.unet == TINY
    assert parsed.settings.respacing() == "8" and parsed.settings.jump_length == 2
    assert parsed.settings.jump_n_sample == 2 and parsed.settings.injection == "reference"
    assert parsed.classifier is None and parsed.unknown == []
    data = parsed.data[0]
    assert [name for name, _, _ in data.pairs()] == ["000000", "000001", "000002"]
    assert data.output_dirs("ignored").inpainted == root / "log/inpainted"


@pytest.mark.parametrize("change, message", [
    ({"use_ddim": True}, "use_ddim"),
    ({"predict_xstart": True}, "predict_xstart"),
    ({"schedule_jump_params": {"t_T": 250, "jump_length": 10, "jump_n_sample": 10}}, "t_T"),
])
def test_unsupported_settings_are_refused(setup, change, message):
    root, model = setup
    with pytest.raises(ConfError, match=message):
        parse_conf(reference_conf(root, model, **change))


def test_bad_conf_files_are_one_line(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("a: [1, 2\n")
    for path in (broken, tmp_path / "missing.yml"):
        result = CliRunner().invoke(cli, ["inpaint", "--conf", str(path)])
        assert result.exit_code == 2
        assert result.stderr.startswith("repaint: error:") and len(result.stderr.strip().splitlines()) == 1
    with pytest.raises(ConfError, match="mapping"):
        (tmp_path / "list.yml").write_text("- 1\n")
        read_conf(tmp_path / "list.yml")


def test_a_choice_made_explicitly_wins_then_the_config_then_the_default(setup):
    root, model = setup
    conf = parse_conf(reference_conf(root, model, device="cpu", cond_y=3, classifier_scale=2.5))
    defaults = {"model": "default", "device": "auto", "class_label": None, "classifier_scale": 1.0}
    from_conf = merge_choices(conf, defaults, explicit=set())
    assert (from_conf.device, from_conf.class_label, from_conf.classifier_scale) == ("cpu", 3, 2.5)
    assert from_conf.settings == conf.settings and from_conf.random_labels
    given = merge_choices(conf, {**defaults, "device": "cuda", "class_label": 0}, explicit={"device", "class_label"})
    assert (given.device, given.class_label, given.classifier_scale) == ("cuda", 0, 2.5)
    no_conf = merge_choices(None, defaults, explicit=set())
    assert (no_conf.device, no_conf.class_label, no_conf.random_labels) == ("auto", None, False)
    assert no_conf.settings.sampler == "lanpaint"  # the bundled model's recommendation

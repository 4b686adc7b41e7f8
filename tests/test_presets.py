"""Configurations, presets, state-dict inference and checkpoint loading."""

from __future__ import annotations

import json

import pytest
import torch
from official import FIXTURES, load_fixture, reference, run

from repaint.checkpoints import (
    PRESETS, CheckpointError, Preset, get_preset, infer_classifier_config, infer_unet_config, load_checkpoint,
    save_checkpoint
)
from repaint.models.config import (
    ClassifierConfig, DiffusionSettings, UNetConfig, build_model, config_from_official_kwargs
)

HEAD_FLAGS = ("num_heads", "num_head_channels", "num_heads_upsample", "use_new_attention_order")
PRESET_OF = {  # full_size_keys.json id -> preset
    "a_imagenet256_cond": "imagenet256",
    "b_celebahq256_uncond": "celeba256",
    "c_places256_uncond": "places256",
    "d_openai256_uncond": "openai256_uncond",
    "e_imagenet256_classifier": "imagenet256_classifier",
}


def full_size_entries():
    return json.loads((FIXTURES / "full_size_keys.json").read_text())["models"]


# -- configurations ---------------------------------------------------------------------------


def test_config_dict_round_trip_and_unknown_keys():
    config = get_preset("imagenet256").config
    data = json.loads(json.dumps(config.to_dict()))
    assert UNetConfig.from_dict(data) == config
    with pytest.raises(ValueError, match="num_chanels"):
        UNetConfig.from_dict({**data, "num_chanels": 3})
    with pytest.raises(ValueError, match="model_channels"):
        UNetConfig.from_dict({"image_size": 64})
    with pytest.raises(ValueError, match="bogus"):
        DiffusionSettings.from_dict({"bogus": 1})


def test_default_channel_mult_by_image_size():
    defaults = [(512, (0.5, 1, 1, 2, 2, 4, 4)), (256, (1, 1, 2, 2, 4, 4)), (128, (1, 1, 2, 3, 4)), (64, (1, 2, 3, 4))]
    for size, mult in defaults:
        assert UNetConfig(size, 64, 1, (16,)).channel_mult == mult
        assert ClassifierConfig(size).channel_mult == mult
    with pytest.raises(ValueError, match="channel_mult"):
        UNetConfig(32, 64, 1, (16,))
    assert UNetConfig(32, 64, 1, "16,8", channel_mult="1,2").channel_mult == (1, 2)


def test_official_kwargs_unknown_key_is_an_error():
    with pytest.raises(ValueError, match="num_chanels"):
        config_from_official_kwargs({"image_size": 64, "num_chanels": 3})


@pytest.mark.parametrize("model_id", sorted(PRESET_OF))
def test_presets_match_official_kwargs(model_id):
    entry = full_size_entries()[model_id]
    preset = get_preset(PRESET_OF[model_id])
    kwargs = entry.get("create_model_kwargs") or entry["create_classifier_kwargs"]
    assert preset.config == config_from_official_kwargs(kwargs)
    if preset.kind == "unet":
        conf = entry["model_and_diffusion_conf"]
        expected = DiffusionSettings(conf["diffusion_steps"], conf["noise_schedule"], conf["learn_sigma"])
        assert preset.diffusion == expected
    assert preset.filename.endswith(".pt") and preset.published and preset.description


def test_get_preset_lists_valid_names():
    with pytest.raises(ValueError) as error:
        get_preset("celeba")
    for name in PRESETS:
        assert name in str(error.value)


# -- inference --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["unet_s1", "unet_s2", "unet_s3", "classifier_s1"])
def test_inferred_config_reproduces_output(name):
    io, state_dict = load_fixture(name)
    kwargs = io["create_kwargs"]
    if name.startswith("unet"):  # head settings are not in the weights
        config = infer_unet_config(state_dict, image_size=kwargs["image_size"], **{k: kwargs[k] for k in HEAD_FLAGS})
    else:
        config = infer_classifier_config(state_dict)
    model = build_model(config).eval()
    model.load_state_dict(state_dict, strict=True)
    torch.testing.assert_close(run(model, io), reference(io), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_id", sorted(PRESET_OF))
def test_inference_recovers_full_size_presets(model_id):
    entry = full_size_entries()[model_id]
    shapes = {key: torch.empty(shape, device="meta") for key, shape, _ in entry["state_dict"]}
    preset = get_preset(PRESET_OF[model_id])
    infer = infer_unet_config if preset.kind == "unet" else infer_classifier_config
    assert infer(shapes) == preset.config.replace(use_fp16=False)  # use_fp16 is not in the weights


@pytest.mark.parametrize(
    "size, channels, mult, blocks, heads",
    [(64, 192, (1, 2, 3, 4), 3, dict(num_head_channels=64, use_new_attention_order=True)),
     (128, 256, (1, 1, 2, 3, 4), 2, dict(num_heads=4, num_head_channels=-1)),
     (512, 256, (0.5, 1, 1, 2, 2, 4, 4), 2, dict(num_head_channels=64))],
)
def test_inference_of_other_openai_layouts(size, channels, mult, blocks, heads):
    config = UNetConfig(size, channels, blocks, (32, 16, 8), mult, learn_sigma=True, class_cond=True,
                        resblock_updown=size != 512, **heads)
    with torch.device("meta"):
        state_dict = build_model(config).state_dict()
    assert infer_unet_config(state_dict) == config


# -- loading ----------------------------------------------------------------------------------


def fixture_preset(name: str) -> Preset:
    io, _ = load_fixture(name)
    return Preset(name, f"{name}.pt", "test fixture", "local", config_from_official_kwargs(io["create_kwargs"]))


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_load_pt_with_preset(tmp_path, wrap):
    io, state_dict = load_fixture("unet_s1")
    path = tmp_path / "model.pt"
    torch.save(state_dict if wrap is None else {wrap: state_dict}, path)
    model, config = load_checkpoint(path, preset=fixture_preset("unet_s1"))
    assert config == fixture_preset("unet_s1").config and not model.training
    torch.testing.assert_close(run(model, io), io["output"], rtol=1e-5, atol=1e-5)


def test_load_pt_with_stored_config_prefers_ema(tmp_path):
    io, state_dict = load_fixture("unet_s2")
    config = config_from_official_kwargs(io["create_kwargs"])
    zeros = {k: torch.zeros_like(v) for k, v in state_dict.items()}
    path = tmp_path / "trained.pt"
    torch.save({"config": {"kind": "unet", "config": config.to_dict()}, "state_dict": zeros, "ema": state_dict}, path)
    model, loaded = load_checkpoint(path)
    assert loaded == config
    torch.testing.assert_close(run(model, io), io["output"], rtol=1e-5, atol=1e-5)


def test_load_infers_classifier(tmp_path):
    io, state_dict = load_fixture("classifier_s1")
    path = tmp_path / "classifier.pt"
    torch.save(state_dict, path)
    model, config = load_checkpoint(path)
    assert isinstance(config, ClassifierConfig) and config.image_size == 64
    torch.testing.assert_close(run(model, io), io["logits"], rtol=1e-5, atol=1e-5)


def _broken(state_dict, how):
    broken = dict(state_dict)
    if how == "missing":
        del broken["middle_block.1.qkv.bias"]
    elif how == "shape":
        broken["middle_block.1.qkv.bias"] = torch.zeros(5)
    else:
        broken["middle_block.1.qkv.extra"] = torch.zeros(5)
    return broken


@pytest.mark.parametrize("how, word", [("missing", "missing"), ("shape", "wrong shape"), ("extra", "unexpected")])
def test_mismatch_names_key_and_preset(tmp_path, how, word):
    _, state_dict = load_fixture("unet_s1")
    path = tmp_path / "broken.pt"
    torch.save(_broken(state_dict, how), path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path, preset=fixture_preset("unet_s1"))
    message = str(error.value)
    assert "\n" not in message
    assert "unet_s1" in message and word in message
    assert ("middle_block.1.qkv.extra" if how == "extra" else "middle_block.1.qkv.bias") in message


def test_wrong_official_preset_is_one_line(tmp_path):
    _, state_dict = load_fixture("unet_s1")
    path = tmp_path / "small.pt"
    torch.save(state_dict, path)
    with pytest.raises(CheckpointError, match=r"preset 'celeba256'.*missing") as error:
        load_checkpoint(path, preset="celeba256")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_corrupt_or_missing_file(tmp_path, suffix):
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(b"definitely not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="cannot read") as error:
        load_checkpoint(path)
    assert "\n" not in str(error.value)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / f"absent{suffix}")


@pytest.mark.parametrize("name, half", [("unet_s3", False), ("unet_s1", True), ("classifier_s1", False)])
def test_safetensors_round_trip(tmp_path, name, half):
    io, state_dict = load_fixture(name)
    config = config_from_official_kwargs(io["create_kwargs"])
    model = build_model(config).eval()
    model.load_state_dict(state_dict)
    path = save_checkpoint(model, config, tmp_path / f"{name}.safetensors", half=half)
    loaded, loaded_config = load_checkpoint(path)
    assert loaded_config == config
    # the fixture weights are exactly representable in float16, so even half=True is lossless
    torch.testing.assert_close(run(loaded, io), run(model, io), rtol=0, atol=0)


def test_save_refuses_a_config_that_does_not_match(tmp_path):
    io, state_dict = load_fixture("unet_s1")
    model = build_model(config_from_official_kwargs(io["create_kwargs"]))
    with pytest.raises(CheckpointError):
        save_checkpoint(model, get_preset("celeba256").config, tmp_path / "x.safetensors")


def test_kind_mismatch_is_one_line(tmp_path):
    _, state_dict = load_fixture("unet_s1")
    path = tmp_path / "unet.pt"
    torch.save(state_dict, path)
    with pytest.raises(CheckpointError, match="holds a unet state dict"):
        load_checkpoint(path, kind="classifier")
    with pytest.raises(CheckpointError, match="holds a unet state dict, but preset 'imagenet256_classifier'"):
        load_checkpoint(path, preset="imagenet256_classifier")


def test_saved_diffusion_settings_travel_with_the_weights(tmp_path):
    from repaint.checkpoints import read_checkpoint

    io, state_dict = load_fixture("unet_s2")
    config = config_from_official_kwargs(io["create_kwargs"])
    model = build_model(config)
    model.load_state_dict(state_dict)
    settings = DiffusionSettings(steps=1000, noise_schedule="cosine", learn_sigma=False)
    path = save_checkpoint(model, config, tmp_path / "m.safetensors", diffusion=settings)
    _, stored = read_checkpoint(path)
    assert DiffusionSettings.from_dict(stored["diffusion"]) == settings
    assert load_checkpoint(path)[1] == config


@pytest.mark.parametrize("kind", [None, "unet", "classifier"])
def test_unrelated_weights_are_not_called_a_classifier(tmp_path, kind):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"encoder.layer.0.weight": torch.zeros(4, 4), "decoder.bias": torch.zeros(4)}, str(path))
    with pytest.raises(CheckpointError, match="not a guided-diffusion UNet or classifier") as error:
        load_checkpoint(path, kind=kind)
    assert "classifier state dict" not in str(error.value) and "decoder.bias" in str(error.value)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


# -- settings the weights do not determine ----------------------------------------------------


def _official_pt(tmp_path, name="unet_s2"):
    io, state_dict = load_fixture(name)
    path = tmp_path / f"{name}.pt"
    torch.save(state_dict, path)
    return io, path


def _relative_error(model, io):
    out, ref = run(model, io), reference(io)
    return float((out - ref).norm() / ref.norm())


def test_guessed_head_settings_warn_and_are_wrong_for_other_checkpoints(tmp_path):
    io, path = _official_pt(tmp_path)  # unet_s2: num_heads=2, num_head_channels=-1, new attention order
    with pytest.warns(UserWarning, match="do not determine num_heads=4, num_head_channels=-1, num_heads_upsample=-1, "
                                         "use_new_attention_order=False.*unet_s2.json.*--unet-config") as record:
        model, config = load_checkpoint(path, image_size=32)
    assert len(record) == 1
    assert _relative_error(model, io) > 0.1  # strict loading succeeded, yet the outputs are wrong (0.23)


@pytest.mark.parametrize("suffix, text", [
    (".json", '{"num_heads": 2, "num_head_channels": -1, "num_heads_upsample": -1, "use_new_attention_order": true}'),
    (".yaml", "num_heads: 2\nnum_head_channels: -1\nnum_heads_upsample: -1\nuse_new_attention_order: true\n"),
])
def test_a_config_file_beside_the_checkpoint_sets_them(tmp_path, suffix, text):
    import warnings

    io, path = _official_pt(tmp_path)
    path.with_suffix(suffix).write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is guessed any more
        model, config = load_checkpoint(path, image_size=32)
    assert (config.num_heads, config.use_new_attention_order) == (2, True)
    torch.testing.assert_close(run(model, io), reference(io), rtol=1e-5, atol=1e-5)


def test_explicit_settings_win_over_the_file_and_only_unset_ones_are_reported(tmp_path):
    from repaint.inpainter import Inpainter

    io, path = _official_pt(tmp_path)
    path.with_suffix(".yml").write_text("num_heads: 8\nnum_head_channels: -1\n")  # wrong head count, overridden
    with pytest.warns(UserWarning) as record:
        model, config = load_checkpoint(path, image_size=32, num_heads=2)
    message = str(record[0].message)
    assert "num_heads_upsample=-1, use_new_attention_order=False" in message and "num_heads=" not in message
    settings = dict(image_size=32, num_heads=2, num_heads_upsample=-1, use_new_attention_order=True)
    inpainter = Inpainter.load(str(path), unet_config=settings)
    assert inpainter.config.num_heads == 2
    torch.testing.assert_close(run(inpainter.unet, io), reference(io), rtol=1e-5, atol=1e-5)


def test_head_channels_given_makes_the_head_count_irrelevant(tmp_path):
    import warnings

    io, path = _official_pt(tmp_path, "unet_s1")  # num_head_channels=32 (head count follows from it)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model, _ = load_checkpoint(path, image_size=32, num_head_channels=32, use_new_attention_order=False)
    torch.testing.assert_close(run(model, io), reference(io), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("content, words", [
    ("{not json", "cannot read the config file"),
    ("[1, 2]", "must hold a mapping"),
    ('{"num_hedas": 2}', "unknown UNetConfig keys \\['num_hedas'\\]"),
])
def test_a_bad_config_file_is_one_line(tmp_path, content, words):
    _, path = _official_pt(tmp_path)
    path.with_suffix(".json").write_text(content)
    with pytest.raises(CheckpointError, match=words) as error:
        load_checkpoint(path, image_size=32)
    assert "\n" not in str(error.value)
    path.with_suffix(".yaml").write_text("num_heads: 2\n")
    with pytest.raises(CheckpointError, match="two config files"):
        load_checkpoint(path, image_size=32)

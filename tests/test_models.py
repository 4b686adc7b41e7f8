"""The ADM UNet and the classifier against the official implementation's numbers and layouts."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from official import FIXTURES, load_fixture, reference, run

from repaint.models import UNetModel, timestep_embedding
from repaint.models.nn import qkv_attention
from repaint.models.config import build_model, config_from_official_kwargs

NETWORKS = ["unet_s1", "unet_s2", "unet_s3", "classifier_s1"]


def errors(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    abs_err = (out - ref).abs().max().item()
    return abs_err, abs_err / ref.abs().max().item()


@pytest.mark.parametrize("name", NETWORKS)
def test_matches_official_output(name):
    io, state_dict = load_fixture(name)
    config = config_from_official_kwargs(io["create_kwargs"])
    model = build_model(config).eval()
    assert list(model.state_dict()) == list(state_dict)
    model.load_state_dict(state_dict, strict=True)
    assert sum(p.numel() for p in model.parameters()) == io["num_parameters"]
    out = run(model, io)
    abs_err, rel_err = errors(out, reference(io))
    print(f"{name}: max abs error {abs_err:.2e}, relative to absmax {rel_err:.2e}")
    torch.testing.assert_close(out, reference(io), rtol=1e-5, atol=1e-5)


FULL_SIZE = json.loads((FIXTURES / "full_size_keys.json").read_text())["models"] if FIXTURES.is_dir() else {}


@pytest.mark.parametrize("model_id", sorted(FULL_SIZE))
def test_full_size_layout(model_id):
    entry = FULL_SIZE[model_id]
    kwargs = entry.get("create_model_kwargs") or entry["create_classifier_kwargs"]
    with torch.device("meta"):
        model = build_model(config_from_official_kwargs(kwargs))
    layout = [[key, list(value.shape)] for key, value in model.state_dict().items()]
    assert layout == [[key, shape] for key, shape, _ in entry["state_dict"]]
    assert sum(p.numel() for p in model.parameters()) == entry["total_parameters"]


def test_class_label_is_required_exactly_when_class_conditional():
    io, state_dict = load_fixture("unet_s1")
    model = build_model(config_from_official_kwargs(io["create_kwargs"])).eval()
    with pytest.raises(ValueError, match="class-conditional"):
        model(io["x"], io["timesteps"])
    io2, _ = load_fixture("unet_s2")
    model2 = build_model(config_from_official_kwargs(io2["create_kwargs"])).eval()
    with pytest.raises(ValueError, match="not class-conditional"):
        model2(io2["x"], io2["timesteps"], torch.tensor([1, 2]))


def test_timestep_embedding_is_cos_then_sin():
    emb = timestep_embedding(torch.tensor([0, 7]), 6)
    freqs = torch.exp(-math.log(10000.0) * torch.arange(3) / 3)
    expected = torch.cat([torch.cos(7 * freqs), torch.sin(7 * freqs)])
    torch.testing.assert_close(emb[0], torch.tensor([1.0, 1, 1, 0, 0, 0]))
    torch.testing.assert_close(emb[1], expected)
    assert timestep_embedding(torch.tensor([3]), 5).shape == (1, 5)


def _einsum_attention(q, k, v):
    """The textbook formula with q and k each scaled by ch**-0.25; q, k, v: [N, ch, T]."""
    scale = q.shape[1] ** -0.25
    weight = torch.softmax(torch.einsum("nct,ncs->nts", q * scale, k * scale).float(), dim=-1)
    return torch.einsum("nts,ncs->nct", weight, v)


@pytest.mark.parametrize("legacy", [True, False])
def test_qkv_attention_head_orders(legacy):
    gen = torch.Generator().manual_seed(0)
    batch, heads, ch, length = 2, 3, 8, 5
    qkv = torch.randn(batch, 3 * heads * ch, length, generator=gen)
    if legacy:  # per head: q, k, v blocks
        q, k, v = qkv.reshape(batch * heads, 3 * ch, length).split(ch, dim=1)
    else:  # q, k, v blocks, each split into heads
        q, k, v = (t.reshape(batch * heads, ch, length) for t in qkv.chunk(3, dim=1))
    expected = _einsum_attention(q, k, v).reshape(batch, heads * ch, length)
    torch.testing.assert_close(qkv_attention(qkv, heads, legacy_order=legacy), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["convert_torso_fp16", "convert_torso_bf16", "bfloat16", "autocast_bf16"])
def test_reduced_precision_runs_close_to_float32(mode):
    io, state_dict = load_fixture("unet_s1")
    model = build_model(config_from_official_kwargs(io["create_kwargs"])).eval()
    model.load_state_dict(state_dict)
    x, t, y = io["x"], io["timesteps"], io["y"]
    with torch.no_grad():
        if mode == "convert_torso_fp16":
            out = copy.deepcopy(model).convert_torso(torch.float16)(x, t, y)
        elif mode == "convert_torso_bf16":
            out = copy.deepcopy(model).convert_torso(torch.bfloat16)(x, t, y)
        elif mode == "bfloat16":
            out = copy.deepcopy(model).bfloat16()(x.bfloat16(), t, y)
            assert out.dtype == torch.bfloat16
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(x, t, y)
    assert torch.isfinite(out).all()
    ref = io["output"]
    assert (out.float() - ref).abs().max() < 0.2 * ref.std()


def test_groupnorm_runs_in_float32_for_half_inputs():
    model = UNetModel(32, 3, 32, 3, 1, (), (1,), num_head_channels=32).eval()
    norm = model.out[0]
    x = torch.randn(1, 32, 4, 4) * 1000 + 5000  # large mean: float16 statistics would lose it
    out = norm(x.half())
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), norm(x.half().float()), rtol=1e-3, atol=1e-3)

"""Giving back the pages of memory-mapped weights (repaint.checkpoints.mapped): memory down, values unchanged, and
nothing but a clean file mapping ever touched."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from repaint.accel import Accel, accelerate
from repaint.checkpoints import load_denoiser
from repaint.checkpoints.formats import read_checkpoint
from repaint.checkpoints.mapped import clean_file_mappings, releaser
from repaint.models import UNetModel
from repaint.models.config import UNetConfig

pytestmark = pytest.mark.skipif(not Path("/proc/self/smaps").exists() or sys.platform != "linux",
                                reason="reads /proc/self/smaps, which only Linux has")


def resident_kib(path: Path) -> int:
    """Resident KiB of this process's mappings of ``path``."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and ":" not in fields[0]:
            inside = len(fields) >= 6 and fields[5] == str(path)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


def mapped(tmp_path: Path, suffix: str) -> tuple[torch.Tensor, torch.Tensor, Path]:
    """(a 16 MiB tensor read memory-mapped from a ``suffix`` file, the same values in ordinary memory, the file)."""
    values = torch.randn(4096, 1024, generator=torch.Generator().manual_seed(0))
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file({"w": values}, path)
        return load_file(path)["w"], values, path
    torch.save({"w": values}, path)
    return torch.load(path, mmap=True, weights_only=True)["w"], values, path


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_a_read_mapped_tensor_gives_its_pages_back_and_reads_the_same(tmp_path, suffix):
    tensor, values, path = mapped(tmp_path, suffix)
    assert torch.equal(tensor, values)                    # every page read in
    assert resident_kib(path) >= 16 * 1024
    released = releaser()(tensor)
    assert released >= 16 * 2**20 - 2 * 4096              # all but the two partly shared end pages
    assert resident_kib(path) <= 64
    assert torch.equal(tensor, values)                    # paged in again from the file


def test_a_mapping_with_a_written_page_is_left_alone(tmp_path):
    tensor, values, path = mapped(tmp_path, ".pt")
    tensor[0, 0] = 5.0                                    # copy-on-write: this page now exists only in memory
    assert not any(start <= tensor.data_ptr() < end for start, end in clean_file_mappings())
    assert releaser()(tensor) == 0
    assert tensor[0, 0] == 5.0 and torch.equal(tensor[1:], values[1:])


def test_ordinary_memory_and_a_missing_smaps_are_never_touched(tmp_path):
    values = torch.randn(4096, 1024)
    before = values.clone()
    assert releaser()(values) == 0 and torch.equal(values, before)
    tensor, _, _ = mapped(tmp_path, ".safetensors")
    assert releaser(tmp_path / "no-smaps")(tensor) == 0


@torch.no_grad()
def test_a_bf16_copy_of_a_loaded_checkpoint_leaves_the_float32_pages_in_the_file(tmp_path):
    """What a bf16 run of a 256x256 model relies on to stay near the size of its bf16 weights: after the cast the
    file's pages are no longer resident, and both networks compute what they computed before."""
    config = UNetConfig(image_size=16, model_channels=64, num_res_blocks=2, channel_mult=(1, 2),
                        attention_resolutions=(8,), num_head_channels=32, learn_sigma=True)
    net = UNetModel(**config.model_kwargs()).eval()
    gen = torch.Generator().manual_seed(0)
    for param in net.parameters():
        param.add_(0.1 * torch.randn(param.shape, generator=gen))
    path = tmp_path / "model.pt"
    torch.save(net.state_dict(), path)
    x, t = torch.randn(1, 3, 16, 16, generator=gen), torch.tensor([500])
    plain = accelerate(net, Accel("bf16", channels_last=True, compile=False), "cpu")(x, t)

    loaded, _, _ = load_denoiser(str(path), unet_config=config.to_dict())
    assert torch.equal(loaded(x, t), net(x, t))                        # fp32 read through the mapping
    file_kib = path.stat().st_size // 1024
    assert resident_kib(path) >= 0.9 * file_kib
    fast = accelerate(loaded, Accel("bf16", channels_last=True, compile=False), "cpu")
    assert resident_kib(path) <= 0.1 * file_kib                        # the norms' few weights may stay
    assert torch.equal(fast(x, t), plain)
    assert torch.equal(loaded(x, t), net(x, t))                        # fp32 again, paged back in
    assert read_checkpoint(path)[0].keys() == net.state_dict().keys()

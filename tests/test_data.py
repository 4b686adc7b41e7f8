import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from repaint.training.data import ImageDataset, batches_per_epoch, epoch_batches, to_tensor


def _write_images(folder, n=6, size=8):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = []
    for i in range(n):
        array = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(array).save(folder / f"img_{i:02d}.png")
        arrays.append(array)
    (folder / "notes.txt").write_text("not an image")
    return arrays


@pytest.fixture
def image_folder(tmp_path):
    arrays = _write_images(tmp_path / "images")
    return tmp_path / "images", arrays


def test_folder_reads_every_image_in_minus_one_to_one(image_folder):
    folder, arrays = image_folder
    ds = ImageDataset(folder, flip=False)
    assert len(ds) == len(arrays)
    x = ds[2]
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32
    expected = torch.from_numpy(arrays[2]).permute(2, 0, 1).float() / 127.5 - 1
    torch.testing.assert_close(x, expected)
    assert -1 <= x.min() and x.max() <= 1


def test_tar_reads_the_same_images_as_the_folder(image_folder, tmp_path):
    folder, _ = image_folder
    tar = tmp_path / "images.tar"
    with tarfile.open(tar, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.add(path, arcname=f"sub/{path.name}")
    a, b = ImageDataset(folder, flip=False), ImageDataset(tar, flip=False)
    assert len(a) == len(b) == 6
    for i in range(len(a)):
        torch.testing.assert_close(a[i], b[i], rtol=0, atol=0)


def test_flips_are_mirror_images_fixed_per_seed_and_epoch(image_folder):
    folder, _ = image_folder
    plain, flipping = ImageDataset(folder, flip=False), ImageDataset(folder, flip=True, seed=3)
    coins = [flipping.flipped(i) for i in range(len(flipping))]
    for i, coin in enumerate(coins):
        expected = plain[i].flip(-1) if coin else plain[i]
        torch.testing.assert_close(flipping[i], expected, rtol=0, atol=0)
    assert coins == [ImageDataset(folder, flip=True, seed=3).flipped(i) for i in range(6)]
    many = [flipping.flipped(i) for i in range(2000)]
    assert 0.45 < np.mean(many) < 0.55
    flipping.set_epoch(1)
    assert [flipping.flipped(i) for i in range(2000)] != many
    assert not any(plain.flipped(i) for i in range(100))


def test_resize_crops_the_centre_square():
    image = Image.new("RGB", (20, 10), (255, 0, 0))
    x = to_tensor(image, 5)
    assert x.shape == (3, 5, 5)
    torch.testing.assert_close(x[:, 2, 2], torch.tensor([1.0, -1.0, -1.0]), atol=1e-6, rtol=0)


def test_missing_or_empty_data_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError):
        ImageDataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        ImageDataset(tmp_path / "empty")


def test_epoch_batches_shard_like_a_distributed_sampler():
    n, batch, world = 23, 3, 2
    per_rank = [list(epoch_batches(n, batch, epoch=0, seed=1, rank=r, world_size=world)) for r in range(world)]
    assert all(len(b) == batches_per_epoch(n, batch, world) == 3 for b in per_rank)
    seen = [i for batches in per_rank for b in batches for i in b]
    assert len(seen) == len(set(seen)) == 18
    again = list(epoch_batches(n, batch, epoch=0, seed=1, rank=0, world_size=world))
    assert again == per_rank[0]
    assert list(epoch_batches(n, batch, epoch=0, seed=1, rank=0, world_size=world, start=2)) == per_rank[0][2:]
    assert list(epoch_batches(n, batch, epoch=1, seed=1, rank=0, world_size=world)) != per_rank[0]
    with pytest.raises(ValueError):
        batches_per_epoch(3, 4)

"""Image reading, size fitting and the output folder."""

import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from repaint.io import ImageError, load_image, save_image


@pytest.fixture
def rgb(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    return tmp_path / "rgb.png", pixels


def test_load_image_range_shape_and_exact_round_trip(rgb, tmp_path):
    path, pixels = rgb
    img = load_image(path)
    assert img.shape == (3, 6, 8) and img.dtype == torch.float32
    assert img.min() >= -1 and img.max() <= 1
    assert torch.equal(img, torch.from_numpy(pixels).permute(2, 0, 1).float() / 127.5 - 1)
    save_image(img, tmp_path / "back.png")
    assert (np.asarray(Image.open(tmp_path / "back.png")) == pixels).all()


@pytest.mark.parametrize("mode, words", [("RGBA", "alpha"), ("LA", "alpha"), ("L", "grayscale"), ("P", "palette")])
def test_non_rgb_images_warn_and_become_rgb(rgb, tmp_path, mode, words):
    path, _ = rgb
    other = tmp_path / f"{mode}.png"
    Image.open(path).convert(mode).save(other)
    with pytest.warns(UserWarning, match=words):
        img = load_image(other)
    assert img.shape == (3, 6, 8)


def test_rgba_drops_alpha_without_compositing(tmp_path):
    Image.new("RGBA", (4, 4), (200, 10, 10, 0)).save(tmp_path / "clear.png")
    with pytest.warns(UserWarning):
        img = load_image(tmp_path / "clear.png")
    assert torch.allclose(img[:, 0, 0], torch.tensor([200, 10, 10]) / 127.5 - 1)


def test_missing_and_corrupt_files_are_one_line_errors(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"garbage")
    for path, words in ((tmp_path / "none.png", "not found"), (tmp_path / "bad.png", "cannot read")):
        with pytest.raises(ImageError, match=words) as info:
            load_image(path)
        assert "\n" not in str(info.value)
    assert issubclass(ImageError, ValueError)


def test_16_bit_images_are_refused(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(tmp_path / "deep.png")
    with pytest.raises(ImageError, match="8-bit"):
        load_image(tmp_path / "deep.png")


def test_save_image_is_atomic_and_refuses_nan(tmp_path):
    bad = torch.zeros(3, 4, 4)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        save_image(bad, tmp_path / "x.png")
    assert os.listdir(tmp_path) == []
    save_image(torch.zeros(3, 4, 4), tmp_path / "sub/x.png")
    assert os.listdir(tmp_path / "sub") == ["x.png"]


def huge_png(path, width=14000, height=14000):
    """A PNG whose header claims width x height pixels (Pillow checks the size when opening, before decoding)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [10000, 14000])  # over Pillow's limit (a warning there), over twice it (an error)
def test_decompression_bombs_are_one_line_image_errors(tmp_path, side):

    from repaint.masks import MaskError, load_mask

    path = huge_png(tmp_path / "huge.png", side, side)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Pillow warning escapes either
        with pytest.raises(ImageError, match="safety limit") as info:
            load_image(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value)
        with pytest.raises(MaskError, match="safety limit"):
            load_mask(path)

"""Image reading (the one decoder: EXIF, transparency, bit depth, frames), size fitting and the output folder."""

import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from repaint.images import ImageError, load_image, read_rgb, save_image
from repaint.masks import read_keep_mask


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


@pytest.mark.parametrize("mode, words", [("RGBA", "transparency"), ("LA", "transparency"), ("L", "grayscale"),
                                         ("P", "palette")])
def test_non_rgb_images_warn_and_become_rgb(rgb, tmp_path, mode, words):
    path, _ = rgb
    other = tmp_path / f"{mode}.png"
    Image.open(path).convert(mode).save(other)
    with pytest.warns(UserWarning, match=words):
        img = load_image(other)
    assert img.shape == (3, 6, 8)


def test_transparency_is_composited_onto_white(tmp_path):
    pixels = np.zeros((4, 4, 4), np.uint8)
    pixels[..., :3] = (200, 10, 10)
    pixels[..., 3] = [[0], [255], [128], [0]]  # rows: clear, opaque, half, clear
    Image.fromarray(pixels, "RGBA").save(tmp_path / "clear.png")
    with pytest.warns(UserWarning, match="white"):
        rgb = read_rgb(tmp_path / "clear.png")
    assert (rgb[0] == 255).all() and (rgb[1] == (200, 10, 10)).all()
    assert np.abs(rgb[2, 0].astype(int) - (228, 132, 132)).max() <= 1  # 200*a + 255*(1-a) at a = 128/255


def test_missing_and_corrupt_files_are_one_line_errors(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"garbage")
    for path, words in ((tmp_path / "none.png", "not found"), (tmp_path / "bad.png", "cannot read")):
        with pytest.raises(ImageError, match=words) as info:
            load_image(path)
        assert "\n" not in str(info.value)
    assert issubclass(ImageError, ValueError)


def test_16_bit_images_are_scaled_not_saturated(tmp_path):
    deep = np.array([[0, 257, 32896, 65535]], np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    with pytest.warns(UserWarning, match="16-bit"):
        rgb = read_rgb(tmp_path / "deep.png")
    assert rgb[0, :, 0].tolist() == [0, 1, 128, 255] and (rgb[..., 0] == rgb[..., 2]).all()


def test_float_images_in_unit_range_are_scaled_and_others_refused(tmp_path):
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), "F").save(tmp_path / "unit.tif")
    with pytest.warns(UserWarning, match="float"):
        assert read_rgb(tmp_path / "unit.tif")[0, :, 1].tolist() == [0, 128, 255]
    Image.fromarray(np.array([[0.0, 3.0]], np.float32), "F").save(tmp_path / "hdr.tif")
    with pytest.raises(ImageError, match=r"outside \[0, 1\]"):
        read_rgb(tmp_path / "hdr.tif")


def _exif_photo(path, orientation):
    """A 4x2 (W x H) JPEG whose left half is dark, stored with an EXIF orientation tag."""
    pixels = np.full((2, 4, 3), 250, np.uint8)
    pixels[:, :2] = 5
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, quality=100, exif=exif)


def test_exif_orientation_is_applied_to_photos_and_masks(tmp_path):
    _exif_photo(tmp_path / "six.jpg", 6)    # displayed rotated 90 degrees clockwise: 2 wide, 4 tall
    rgb = read_rgb(tmp_path / "six.jpg")
    assert rgb.shape == (4, 2, 3) and rgb[:2].mean() < 60 and rgb[2:].mean() > 200   # the dark half is on top
    _exif_photo(tmp_path / "three.jpg", 3)  # upside down: the dark half on the right
    rgb = read_rgb(tmp_path / "three.jpg")
    assert rgb.shape == (2, 4, 3) and rgb[:, 2:].mean() < 60
    keep = read_keep_mask(tmp_path / "six.jpg")
    assert keep.shape == (4, 2) and not keep[:2].any() and keep[2:].all()


def test_mask_transparency_means_keep(tmp_path):
    layer = np.zeros((4, 4, 4), np.uint8)   # transparent everywhere ...
    layer[1:3, 1:3] = (0, 0, 0, 255)        # ... but for opaque black strokes
    Image.fromarray(layer, "RGBA").save(tmp_path / "layer.png")
    keep = read_keep_mask(tmp_path / "layer.png")
    assert keep.sum() == 12 and not keep[1:3, 1:3].any()
    white_strokes = layer.copy()
    white_strokes[1:3, 1:3] = (255, 255, 255, 255)
    Image.fromarray(white_strokes, "RGBA").save(tmp_path / "lama.png")
    assert (read_keep_mask(tmp_path / "lama.png", invert=True) == keep).all()


def test_multi_frame_files_are_refused(tmp_path):
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    for name in ("anim.gif", "pages.tif"):
        with pytest.raises(ImageError, match="2 frames"):
            read_rgb(tmp_path / name)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")
def test_non_regular_files_are_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(ImageError, match="not a regular file"):
        read_rgb(tmp_path / "pipe.png")


def test_bytes_and_paths_decode_alike(rgb):
    path, pixels = rgb
    assert (read_rgb(path.read_bytes()) == pixels).all() and (read_rgb(path) == pixels).all()


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


def test_one_rgba_photo_gives_one_input_in_the_cli_the_api_and_the_web(tmp_path):
    from click.testing import CliRunner

    from repaint import api
    from repaint.cli import cli
    from repaint.web.limits import Limits, decode_image

    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)   # every alpha level from clear to opaque
    Image.fromarray(rgba, "RGBA").save(tmp_path / "photo.png")
    mask = np.full((64, 64), 255, np.uint8)
    mask[20:40, 20:40] = 0
    Image.fromarray(mask).save(tmp_path / "mask.png")
    result = CliRunner().invoke(cli, ["inpaint", str(tmp_path / "photo.png"), str(tmp_path / "mask.png"), "--out",
                                      str(tmp_path / "out"), "--steps", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    cli_input = np.asarray(Image.open(tmp_path / "out" / "gt" / "photo.png"))
    with pytest.warns(UserWarning, match="transparency"):
        api_input = api.read_image(tmp_path / "photo.png")
    web_input = decode_image((tmp_path / "photo.png").read_bytes(), Limits())
    assert (cli_input == api_input).all() and (api_input == web_input).all()
    assert not (api_input == rgba[..., :3]).all()  # composited, not the stored colours

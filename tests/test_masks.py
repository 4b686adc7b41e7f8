import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from repaint.masks import (MASK_KINDS, MaskError, as_mask, load_mask, load_mask_folder, make_mask, make_masks,
                           mask_preview_grid, save_mask)

RANDOM_KINDS = ("wide", "narrow")
SIZES = (64, 128, 256, (96, 160), (200, 72))


@pytest.mark.parametrize("kind", list(MASK_KINDS))
@pytest.mark.parametrize("size", SIZES)
def test_shape_dtype_binary(kind, size):
    mask = make_mask(kind, size, seed=3)
    h, w = (size, size) if isinstance(size, int) else size
    assert mask.shape == (h, w) and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("kind", RANDOM_KINDS)
def test_random_kinds_are_deterministic(kind):
    assert torch.equal(make_mask(kind, 256, seed=7), make_mask(kind, 256, seed=7))
    different = [not torch.equal(make_mask(kind, 256, seed=7), make_mask(kind, 256, seed=s)) for s in range(8, 13)]
    assert all(different)


def test_make_masks_prefix_stable_and_matches_make_mask():
    five, three = make_masks("narrow", 5, 128, seed=11), make_masks("narrow", 3, 128, seed=11)
    assert five.shape == (5, 128, 128)
    assert torch.equal(five[:3], three)
    assert torch.equal(five[4], make_mask("narrow", 128, seed=[11, 4]))
    assert not torch.equal(five[0], five[1])
    assert make_masks("half", 0, 64).shape == (0, 64, 64)


def test_every_second_line():
    mask = make_mask("every_second_line", (10, 12))
    assert torch.all(mask[0::2] == 1) and torch.all(mask[1::2] == 0)
    assert mask.mean().item() == 0.5


@pytest.mark.parametrize("size", [64, 256, (32, 48)])
def test_super_resolve_2x_quarter_known(size):
    mask = make_mask("super_resolve_2x", size)
    assert mask.mean().item() == 0.25
    assert mask[0, 0] == 1 and mask[0, 1] == 0 and mask[1, 0] == 0 and mask[1, 1] == 0
    assert torch.all(mask[0::2, 0::2] == 1)


def test_half_sides():
    left = make_mask("half", 256)
    assert torch.all(left[:, :128] == 1) and torch.all(left[:, 128:] == 0)
    assert torch.equal(make_mask("half", 256, side="right"), left.flip(1))
    assert torch.equal(make_mask("half", 256, side="top"), left.T)
    assert torch.equal(make_mask("half", 256, side="bottom"), left.T.flip(0))
    odd = make_mask("half", (9, 9), side="right")
    assert odd.sum().item() == 9 * 4 and torch.all(odd[:, 5:] == 1)
    with pytest.raises(ValueError, match="left"):
        make_mask("half", 64, side="middle")


def test_expand_centre_64_at_256():
    mask = make_mask("expand", 256)
    assert mask.sum().item() == 64 * 64
    assert torch.all(mask[96:160, 96:160] == 1)
    rows, cols = torch.nonzero(mask, as_tuple=True)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (96, 159, 96, 159)
    small = make_mask("expand", (64, 128))
    assert small.sum().item() == 16 * 32 and torch.all(small[24:40, 48:80] == 1)


@pytest.mark.parametrize("kind, mean_ref", [("wide", 0.269), ("narrow", 0.284)])
def test_random_masks_match_lama_statistics(kind, mean_ref):
    """Hole fractions at 256 against LaMa's own generator (its code run with OpenCV, 3000 masks per kind):
    random_thick_256 mean 0.269 sd 0.127, random_thin_256 mean 0.284 sd 0.129; none above 0.5 (max_tamper_area).
    With 300 masks the standard error of the mean is ~0.0075, so +-0.03 is four standard errors."""
    masks = make_masks(kind, 300, 256, seed=0)
    hole = 1 - masks.mean(dim=(1, 2))
    assert abs(hole.mean().item() - mean_ref) < 0.03
    assert 0.10 < hole.std().item() < 0.15
    assert hole.max().item() <= 0.5
    assert (hole > 0).all()


def test_wide_draws_boxes_with_lama_odds():
    """Thick masks draw boxes with odds 0.3 : 1, and LaMa's generator (run with OpenCV) keeps 99.8 % of box masks
    but 63 % of stroke masks under the 0.5 area cap, so 32 % of kept masks are boxes (sd over 300 masks: 2.7 %).
    A union of at most 3 axis-aligned boxes has few 2x2 windows with an odd number of hole pixels (corners only);
    round-capped strokes have many."""
    hole = 1 - make_masks("wide", 300, 256, seed=5)
    window = hole[:, 1:, 1:] + hole[:, :-1, 1:] + hole[:, 1:, :-1] + hole[:, :-1, :-1]
    corners = ((window == 1) | (window == 3)).sum(dim=(1, 2))
    box_like = (corners <= 30).float().mean().item()
    assert 0.22 < box_like < 0.42


def test_random_masks_scale_with_size():
    for kind in RANDOM_KINDS:
        fractions = [1 - make_masks(kind, 100, size, seed=2).mean().item() for size in (64, (128, 256))]
        assert all(0.2 < f < 0.36 for f in fractions), (kind, fractions)


def test_errors():
    with pytest.raises(ValueError, match="valid kinds: wide, narrow"):
        make_mask("circle", 64)
    for bad in (4, (64, 0), (64.0, 64), "64"):
        with pytest.raises(ValueError, match="mask size"):
            make_mask("half", bad)
    with pytest.raises(ValueError):
        as_mask(torch.full((4, 4), 0.5))
    with pytest.raises(ValueError):
        as_mask(torch.ones(2, 4, 4))


def test_save_load_roundtrip(tmp_path):
    mask = make_mask("narrow", (48, 80), seed=1)
    path = tmp_path / "sub" / "m.png"
    save_mask(mask[None], path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.png"]  # no temp file left
    pixels = np.asarray(Image.open(path))
    assert pixels.dtype == np.uint8 and set(np.unique(pixels)) <= {0, 255}
    assert np.array_equal(pixels == 255, mask.numpy() == 1)  # white = keep
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(load_mask(path), mask)
        assert torch.equal(load_mask(path, invert=True), 1 - mask)
    assert load_mask(path, size=(24, 40)).shape == (24, 40)
    assert torch.equal(load_mask(path, size=(96, 160))[::2, ::2], mask)


def test_load_thresholds_grey_with_one_warning(tmp_path):
    grey = np.array([[0, 100, 127], [128, 200, 255]], np.uint8)
    Image.fromarray(grey).convert("RGB").save(tmp_path / "g.png")
    with pytest.warns(UserWarning, match="thresholded at 0.5") as record:
        mask = load_mask(tmp_path / "g.png")
    assert len(record) == 1
    assert mask.tolist() == [[0, 0, 0], [1, 1, 1]]


def test_load_errors(tmp_path):
    with pytest.raises(MaskError, match="not found"):
        load_mask(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(MaskError, match="cannot read mask"):
        load_mask(tmp_path / "bad.png")
    assert issubclass(MaskError, ValueError)


def test_load_mask_folder(tmp_path):
    for name in ("b.png", "a.jpg", "c.png"):
        save_mask(torch.ones(8, 8), tmp_path / "tmp.png")
        (tmp_path / "tmp.png").rename(tmp_path / name)
    (tmp_path / "notes.txt").write_text("x")
    found = load_mask_folder(tmp_path)
    assert list(found) == ["a", "b", "c"] and found["a"].name == "a.jpg"
    (tmp_path / "a.png").write_bytes((tmp_path / "b.png").read_bytes())
    with pytest.raises(MaskError, match="two masks"):
        load_mask_folder(tmp_path)
    with pytest.raises(MaskError, match="not found"):
        load_mask_folder(tmp_path / "nope")


def test_preview_grid(tmp_path):
    masks = make_masks("half", 3, (8, 10))
    mask_preview_grid(masks, tmp_path / "grid.png", ncol=2, gap=2)
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape == (8 * 2 + 2, 10 * 2 + 2)
    assert np.array_equal(grid[:8, :10] == 255, masks[0].numpy() == 1)
    assert (grid[8:10] == 128).all() and (grid[:8, 10:12] == 128).all()
    assert (grid[10:, 12:] == 128).all()  # empty cell

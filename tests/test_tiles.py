"""Fit "tile": model-sized tiles at the photo's own resolution, phase by phase, each tile conditioned on the photo's
known pixels and on the tiles filled before it."""

import numpy as np
import pytest

from evaluation_helpers import SIZE, tiny_model
from repaint import api
from repaint.images import ImageError
from repaint.inpainter import Inpainter
from repaint.settings import SamplerSettings
from repaint.windows import _overlap, plan_windows, tile_phases

QUICK = SamplerSettings(steps=3, jump_length=1, jump_n_sample=1)


@pytest.fixture(scope="module")
def inpainter(tmp_path_factory):
    return Inpainter.load(str(tiny_model(tmp_path_factory.mktemp("tiles") / "tiny.safetensors")))


class Recorder:
    """Stands in for an Inpainter: fills every unknown pixel with mid-grey and records each batch's masks."""

    def __init__(self, real):
        self.real, self.image_size, self.masks = real, real.image_size, []

    def __getattr__(self, name):   # device, config, plan, unet: what choose_batch reads
        return getattr(self.real, name)

    def diffusion(self, settings):
        return self.real.diffusion(settings)

    def __call__(self, images, masks, seeds, settings, labels=None, classifier_scale=1.0, callback=None):
        self.masks.append(masks.clone())
        return images * masks + 0.0 * (1 - masks)


def photo(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def scratch(h, w):
    keep = np.ones((h, w), bool)
    keep[h // 2:h // 2 + 3, 2:w - 2] = False
    keep[4:h - 4, w // 3:w // 3 + 2] = False
    return keep


@pytest.mark.parametrize("shape", [(100, 130), (SIZE, SIZE), (SIZE + 1, 5 * SIZE), (97, 33)])
def test_tiles_cover_the_hole_inside_the_photo_and_never_overlap_within_a_phase(shape):
    h, w = shape
    hole = ~scratch(h, w)
    hole[0, 0] = hole[-1, -1] = True                       # corners: the tiles reach every border
    phases = tile_phases(hole, SIZE)
    covered = np.zeros_like(hole)
    for phase in phases:
        for i, a in enumerate(phase):
            assert a.height == a.width == SIZE and a.top >= 0 and a.left >= 0
            assert a.top + SIZE <= h and a.left + SIZE <= w
            assert hole[a.top:a.top + SIZE, a.left:a.left + SIZE].any()
            assert not any(_overlap(a, b) for b in phase[i + 1:])
            covered[a.top:a.top + SIZE, a.left:a.left + SIZE] = True
    assert covered[hole].all()
    assert len(phases) <= 4


def test_the_plan_counts_batches_phase_by_phase():
    keep = scratch(100, 130)
    layout = plan_windows(keep, SIZE, "tile", n_samples=2, batch_size=3, calls_per_batch=7)
    assert layout.fit == "tile" and layout.phases
    assert sorted(i for p in layout.phases for i in p) == list(range(len(layout.windows)))
    assert layout.batches == sum(-(-len(p) * 2 // 3) for p in layout.phases)
    assert layout.calls == 7 * layout.batches


def test_later_phases_see_earlier_fills_as_known(inpainter):
    image, keep = photo(100, 130), scratch(100, 130)
    fake = Recorder(inpainter)
    layout = api.plan(inpainter, keep, "tile", QUICK)
    result = api.inpaint(fake, image, keep, settings=QUICK, fit="tile")
    assert len(fake.masks) == layout.batches
    out = result.samples[0]
    assert np.array_equal(out[keep], image[keep]) and (out[~keep] == 128).all()   # (0 + 1) * 127.5 rounds to 128
    # a tile of phase 2 whose overlap with a phase-1 tile holds hole pixels sees them as known (phase 1 filled them)
    assert all(len(p) <= layout.batch_size for p in layout.phases[:2])      # one batch per phase here
    checked = 0
    for a in (layout.windows[i] for i in layout.phases[0]):
        for j, i in enumerate(layout.phases[1]):
            b = layout.windows[i]
            top, left = max(a.top, b.top), max(a.left, b.left)
            bottom, right = min(a.top + a.height, b.top + b.height), min(a.left + a.width, b.left + b.width)
            if bottom <= top or right <= left or keep[top:bottom, left:right].all():
                continue
            seen = fake.masks[1][j, 0].numpy() > 0.5
            region = seen[top - b.top:bottom - b.top, left - b.left:right - b.left]
            assert region[~keep[top:bottom, left:right]].all()
            checked += 1
    assert checked


def test_tiled_inpaint_keeps_known_bytes_and_makes_the_planned_calls(inpainter):
    image, keep = photo(90, 110, seed=1), scratch(90, 110)
    calls = []
    handle = inpainter.unet.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        result = api.inpaint(inpainter, image, keep, settings=QUICK, fit="tile", seeds=[0, 1])
    finally:
        handle.remove()
    layout = api.plan(inpainter, keep, "tile", QUICK, n_samples=2)
    assert result.fit == "tile" and len(calls) == layout.calls
    for sample in result.samples.values():
        assert sample.shape == image.shape and np.array_equal(sample[keep], image[keep])
    again = api.inpaint(inpainter, image, keep, settings=QUICK, fit="tile", seeds=[0, 1], batch_size=1)
    assert all(np.array_equal(again.samples[s], result.samples[s]) for s in (0, 1))   # batching changes nothing


@pytest.mark.parametrize("case", ["one_pixel", "every_border", "many_spots", "whole_photo"])
def test_bad_inputs(case, inpainter):
    h, w = 70, 80
    image, keep = photo(h, w, seed=2), np.ones((h, w), bool)
    if case == "one_pixel":
        keep[30, 40] = False
    elif case == "every_border":
        keep[:2], keep[-2:], keep[:, :2], keep[:, -2:] = False, False, False, False
    elif case == "many_spots":
        keep[np.random.default_rng(0).random((h, w)) < 0.1] = False
    else:
        keep[:] = False
    fake = Recorder(inpainter)
    if case == "whole_photo":
        with pytest.warns(UserWarning, match="all black"):
            result = api.inpaint(fake, image, keep, settings=QUICK, fit="tile")
    else:
        result = api.inpaint(fake, image, keep, settings=QUICK, fit="tile")
    out = result.samples[0]
    assert np.array_equal(out[keep], image[keep]) and (out[~keep] == 128).all()
    if case == "one_pixel":
        assert len(result.windows) == 1


def test_a_photo_smaller_than_a_tile_is_a_one_line_error(inpainter):
    keep = np.ones((20, 100), bool)
    keep[5, 5] = False
    with pytest.raises(ImageError, match="smaller than the model"):
        api.inpaint(inpainter, photo(20, 100), keep, settings=QUICK, fit="tile")

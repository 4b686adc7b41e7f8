"""repaint.api: photos of any size in, full-size photos out (fit strategies, windows, streaming, memory)."""

import tracemalloc

import numpy as np
import pytest
import torch
from PIL import Image

from evaluation_helpers import SIZE, image_folder, tiny_model
from repaint import api
from repaint import evaluation as ev
from repaint.images import ImageError, OutputDirs
from repaint.masks import MaskError
from repaint.inpainter import Inpainter
from repaint.settings import SamplerSettings
from repaint.windows import _overlap, crop_windows, resolve_fit, window_view

QUICK = SamplerSettings(steps=3, jump_length=1, jump_n_sample=1)


@pytest.fixture(scope="module")
def inpainter(tmp_path_factory):
    return Inpainter.load(str(tiny_model(tmp_path_factory.mktemp("api") / "tiny.safetensors")))


def photo(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def keep_mask(h, w, *holes):
    keep = np.ones((h, w), bool)
    for y0, y1, x0, x1 in holes:
        keep[y0:y1, x0:x1] = False
    return keep


def inside(window, h, w):
    return window.top >= 0 and window.left >= 0 and window.top + window.height <= h and window.left + window.width <= w


def test_each_hole_region_gets_a_square_window_inside_the_photo():
    h, w = 300, 400
    keep = keep_mask(h, w, (10, 20, 10, 30), (150, 160, 390, 400), (290, 300, 0, 5), (200, 210, 200, 210))
    windows = crop_windows(~keep, SIZE)
    assert len(windows) == 4
    for win in windows:
        assert win.height == win.width >= SIZE and inside(win, h, w)
    hole = ~keep
    covered = np.zeros_like(hole)
    for win in windows:
        covered[win.top:win.top + win.height, win.left:win.left + win.width] = True
    assert covered[hole].all()                                        # every hole pixel is in a window


def test_nearby_holes_share_one_window_and_windows_never_overlap():
    keep = keep_mask(200, 200, (50, 55, 50, 55), (60, 65, 60, 65), (150, 160, 150, 160))
    windows = crop_windows(~keep, SIZE)
    assert len(windows) == 2
    for a in range(len(windows)):
        for b in range(a + 1, len(windows)):
            assert not _overlap(windows[a], windows[b])


def test_thousands_of_thin_holes_merge_quickly():
    keep = np.ones((600, 600), bool)
    keep[::2] = False                                                  # every second line: 300 regions
    windows = crop_windows(~keep, SIZE)
    assert len(windows) == 1 and inside(windows[0], 600, 600)


def test_a_hole_wider_than_the_photo_is_tall_sticks_out_but_is_pasted_inside(inpainter):
    image = photo(40, 100)
    keep = keep_mask(40, 100, (10, 14, 0, 100))                       # a scratch across the whole width
    result = api.inpaint(inpainter, image, keep, settings=QUICK, seeds=[0], fit="crop")
    (win,) = result.windows
    assert win.height == win.width == 100 and win.top < 0              # centred on the photo, outside unknown
    assert (result.samples[0][keep] == image[keep]).all()
    assert (result.samples[0][~keep] != image[~keep]).any()


@pytest.mark.parametrize("fit, shape", [("crop", (70, 90)), ("resize", (70, 90)), ("auto", (20, 50)),
                                        ("none", (SIZE, SIZE))])
def test_outside_the_hole_is_the_original_bytes(inpainter, fit, shape):
    h, w = shape
    image = photo(h, w, seed=3)
    keep = keep_mask(h, w, (0, 6, 0, 6), (h - 5, h, w - 7, w), (h // 2, h // 2 + 4, 3, w - 3))  # corners and a band
    result = api.inpaint(inpainter, image, keep, settings=QUICK, seeds=[1, 2], fit=fit)
    assert set(result.samples) == {1, 2}
    for sample in result.samples.values():
        assert sample.shape == image.shape and sample.dtype == np.uint8
        assert np.array_equal(sample[keep], image[keep])
        assert (sample[~keep] != image[~keep]).any()
    assert not np.array_equal(result.samples[1], result.samples[2])
    assert all(g.shape == (3, SIZE, SIZE) for g in result.window_gt)   # model-size views stay available


def test_auto_picks_by_size(inpainter):
    assert resolve_fit("auto", SIZE, SIZE, SIZE) == "none"
    assert resolve_fit("auto", 100, 64, SIZE) == "crop"
    assert resolve_fit("auto", 100, 20, SIZE) == "resize"
    with pytest.raises(ImageError, match="fit"):
        resolve_fit("none", 100, 64, SIZE)


def test_auto_tiles_a_hole_whose_window_would_be_scaled_and_crops_one_that_fits(monkeypatch):
    from repaint import windows

    small = keep_mask(300, 400, (100, 110, 200, 212))                       # a spot: one window at scale 1
    plan = windows.plan_windows(small, SIZE, "auto")
    assert plan.fit == "crop" and all(w.height == w.width == SIZE for w in plan.windows)
    scratch = keep_mask(300, 400, (150, 153, 10, 390))                      # a 380-px scratch, 3 px wide
    assert max(w.height for w in crop_windows(~scratch, SIZE)) > SIZE       # crop would scale it down
    plan = windows.plan_windows(scratch, SIZE, "auto")
    assert plan.fit == "tile" and plan.phases
    assert all(w.height == w.width == SIZE for w in plan.windows)           # the photo's own resolution
    hole = ~scratch
    covered = np.zeros_like(hole)
    for w in plan.windows:
        covered[w.top:w.top + w.height, w.left:w.left + w.width] = True
    assert covered[hole].all()
    assert windows.plan_windows(scratch, SIZE, "crop").fit == "crop"        # asked for by name: still available
    monkeypatch.setattr(windows, "MAX_TILES", len(plan.windows) - 1)
    with pytest.raises(ImageError, match="tiles .* use fit 'resize'"):
        windows.plan_windows(scratch, SIZE, "auto")


def test_a_hole_larger_than_the_model_is_downscaled_and_every_hole_pixel_stays_unknown():
    image, keep = photo(200, 200), keep_mask(200, 200, (40, 140, 50, 170))
    (win,) = crop_windows(~keep, SIZE)
    assert win.height > SIZE
    gt, model_keep = window_view(image, keep, win, SIZE)
    assert gt.shape == (3, SIZE, SIZE) and model_keep.shape == (1, SIZE, SIZE)
    scale = win.height / SIZE
    ys, xs = np.nonzero(~keep)
    my = ((ys - win.top) / scale).astype(int)
    mx = ((xs - win.left) / scale).astype(int)
    assert (model_keep[0, my, mx] == 0).all()                         # no hole pixel is marked known


def test_bad_masks_are_one_line_errors(inpainter):
    image = photo(40, 40)
    with pytest.raises(MaskError, match="mask must have its image's size"):
        api.inpaint(inpainter, image, np.ones((40, 41), bool), settings=QUICK)
    with pytest.raises(MaskError, match="no pixel to fill"):
        api.inpaint(inpainter, image, np.ones((40, 40), bool), settings=QUICK)
    with pytest.raises(ValueError, match="seed"):
        api.inpaint(inpainter, image, keep_mask(40, 40, (0, 5, 0, 5)), settings=QUICK, seeds=[-1])


def test_results_do_not_depend_on_batching(inpainter):
    image = photo(90, 90, seed=5)
    keep = keep_mask(90, 90, (5, 10, 5, 10), (70, 80, 70, 80))
    a = api.inpaint(inpainter, image, keep, settings=QUICK, seeds=[4, 7], batch_size=1)
    b = api.inpaint(inpainter, image, keep, settings=QUICK, seeds=[4, 7], batch_size=4)
    for seed in (4, 7):
        assert np.array_equal(a.samples[seed], b.samples[seed])


def test_progress_counts_planned_calls_and_cancel_stops(inpainter):
    image, keep = photo(64, 64), keep_mask(64, 64, (1, 5, 1, 5), (50, 60, 50, 60))
    seen = []
    api.inpaint(inpainter, image, keep, settings=QUICK, seeds=[0, 1], batch_size=2, callback=seen.append)
    total = api.planned_calls(inpainter, QUICK, keep, n_samples=2, batch_size=2)
    assert [p.calls for p in seen] == list(range(1, total + 1)) and {p.total for p in seen} == {total}

    # samplers that make several calls per step report them all: progress still ends at the planned total
    multi = SamplerSettings(steps=3, sampler="lanpaint", options={"langevin_steps": 2})
    seen = []
    api.inpaint(inpainter, image, keep, settings=multi, seeds=[0], callback=seen.append)
    total = api.planned_calls(inpainter, multi, keep, n_samples=1)
    assert total == 9 and [p.calls for p in seen] == [3, 6, 9]

    def cancel(progress):
        raise api.Cancelled

    with pytest.raises(api.Cancelled):
        api.inpaint(inpainter, image, keep, settings=QUICK, callback=cancel)


def test_write_result_is_full_size_and_complete(inpainter, tmp_path):
    image, keep = photo(50, 70), keep_mask(50, 70, (10, 20, 10, 20))
    result = api.inpaint(inpainter, image, keep, settings=QUICK, seeds=[3])
    paths = api.write_result(result, tmp_path, "p")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in paths) == [
        "gt/p.png", "gt_keep_mask/p.png", "gt_masked/p.png", "inpainted/p_s3.png"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "inpainted/p_s3.png")), result.samples[3])
    assert np.array_equal(np.asarray(Image.open(tmp_path / "gt/p.png")), image)
    masked = np.asarray(Image.open(tmp_path / "gt_masked/p.png"))
    assert (masked[~keep] == 0).all() and np.array_equal(masked[keep], image[keep])
    assert np.array_equal(np.asarray(Image.open(tmp_path / "gt_keep_mask/p.png")) == 255, keep)
    elsewhere = api.write_result(result, OutputDirs.under(tmp_path / "b", {"gt": tmp_path / "inputs"}), "p")
    assert tmp_path / "inputs" / "p.png" in elsewhere               # a reference config's own folder names


def _eval_peak(tmp_path, inpainter, n):
    images = image_folder(tmp_path / f"images{n}", n=n, size=384)     # 442 kB each as uint8
    tracemalloc.start()
    report = ev.evaluate(images, tmp_path / f"out{n}", inpainter, "half", settings=QUICK, metrics=("psnr",),
                         batch_size=1, progress=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert report.complete
    return peak


def test_eval_memory_does_not_grow_with_the_number_of_images(inpainter, tmp_path):
    torch.set_num_threads(1)
    _eval_peak(tmp_path / "warm-up", inpainter, 1)                    # one-time allocations (imports, caches)
    few, many = _eval_peak(tmp_path, inpainter, 2), _eval_peak(tmp_path, inpainter, 8)
    # holding every image would add 6 x 384 x 384 x 3 bytes (2.7 MB) of uint8 alone, more as floats
    assert many < few + 1_500_000, (few, many)


@pytest.mark.parametrize("fit, shape, holes", [
    ("auto", (90, 90), [(5, 10, 5, 10), (70, 80, 70, 80)]),            # two windows at full resolution
    ("tile", (40, 150), [(18, 22, 5, 145)]),                             # a long scratch: tiles in phases
])
def test_an_averaged_sample_is_the_mean_of_its_draws_run_one_by_one(inpainter, fit, shape, holes):
    """average K: sample s is the rounded pixel mean of the plain runs with seeds s*K .. s*K+K-1, whole runs (tiles
    included); the calls are K times one sample's, and outside the hole the bytes are the photo's."""
    image = photo(*shape, seed=8)
    keep = keep_mask(*shape, *holes)
    averaged = SamplerSettings(steps=3, jump_length=1, jump_n_sample=1, average=3)
    out = api.inpaint(inpainter, image, keep, settings=averaged, seeds=[0, 2], fit=fit, batch_size=2)
    for seed in (0, 2):
        draws = api.inpaint(inpainter, image, keep, settings=QUICK, seeds=api.draw_seeds(seed, 3), fit=fit)
        mean = np.rint(np.mean([d.astype(float) for d in draws.samples.values()], axis=0)).astype(np.uint8)
        assert np.array_equal(out.samples[seed], mean)
        assert np.array_equal(out.samples[seed][keep], image[keep])
    assert not np.array_equal(out.samples[0], out.samples[2])            # the two samples' draws differ
    one = api.plan(inpainter, keep, fit, QUICK, batch_size=1)
    assert api.plan(inpainter, keep, fit, averaged, n_samples=2, batch_size=1).calls == 6 * one.calls


def test_averaging_checks_its_count_and_its_seeds():
    assert api.draw_seeds(5) == [5] and api.draw_seeds(5, 4) == [20, 21, 22, 23]
    with pytest.raises(ValueError, match="out of range"):
        api.draw_seeds(api.MAX_SEED, 2)
    for bad in (0, 65, 2.5, True):
        with pytest.raises(ValueError, match="average must be a whole number of draws in 1..64"):
            SamplerSettings(average=bad)
    from repaint.samplers import describe

    assert describe(SamplerSettings(average=4)).endswith(" average=4") and "average" not in describe(QUICK)

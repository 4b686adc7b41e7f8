"""The web page in a real browser (Playwright driving Debian's chromium): upload, paint, run, see the result.

The browser is ``$REPAINT_CHROMIUM`` (default ``/usr/bin/chromium``; ``apt-get install chromium``): the browsers
Playwright downloads itself are not used. With ``REPAINT_WRITE_DOCS=1`` the test also writes docs/web.png.
"""

from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect
from web_server import running_server

ROOT = Path(__file__).resolve().parents[1]
FACE = ROOT / "examples" / "face.png"
CHROMIUM = os.environ.get("REPAINT_CHROMIUM", "/usr/bin/chromium")
MAGENTA = (255, 0, 255)  # the page's brush colour


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("browser")) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no chromium at {CHROMIUM}: apt-get install chromium, or set REPAINT_CHROMIUM")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    page.set_default_timeout(60_000)
    page.goto(server, wait_until="load")
    page.wait_for_selector("#editor canvas", state="attached")
    yield page
    page.close()


def _open(page, photo: Path) -> None:
    """Open a photo with the page's "Open a photo" button and wait until the page has read it."""
    with page.expect_file_chooser() as chooser:
        page.locator("#open").click()
    chooser.value.set_files(str(photo))
    page.locator("#plan").get_by_text("Paint over").wait_for()


def _stroke(page, width: int, height: int, row: float = 0.375, start: float = 0.28, end: float = 0.72,
            brush: int | None = None, tool: str = "Brush", until: str = "Plan:") -> None:
    """One horizontal stroke across the photo (fractions of its size) with the default brush or radius ``brush``."""
    zoom = page.locator("#editor").get_by_text(re.compile(r"^\d+%$"))
    zoom.wait_for()
    page.get_by_label(tool, exact=True).click()
    if brush is not None:
        page.get_by_label("Brush Size").click()
        page.locator("#editor input[type=range]").evaluate(
            "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); }", brush)
        page.get_by_label("Brush Size").click()
    canvas = page.locator("#editor canvas").first
    # the editor takes a moment to set up a photo it was given; a stroke before that leaves no mark: paint again
    for attempt in range(5):
        box = canvas.bounding_box()
        scale = int(zoom.inner_text()[:-1]) / 100       # screen pixels per image pixel; the photo is centred
        left, top = (box["width"] - width * scale) / 2, (box["height"] - height * scale) / 2
        y = box["y"] + top + row * height * scale
        page.mouse.move(box["x"] + left + start * width * scale, y)
        page.mouse.down()
        page.mouse.move(box["x"] + left + end * width * scale, y, steps=1)  # each step redraws: slow in CI
        page.mouse.up()
        page.mouse.move(box["x"] + 5, box["y"] + box["height"] - 5)  # the brush outline away from the photo
        try:
            page.locator("#plan").get_by_text(until).wait_for(timeout=5_000)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError("the stroke left no mark")


def _mask(page) -> np.ndarray:
    """The page's mask preview (what the run will use): True = fill."""
    page.locator("#plan").get_by_text("Plan:").wait_for()
    src = page.locator("#mask-preview img").first.get_attribute("src")
    return np.asarray(Image.open(io.BytesIO(httpx.get(src, timeout=30).content)).convert("L")) < 128


def _short_schedule(page, steps: int, jump_length: int = 1, jump_n_sample: int = 1) -> None:
    page.locator("#schedule").get_by_label("custom").check()
    page.locator("#steps input").fill(str(steps))
    page.locator("#jump-length input").fill(str(jump_length))
    page.locator("#jump-n-sample input").fill(str(jump_n_sample))


def _fetch(page, selector: str) -> np.ndarray:
    src = page.locator(selector).first.get_attribute("src")
    return np.asarray(Image.open(io.BytesIO(httpx.get(src, timeout=30).content)).convert("RGB"))


def _dilate(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def _downloads(page) -> list[str]:
    return page.locator("#downloads a").evaluate_all("els => els.map(e => e.href.split('/').pop())")


@pytest.mark.parametrize("size", [64, 2000])
def test_the_default_brush_marks_a_sensible_share_of_any_photo(page, tmp_path, size):
    """One stroke across 44 % of the photo's width with the default brush: a band, not the whole face."""
    photo = FACE
    if size != 64:
        y, x = np.mgrid[0:size * 3 // 4, 0:size]
        photo = tmp_path / "big.png"
        Image.fromarray(np.stack([x * 255 // size, y * 255 // size, (x + y) * 127 // size], -1).astype(np.uint8)) \
            .save(photo)
    _open(page, photo)
    width, height = Image.open(photo).size
    _stroke(page, width, height)
    hole = _mask(page)
    assert hole.shape == (height, width)
    assert 0.005 < hole.mean() < 0.08, f"the stroke covers {hole.mean():.1%} of the photo"
    assert page.locator("#plan").get_by_text("network calls").count()        # the plan shows before Inpaint
    notes = page.locator("#model-note").inner_text()
    assert ("trained on 64x64 faces only" in notes and "repaint models" in notes) == (size != 64)
    if size != 64:   # the fit menu changes the plan: the whole photo scaled to the model
        page.locator("#fit input").click()
        page.get_by_role("option", name="resize", exact=True).click()
        page.locator("#plan").get_by_text(f"the whole {width}x{height} photo scaled to 64x64").wait_for()


def test_paint_run_compare_use_as_input_and_run_again(page, server):
    assert page.locator("#stop").is_disabled()                                 # nothing runs: no Stop
    _open(page, FACE)
    _stroke(page, 64, 64, brush=3)
    painted = _mask(page)
    assert 20 < painted.sum() < 64 * 64 // 4, "the stroke should cover a band of the face"
    notes = page.locator("#model-note").inner_text()
    assert "64x64 faces" in notes and "repaint models" not in notes   # the description; a face needs no notice
    _short_schedule(page, steps=4)
    page.locator("#run").click()
    page.locator("#status").get_by_text("network calls").wait_for()
    face = np.asarray(Image.open(FACE).convert("RGB"))
    result = _fetch(page, "#gallery img")
    assert result.shape == face.shape                       # full size, not a thumbnail
    changed = np.abs(result.astype(int) - face).max(axis=-1) > 0
    assert changed.sum() > 0.3 * painted.sum()              # the hole was filled anew
    assert not (changed & ~_dilate(painted)).any()          # and nothing else changed
    status = page.locator("#status").inner_text()
    assert "4 network calls" in status and "64x64" in status
    assert page.locator("#compare img").count() == 2        # before and after, one slider
    assert _downloads(page) == ["face_s0.png"]              # named after the photo and the seed
    expect(page.locator("#stop")).to_be_disabled()
    expect(page.locator("#run")).to_be_enabled()
    # undo and redo still work on the editor after the run
    page.locator("#editor").get_by_label("Undo", exact=True).first.click()
    page.locator("#plan").get_by_text("Paint over").wait_for()              # the stroke is gone
    page.locator("#editor").get_by_label("Redo", exact=True).first.click()
    assert np.array_equal(_mask(page), painted)                               # and back
    _stroke(page, 64, 64, tool="Erase")                                       # the eraser works after a run too
    deadline = time.monotonic() + 30
    while True:
        said = page.locator("#plan").inner_text()
        if "Paint over" in said or ("Plan:" in said and _mask(page).sum() < painted.sum()):
            break
        assert time.monotonic() < deadline, "the eraser did not erase"
        time.sleep(0.3)
    # go on from the result: it becomes the photo, nothing painted; a new stroke and a second run
    page.locator("#use").click()
    page.locator("#plan").get_by_text("Paint over").wait_for()
    _stroke(page, 64, 64, row=0.75, brush=3)
    second_hole = _mask(page)
    assert not (second_hole & painted).any()                # the first stroke is gone with the old photo
    page.locator("#seed input").fill("5")
    page.locator("#run").click()
    deadline = time.monotonic() + 60
    while _downloads(page) != ["face_s0_s5.png"]:            # the result's name, and the new seed
        assert time.monotonic() < deadline, _downloads(page)
        time.sleep(0.2)
    again = _fetch(page, "#gallery img")
    changed = np.abs(again.astype(int) - result).max(axis=-1) > 0
    assert changed.any() and not (changed & ~_dilate(second_hole)).any()   # the first result kept outside it
    if os.environ.get("REPAINT_WRITE_DOCS") == "1":  # the README picture: the model's own schedule, 3 samples
        page.locator("#schedule").get_by_label("recommended").check()
        page.locator("#n-samples input[type=number]").fill("3")
        page.locator("#n-samples input[type=number]").press("Enter")
        page.locator("#run").click()
        page.locator("#status").get_by_text("3 sample(s)").wait_for(timeout=600_000)
        expect(page.locator("#stop")).to_be_disabled()
        page.screenshot(path=str(ROOT / "docs" / "web.png"), full_page=True)


def test_several_samples_come_with_a_zip_and_the_gallery_picks_the_compared_one(page, server):
    _open(page, FACE)
    _stroke(page, 64, 64, brush=3)
    _short_schedule(page, steps=4)
    for attempt in range(3):   # under load a change can be answered before the one after it: set it again
        page.locator("#n-samples input[type=number]").fill("2")
        page.locator("#n-samples input[type=number]").press("Enter")
        try:
            page.locator("#plan").get_by_text("for 2 sample(s)").wait_for(timeout=20_000)
            break
        except PlaywrightTimeout:
            continue
    page.locator("#run").click()
    page.locator("#status").get_by_text("2 sample(s)").wait_for()
    assert _downloads(page) == ["face_s0.png", "face_s1.png", "face_samples.zip"]
    page.locator("#zip").wait_for()                          # the ZIP button shows for several samples
    first = _fetch(page, "#compare img:nth-of-type(2)")
    page.locator("#gallery button.thumbnail-item").nth(1).click()
    deadline = time.monotonic() + 30
    while np.array_equal(_fetch(page, "#compare img:nth-of-type(2)"), first):
        assert time.monotonic() < deadline, "picking the second sample did not change the comparison"
        time.sleep(0.2)


def test_progress_shows_calls_and_stop_cancels_the_run(page, server):
    _open(page, FACE)
    _stroke(page, 64, 64, brush=4)
    page.locator("#schedule").get_by_label("paper").check()   # 2,410 calls: minutes on a CPU
    page.locator("#run").click()
    page.get_by_text(re.compile(r"\b[1-9]\d*/2\.4k calls")).first.wait_for()   # calls done / total
    for _ in range(5):                                                        # one progress display, never more
        assert page.get_by_text(re.compile(r"/2\.4k calls")).count() <= 1
        time.sleep(0.1)
    page.get_by_text(re.compile(r"network calls, about \d+ (min \d+ )?s left")).first.wait_for()
    expect(page.locator("#stop")).to_be_enabled()
    expect(page.locator("#run")).to_be_disabled()
    page.locator("#preview img").first.wait_for()                           # the live x0 estimate, visible
    assert _fetch(page, "#preview img").shape == (64, 64, 3)                 # the window, at the photo's size
    page.locator("#stop").click()
    page.locator("#status").get_by_text("cancelled").wait_for()
    deadline = time.monotonic() + 30
    while httpx.get(f"{server}/api/health", timeout=10).json()["runs_admitted"]:  # the run let go of the device
        assert time.monotonic() < deadline, "the cancelled run kept the device"
        time.sleep(0.2)
    assert page.locator("#gallery img").count() == 0
    expect(page.locator("#stop")).to_be_disabled()
    expect(page.locator("#run")).to_be_enabled()
    # the device is free again: the next run starts and finishes
    _short_schedule(page, steps=4)
    page.locator("#run").click()
    page.locator("#gallery img").first.wait_for()

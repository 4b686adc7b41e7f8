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
    page.goto(server, wait_until="networkidle")
    page.wait_for_selector("#editor canvas", state="attached")
    yield page
    page.close()


def _upload_and_paint(page, brush: int) -> np.ndarray:
    """Upload the face, paint one horizontal stroke; returns the painted pixels (bool [64, 64]) read off the screen."""
    page.locator("#editor input[type=file]").first.set_input_files(str(FACE))
    zoom = page.locator("#editor").get_by_text(re.compile(r"^\d+%$"))
    zoom.wait_for()
    page.get_by_label("Brush", exact=True).click()
    page.get_by_label("Brush Size").click()
    page.locator("#editor input[type=range]").evaluate(
        "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); }", brush)
    page.get_by_label("Brush Size").click()
    canvas = page.locator("#editor canvas").first
    box = canvas.bounding_box()
    scale = int(zoom.inner_text()[:-1]) / 100       # screen pixels per image pixel; the photo is centred
    left, top = (box["width"] - 64 * scale) / 2, (box["height"] - 64 * scale) / 2
    y = box["y"] + top + 24 * scale                  # image row 24: the eyes
    page.mouse.move(box["x"] + left + 18 * scale, y)
    page.mouse.down()
    page.mouse.move(box["x"] + left + 46 * scale, y, steps=1)  # each step redraws the canvas: slow in CI
    page.mouse.up()
    page.mouse.move(box["x"] + 5, box["y"] + box["height"] - 5)  # the brush outline away from the photo
    shot = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")).astype(int)
    magenta = (np.abs(shot - MAGENTA).max(axis=-1) < 60)
    ys, xs = np.nonzero(magenta)
    rows, cols = ((ys - top) / scale).astype(int), ((xs - left) / scale).astype(int)
    inside = (rows >= 0) & (rows < 64) & (cols >= 0) & (cols < 64)
    painted = np.zeros((64, 64), bool)
    painted[rows[inside], cols[inside]] = True
    return painted


def _short_schedule(page, steps: int, jump_length: int = 1, jump_n_sample: int = 1) -> None:
    page.locator("#schedule").get_by_label("custom").check()
    page.locator("#steps input").fill(str(steps))
    page.locator("#jump-length input").fill(str(jump_length))
    page.locator("#jump-n-sample input").fill(str(jump_n_sample))


def _dilate(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def test_paint_a_stroke_run_and_the_result_differs_only_under_the_stroke(page, server):
    painted = _upload_and_paint(page, brush=3)
    assert 20 < painted.sum() < 64 * 64 // 4, "the stroke should cover a band of the face"
    _short_schedule(page, steps=4)
    page.locator("#run").click()
    result_img = page.locator("#gallery img").first
    result_img.wait_for()
    face = np.asarray(Image.open(FACE).convert("RGB"))
    result = np.asarray(Image.open(io.BytesIO(httpx.get(result_img.get_attribute("src"), timeout=30).content))
                        .convert("RGB"))
    assert result.shape == face.shape                       # full size, not a thumbnail
    changed = np.abs(result.astype(int) - face).max(axis=-1) > 0
    assert changed.sum() > 0.3 * painted.sum()              # the hole was filled anew
    assert not (changed & ~_dilate(painted)).any()          # and nothing else changed
    status = page.locator("#status").inner_text()
    assert "4 network calls" in status and "64x64" in status
    gif = Image.open(io.BytesIO(httpx.get(page.locator("#animation img").first.get_attribute("src"),
                                          timeout=30).content))
    assert gif.format == "GIF" and gif.n_frames == 4       # one x0 estimate per network call
    links = page.locator("#downloads a").evaluate_all("els => els.map(e => e.href)")
    assert len(links) == 1 and links[0].endswith("/inpainted_s0.png"), links
    if os.environ.get("REPAINT_WRITE_DOCS") == "1":  # the README's picture: the model's own schedule, 230 calls
        page.locator("#schedule").get_by_label("recommended").check()
        page.locator("#run").click()
        page.locator("#status").get_by_text("230 network calls").wait_for(timeout=300_000)
        page.screenshot(path=str(ROOT / "docs" / "web.png"), full_page=True)


def test_progress_shows_calls_and_stop_cancels_the_run(page, server):
    _upload_and_paint(page, brush=4)
    page.locator("#schedule").get_by_label("paper").check()   # 2,410 calls: minutes on a CPU
    page.locator("#run").click()
    page.get_by_text(re.compile(r"\b[1-9]\d*/2\.4k calls")).first.wait_for()   # calls done / total
    page.locator("#stop").click()
    page.locator("#status").get_by_text("cancelled").wait_for()
    deadline = time.monotonic() + 30
    while httpx.get(f"{server}/api/health", timeout=10).json()["runs_admitted"]:  # the run let go of the device
        assert time.monotonic() < deadline, "the cancelled run kept the device"
        time.sleep(0.2)
    assert page.locator("#gallery img").count() == 0
    # the device is free again: the next run starts and finishes
    _short_schedule(page, steps=4)
    page.locator("#run").click()
    page.locator("#gallery img").first.wait_for()

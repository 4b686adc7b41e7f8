"""The study page in a real browser: Debian's chromium driven by Playwright casts votes with keys and clicks against
the real server on 127.0.0.1, and the votes come out in the report."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter
from study_helpers import running_server

from repaint.study.report import build_report
from repaint.study.store import connect, create_study

CHROMIUM = os.environ.get("REPAINT_CHROMIUM", "/usr/bin/chromium")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# No skip when chromium is missing: the browser test is part of the suite (the README's test command installs it).
assert Path(CHROMIUM).is_file(), f"no chromium at {CHROMIUM}: apt install chromium, or set REPAINT_CHROMIUM"


def _face_results(root: Path) -> dict[str, Path]:
    """Three crops of the example face under its mask: "truth" fills the hole with the original pixels, "blur" with
    a heavily blurred copy (a visibly worse fill)."""
    face = Image.open(EXAMPLES / "face.png").convert("RGB")
    keep = np.asarray(Image.open(EXAMPLES / "face_mask.png").convert("L").resize(face.size)) > 127
    folders = {}
    for method in ("truth", "blur"):
        for sub in ("inpainted", "gt_masked"):
            (root / method / sub).mkdir(parents=True)
        folders[method] = root / method
    for k, name in enumerate(("face", "mirrored", "shifted")):
        img = face.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if k == 1 else face
        img = Image.fromarray(np.roll(np.asarray(img), 4 * k, axis=1)) if k == 2 else img
        px = np.asarray(img)
        masked = np.where(keep[..., None], px, 0).astype(np.uint8)
        blur = np.asarray(img.filter(ImageFilter.GaussianBlur(6)))
        for method, fill in (("truth", px), ("blur", np.where(keep[..., None], px, blur))):
            Image.fromarray(fill.astype(np.uint8)).save(folders[method] / "inpainted" / f"{name}_s0.png")
            Image.fromarray(masked).save(folders[method] / "gt_masked" / f"{name}.png")
    return folders


@pytest.fixture
def server(tmp_path):
    folders = _face_results(tmp_path / "res")
    db = tmp_path / "study.db"
    create_study(db, [folders["truth"], folders["blur"]], repeat_share=0.34, seed=0)   # 3 pairs + 1 repeat
    with running_server(db) as url:
        yield url, db


def test_votes_cast_in_the_browser_reach_the_report(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, db = server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 900, "height": 720})
        page.goto(f"{url}/?pid=alice")
        expect(page.locator("#pid")).to_have_value("alice")
        page.get_by_role("button", name="Start").click()
        actions = [("key", "1", "left"), ("key", "ArrowRight", "right"), ("click", "#left", "left"),
                   ("key", "2", "right")]
        for n, (how, what, _) in enumerate(actions):
            expect(page.locator("#count")).to_have_text(f"{n + 1} of 4")
            page.wait_for_function("() => ['masked', 'left-img', 'right-img'].every("
                                   "id => document.getElementById(id).complete && "
                                   "document.getElementById(id).naturalWidth > 0)")
            if n == 0:
                shot = os.environ.get("REPAINT_STUDY_SCREENSHOT", str(tmp_path / "study.png"))
                page.wait_for_timeout(100)
                page.screenshot(path=shot)
            page.wait_for_timeout(150)   # a human-like pause; the page ignores input until the images are shown
            if how == "key":
                page.keyboard.press(what)
            else:
                page.click(what)
        expect(page.locator("#done")).to_be_visible()
        page.keyboard.press("1")                                      # after the end: nothing more is recorded
        page.reload()                                                 # the participant comes back: still done
        page.get_by_role("button", name="Start").click()
        expect(page.locator("#done")).to_be_visible()
        browser.close()

    con = connect(db)
    rows = con.execute("SELECT side, rt_ms, rt_client_ms, rt_server_ms FROM trials WHERE participant = 'alice' "
                       "ORDER BY position").fetchall()
    assert [r["side"] for r in rows] == [side for *_, side in actions]
    for r in rows:   # the browser's timer was kept and is consistent with the server's
        assert r["rt_client_ms"] is not None and 100 <= r["rt_ms"] <= r["rt_server_ms"] + 250
    report = build_report(con, n_boot=200)
    assert report.cell("truth").votes == 3 and report.cell("truth").participants == 1
    chosen = con.execute("SELECT m.name FROM trials t JOIN methods m ON m.id = t.choice WHERE t.participant = "
                         "'alice' AND t.repeat_of IS NULL").fetchall()
    assert report.cell("truth").wins == sum(r[0] == "truth" for r in chosen)
    (alice,) = report.participants
    assert alice.participant == "alice" and alice.votes == 3 and alice.repeats == 1
    assert Path(os.environ.get("REPAINT_STUDY_SCREENSHOT", tmp_path / "study.png")).stat().st_size > 5000
    shutil.rmtree(tmp_path / "res")

"""Result folders and voters for the study tests."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def write_results(root: Path, methods, settings=("wide", "narrow"), names=("a", "b", "c"), size=8, seed=0) -> dict:
    """Folders in the layout of `repaint eval` (SETTING/inpainted/NAME_s0.png, SETTING/gt_masked/NAME.png), one per
    method, of the same masked inputs; returns {method: folder}."""
    g = torch.Generator().manual_seed(seed)
    folders = {}
    for method in methods:
        for setting in settings:
            for sub in ("inpainted", "gt_masked"):
                (root / method / setting / sub).mkdir(parents=True, exist_ok=True)
        folders[method] = root / method
    for setting in settings:
        for name in names:
            masked = torch.randint(0, 256, (size, size, 3), generator=g, dtype=torch.uint8).numpy()
            for method in methods:
                fill = torch.randint(0, 256, (size, size, 3), generator=g, dtype=torch.uint8).numpy()
                Image.fromarray(fill).save(root / method / setting / "inpainted" / f"{name}_s0.png")
                Image.fromarray(masked).save(root / method / setting / "gt_masked" / f"{name}.png")
    return folders


def side_of(con, token: str, method: str) -> str:
    """Which side shows ``method`` on trial ``token`` (the test peeks into the study file; a client cannot)."""
    row = con.execute("SELECT ml.name AS l, mr.name AS r FROM trials t JOIN methods ml ON ml.id = t.left_method "
                      "JOIN methods mr ON mr.id = t.right_method WHERE t.token = ?", (token,)).fetchone()
    assert method in (row["l"], row["r"])
    return "left" if row["l"] == method else "right"


def vote_all(con, participant: str, prefer: str, p: float, g: torch.Generator, rt_ms: float = 50.0,
             always: str | None = None) -> int:
    """Answer every trial of ``participant``: ``prefer`` with probability ``p`` (or always the side ``always``)."""
    from repaint.study.store import next_trial, record_vote

    n = 0
    while not (state := next_trial(con, participant))["done"]:
        token = state["trial"]["token"]
        if always:
            side = always
        else:
            want = side_of(con, token, prefer)
            side = want if float(torch.rand((), generator=g)) < p else ("right" if want == "left" else "left")
        assert record_vote(con, participant, token, side, rt_ms, now=None).recorded
        n += 1
    return n


def uint8(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


@contextmanager
def running_server(db: Path, **options):
    """The study app under uvicorn on 127.0.0.1 at a free port, in a thread; yields its base URL."""
    import uvicorn

    from repaint.study.server import make_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(make_app(db, **options), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the study server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)

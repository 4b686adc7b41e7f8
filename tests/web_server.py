"""A repaint web server on 127.0.0.1 in a background thread, for the web tests."""

from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import contextmanager

import httpx

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

SHORT = {"schedule": "custom", "steps": "4", "jump_length": "1", "jump_n_sample": "1"}  # 4 network calls


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(tmp_path, **limits):
    """Yield the base URL of a server with the bundled model on CPU and the given :class:`Limits` fields."""
    import uvicorn

    from repaint.web.limits import Limits
    from repaint.web.models import discover_models
    from repaint.web.server import build_server

    app = build_server(discover_models(), device="cpu", limits=Limits(**limits), out_dir=tmp_path)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the web server did not start")
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def alive(url: str) -> bool:
    return httpx.get(f"{url}/api/health", timeout=10).json()["status"] == "ok"

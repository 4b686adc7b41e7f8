"""One ASGI app for ``repaint serve``: the HTTP API under /api and the Gradio page at /, sharing one Runner."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .limits import Limits
from .models import ModelMenu
from .errors import drop_422, install_error_handlers
from .routes import BodyLimit, api_router
from .runner import Runner

__all__ = ["build_server", "uvicorn_server"]

GRACE_S = 5   # on Ctrl+C, how long open connections (a browser's event stream) may take to close


def build_server(models: dict[str, str], *, device: str = "auto", limits: Limits = Limits(),
                 out_dir: Path | None = None, preload: Sequence[str] = ()):
    """A FastAPI app with ``/api/*`` (:mod:`repaint.web.routes`) and the page at ``/`` (:mod:`repaint.web.app`).

    ``models`` is the menu (:func:`repaint.web.models.discover_models`). Gradio serves only its own cache: no
    ``allowed_paths`` are added, so no file on the server is reachable by a path a client names. ``preload``: menu
    names loaded now (the files named on the command line), so a damaged file stops the server before it starts.
    """
    import gradio as gr
    from fastapi import FastAPI

    from .app import CSS, build_app

    menu = ModelMenu(models, device)
    for name in preload:
        menu.get(name)
    runner = Runner(menu, limits)
    app = FastAPI(title="repaint", docs_url="/api/docs", openapi_url="/api/openapi.json", redoc_url=None)
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=2 * limits.max_upload_bytes + 2**20)   # two files and the form fields
    app.include_router(api_router(runner))
    drop_422(app)
    demo = build_app(runner, out_dir)
    demo.queue(max_size=limits.max_queue + 1, default_concurrency_limit=1)  # the RunGate is the real bound
    app = gr.mount_gradio_app(app, demo, path="/", max_file_size=limits.max_upload_bytes,
                              footer_links=["api"], show_error=True, css=CSS)
    # Gradio refuses input files that were not uploaded through it (a client naming a server path) only for a
    # Blocks that "has launched", which mount_gradio_app never sets; without this, the page's event API would read
    # any file of the working directory or /tmp that a client names.
    demo.has_launched = True
    app.state.runner = runner
    return app


def uvicorn_server(app, host: str, port: int):
    """A uvicorn server for :func:`build_server`'s app whose Ctrl+C (or SIGTERM) first tells the Runner to stop, so a
    run in progress ends at its next network call and its request is answered (503) instead of holding the exit."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            app.state.runner.stopping.set()
            super().handle_exit(sig, frame)

    return Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=GRACE_S))

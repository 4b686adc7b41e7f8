"""One ASGI app for ``repaint serve``: the HTTP API under /api and the Gradio page at /, sharing one Runner."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .limits import Limits
from .models import ModelMenu
from .errors import drop_422, install_error_handlers
from .routes import BodyLimit, api_router
from .runner import Runner

__all__ = ["build_server"]


def build_server(models: dict[str, str], *, device: str = "auto", limits: Limits = Limits(),
                 out_dir: Path | None = None, preload: Sequence[str] = ()):
    """A FastAPI app with ``/api/*`` (:mod:`repaint.web.routes`) and the page at ``/`` (:mod:`repaint.web.app`).

    ``models`` is the menu (:func:`repaint.web.models.discover_models`). Gradio serves only its own cache: no
    ``allowed_paths`` are added, so no file on the server is reachable by a path a client names. ``preload``: menu
    names loaded now (the files named on the command line), so a damaged file stops the server before it starts.
    """
    import gradio as gr
    from fastapi import FastAPI

    from .app import build_app

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
                              footer_links=["api"], show_error=True)
    # Gradio refuses input files that were not uploaded through it (a client naming a server path) only for a
    # Blocks that "has launched", which mount_gradio_app never sets; without this, the page's event API would read
    # any file of the working directory or /tmp that a client names.
    demo.has_launched = True
    app.state.runner = runner
    return app

"""``repaint serve``: the web app and the HTTP API on one local server."""

from __future__ import annotations

import os
import warnings

import click

from .common import InputError, device_of, handles_errors

EXAMPLES = """
\b
Examples:
  repaint serve                                   open http://127.0.0.1:7860 in a browser
  repaint serve --port 8080 --model mine.safetensors --model other.pt
  repaint serve --device cuda --max-queue 8 --max-upload-mb 50
\b
HTTP API (see the README):
  curl -F image=@photo.png -F mask=@mask.png http://127.0.0.1:7860/api/inpaint -o filled.png
"""


@click.command(epilog=EXAMPLES)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. The default serves this machine only; 0.0.0.0 exposes it to the network.")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True, help="Port to bind.")
@click.option("--share", is_flag=True, help="Also ask Gradio for a public share link (off unless given).")
@click.option("--model", "models", multiple=True, metavar="NAME|FILE|hf:ORG/NAME",
              help="A model to offer besides the bundled model and the models found on disk: a checkpoint file, a "
                   "name of `repaint models` or a Hub model, fetched at start if need be (repeatable). Clients "
                   "choose models by name only.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--max-queue", type=click.IntRange(min=0), default=4, show_default=True,
              help="Runs that may wait while one runs; beyond that clients get a busy answer.")
@click.option("--max-upload-mb", type=click.FloatRange(min=0.01), default=20.0, show_default=True,
              help="Largest uploaded file, in MB.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=16_000_000, show_default=True,
              help="Largest photo, width x height.")
@click.option("--max-samples", type=click.IntRange(min=1), default=8, show_default=True,
              help="Most samples per request.")
@click.option("--max-calls", type=click.IntRange(min=1), default=20_000, show_default=True,
              help="Most network calls per request (all samples and windows).")
@handles_errors
def serve(host: str, port: int, share: bool, models: tuple[str, ...], device: str, max_queue: int,
          max_upload_mb: float, max_pixels: int, max_samples: int, max_calls: int) -> None:
    """Start the web app (paint the hole, watch it fill) and the HTTP API at http://HOST:PORT."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    # the web stack's own resource and deprecation notices are not the user's to act on
    for category in (ResourceWarning, DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    from ..web.limits import Limits
    from ..checkpoints import PRESETS
    from ..web.models import discover_models

    menu = discover_models(models)
    limits = Limits(max_upload_bytes=int(max_upload_mb * 2**20), max_pixels=max_pixels, max_queue=max_queue,
                    max_samples=max_samples, max_calls=max_calls)
    device = device_of(device)
    _check_port(host, port)
    try:
        from ..web.server import build_server, uvicorn_server
    except ImportError as err:
        raise click.ClickException(f"the web app needs the web extra: pip install 'repaint[web]' ({err})") from None
    given = set(models)
    named = [name for name, source in menu.items()
             if source != "default" and (source not in PRESETS or source in given)]  # loaded (or fetched) now
    app = build_server(menu, device=device, limits=limits, preload=named)
    server = uvicorn_server(app, host, port)
    click.echo(f"repaint: models {', '.join(menu)} on {device}; open http://{host}:{port} (HTTP API: "
               f"POST http://{host}:{port}/api/inpaint); Ctrl+C stops")
    if share:
        _share_when_started(server, host, port)
    try:
        server.run()
    except KeyboardInterrupt:   # uvicorn re-raises Ctrl+C once it has shut down cleanly
        pass
    click.echo("repaint: server stopped")


def _check_port(host: str, port: int) -> None:
    """A one-line error now, rather than a server log line later, when HOST:PORT cannot be listened on."""
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
            probe.bind((host, port))
    except OSError as err:
        raise InputError(f"cannot listen on {host}:{port} ({err.strerror or err}); choose another --port or --host")


def _share_when_started(server, host: str, port: int) -> None:
    """Open Gradio's share tunnel to the local server once it listens (needs internet access)."""
    import secrets
    import threading
    import time

    def tunnel() -> None:
        while not server.started:
            time.sleep(0.1)
        try:
            from gradio.networking import setup_tunnel

            url = setup_tunnel(host, port, secrets.token_urlsafe(32), None, None)
            click.echo(f"repaint: public share link {url} (anyone with it can use this server)")
        except Exception as err:  # the local server keeps running without the link
            click.echo(f"repaint: warning: no share link ({' '.join(str(err).split())})", err=True)

    threading.Thread(target=tunnel, daemon=True).start()

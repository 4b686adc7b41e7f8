"""The HTTP API for scripts: ``POST /api/inpaint`` (image + mask + settings in, PNG or ZIP of PNGs out).

Errors are JSON ``{"error": "one line"}`` that never repeats the input: 400 bad input (a missing or malformed
field too), 413 upload or body too large (declared or streamed), 503 busy or shutting down (with Retry-After), 500
the run failed. A client that disconnects cancels its run.
``GET /api/models`` lists what a client may choose; ``GET /api/health`` says the server is up.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import zipfile

import numpy as np
from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel
from PIL import Image
from starlette.concurrency import run_in_threadpool

from ..api import Cancelled
from ..samplers import describe
from .errors import ERROR_RESPONSES, error_response
from .limits import Busy, TooLarge, decode_image, decode_mask
from ..api import sample_filename
from .runner import FIT_CHOICES, SAMPLER_CHOICES, SCHEDULE_CHOICES, RunOptions, Runner, photo_stem

__all__ = ["api_router", "BodyLimit"]

log = logging.getLogger("repaint.web")


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


async def _read(upload: UploadFile, limit: int, what: str) -> bytes:
    """The upload's bytes, reading at most one byte past the limit (so the size check needs no more memory)."""
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"{what} is over the server's limit of {limit / 2**20:.1f} MB")
    return data


class BodyLimit:
    """ASGI middleware: an /api/ request body may be at most ``max_bytes``, declared or streamed.

    A Content-Length over the limit is refused before anything is read; a body without one (chunked transfer) is
    counted as it arrives and refused with 413 the moment it passes the limit, so no more than the limit is ever
    parsed or spooled to disk.
    """

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _message(self) -> str:
        return f"request body over the server's limit of {self.max_bytes / 2**20:.1f} MB"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await error_response(413, self._message())(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, counted, send)


class ModelInfo(BaseModel):
    name: str
    description: str


class ModelsInfo(BaseModel):
    models: list[ModelInfo]
    samplers: list[str]
    schedules: list[str]
    fits: list[str]
    max_samples: int
    max_pixels: int
    max_upload_bytes: int
    max_calls: int


async def _run_until_disconnect(request: Request, runner: Runner, photo, keep, opts: RunOptions):
    """Run in a worker thread; if the client goes away meanwhile, cancel the run at its next network call."""
    cancel = threading.Event()
    job = asyncio.ensure_future(run_in_threadpool(runner.run, photo, keep, opts, cancel=cancel))
    try:
        while not job.done():
            await asyncio.wait({job}, timeout=0.25)
            if not job.done() and await request.is_disconnected():
                cancel.set()
        return job.result()
    except asyncio.CancelledError:  # the server is stopping this request: let the worker let go of the device
        cancel.set()
        raise


def api_router(runner: Runner) -> APIRouter:
    router = APIRouter(prefix="/api")
    limits = runner.limits

    @router.get("/health")
    def health() -> dict:
        return {"status": "ok", "runs_admitted": runner.gate.admitted, "max_queue": limits.max_queue}

    @router.get("/models")
    def models() -> ModelsInfo:
        """The models a client may name (with one line about each), the samplers and schedules, and the limits."""
        menu = [ModelInfo(name=name, description=runner.menu.description(name)) for name in runner.menu.names]
        return ModelsInfo(models=menu, samplers=list(SAMPLER_CHOICES), schedules=list(SCHEDULE_CHOICES),
                          fits=list(FIT_CHOICES), max_samples=limits.max_samples, max_pixels=limits.max_pixels,
                          max_upload_bytes=limits.max_upload_bytes, max_calls=limits.max_calls)

    @router.post("/inpaint", responses={200: {"content": {"image/png": {}, "application/zip": {}},
                                              "description": "one sample: PNG; several: ZIP of PHOTO_sSEED.png"},
                                        **ERROR_RESPONSES})
    async def inpaint_route(
        request: Request,
        image: UploadFile = File(..., description="the photo (PNG, JPEG, WebP, ...)"),
        mask: UploadFile = File(..., description="same size as the photo; white = keep, black = fill"),
        invert_mask: bool = Form(False, description="the mask uses white for the region to fill"),
        model: str = Form("default", description="a name from GET /api/models"),
        sampler: str = Form("recommended", description="recommended (the model's own) or a sampler name"),
        schedule: str = Form("recommended", description="recommended, fast, paper or custom"),
        steps: int | None = Form(None, description="T (custom schedule)"),
        jump_length: int | None = Form(None, description="j (custom schedule)"),
        jump_n_sample: int | None = Form(None, description="r (custom schedule)"),
        seed: int = Form(0),
        n_samples: int = Form(1),
        class_label: int | None = Form(None),
        fit: str = Form("auto", description="how the photo meets the model: auto (windows at full resolution, tiles "
                                            "where a hole is larger than one window), tile, crop, resize or none"),
    ) -> Response:
        """Inpaint; one sample -> image/png, several -> application/zip of ``PHOTO_sSEED.png`` files (PHOTO: the
        uploaded image's file name).

        A client that disconnects cancels its run. Errors are ``{"error": "one line"}``."""
        try:
            photo = decode_image(await _read(image, limits.max_upload_bytes, "image"), limits, "image")
            keep = decode_mask(await _read(mask, limits.max_upload_bytes, "mask"), limits, invert_mask, "mask")
            opts = RunOptions(model, sampler, schedule, steps, jump_length, jump_n_sample, seed, n_samples,
                              class_label, fit)
            out = await _run_until_disconnect(request, runner, photo, keep, opts)
        except TooLarge as err:
            return error_response(413, str(err))
        except Busy as err:
            return error_response(503, str(err), **{"Retry-After": "10"})
        except (ValueError, TypeError) as err:
            return error_response(400, str(err))
        except Cancelled as err:
            if runner.stopping.is_set():
                return error_response(503, "the server is shutting down; try again when it is back",
                                      **{"Retry-After": "30"})
            return error_response(400, f"the run was {err}")      # the client went away: nobody reads this
        except (RuntimeError, MemoryError) as err:
            log.error("the run failed: %s", err, exc_info=True)
            return error_response(500, f"the run failed on the server: {err or type(err).__name__}")
        stem = photo_stem(image.filename, "image")
        headers = {"X-Repaint-Seeds": ",".join(map(str, opts.seeds)), "X-Repaint-Calls": str(out.calls),
                   "X-Repaint-Settings": describe(out.settings)}
        samples = out.result.samples
        if len(samples) == 1:
            seed, array = next(iter(samples.items()))
            headers["Content-Disposition"] = f'attachment; filename="{sample_filename(stem, seed)}"'
            return Response(_png(array), media_type="image/png", headers=headers)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for s, array in samples.items():
                archive.writestr(sample_filename(stem, s), _png(array))
        headers["Content-Disposition"] = f'attachment; filename="{stem}_samples.zip"'
        return Response(buffer.getvalue(), media_type="application/zip", headers=headers)

    @router.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    def not_found(rest: str) -> None:   # otherwise the page mounted at / would answer in its own shape
        raise HTTPException(404, "Not Found")

    return router

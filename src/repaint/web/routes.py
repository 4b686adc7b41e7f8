"""The HTTP API for scripts: ``POST /api/inpaint`` (image + mask + settings in, PNG or ZIP of PNGs out).

Errors are JSON ``{"error": "one line"}``: 400 bad input, 413 upload too large, 503 busy (with Retry-After),
500 the run failed. ``GET /api/models`` lists what a client may choose; ``GET /api/health`` says the server is up.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from ..api import Cancelled
from .limits import Busy, TooLarge, decode_image, decode_mask
from ..samplers import describe
from .runner import SAMPLER_CHOICES, SCHEDULE_CHOICES, RunOptions, Runner

__all__ = ["api_router", "limit_request_size"]


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status, headers=headers or None)


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


def limit_request_size(max_bytes: int):
    """ASGI middleware factory: refuse an /api/ request whose declared body is larger than ``max_bytes`` (413)."""

    async def middleware(request: Request, call_next):
        if request.url.path.startswith("/api/"):
            length = request.headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > max_bytes):
                return _error(413, f"request body over the server's limit of {max_bytes / 2**20:.1f} MB")
        return await call_next(request)

    return middleware


def api_router(runner: Runner) -> APIRouter:
    router = APIRouter(prefix="/api")
    limits = runner.limits

    @router.get("/health")
    def health() -> dict:
        return {"status": "ok", "runs_admitted": runner.gate.admitted, "max_queue": limits.max_queue}

    @router.get("/models")
    def models() -> dict:
        return {"models": runner.menu.names, "descriptions": runner.menu.descriptions,
                "samplers": list(SAMPLER_CHOICES), "schedules": list(SCHEDULE_CHOICES),
                "max_samples": limits.max_samples, "max_pixels": limits.max_pixels,
                "max_upload_bytes": limits.max_upload_bytes}

    @router.post("/inpaint", responses={200: {"content": {"image/png": {}, "application/zip": {}}}})
    async def inpaint_route(
        image: UploadFile = File(..., description="the photo (PNG, JPEG, WebP, ...)"),
        mask: UploadFile = File(..., description="same size as the photo; white = keep, black = fill"),
        invert_mask: bool = Form(False, description="the mask uses white for the region to fill"),
        model: str = Form("default"),
        sampler: str = Form("recommended", description="recommended (the model's own) or a sampler name"),
        schedule: str = Form("recommended", description="recommended, fast, paper or custom"),
        steps: int | None = Form(None, description="T (custom schedule)"),
        jump_length: int | None = Form(None, description="j (custom schedule)"),
        jump_n_sample: int | None = Form(None, description="r (custom schedule)"),
        seed: int = Form(0),
        n_samples: int = Form(1),
        class_label: int | None = Form(None),
    ) -> Response:
        """Inpaint; one sample -> image/png, several -> application/zip of ``sample_sSEED.png`` files."""
        try:
            photo = decode_image(await _read(image, limits.max_upload_bytes, "image"), limits, "image")
            keep = decode_mask(await _read(mask, limits.max_upload_bytes, "mask"), limits, invert_mask, "mask")
            opts = RunOptions(model, sampler, schedule, steps, jump_length, jump_n_sample, seed, n_samples,
                              class_label)
            out = await run_in_threadpool(runner.run, photo, keep, opts)
        except TooLarge as err:
            return _error(413, str(err))
        except Busy as err:
            return _error(503, str(err), **{"Retry-After": "10"})
        except (ValueError, TypeError) as err:
            return _error(400, str(err))
        except (RuntimeError, MemoryError, Cancelled) as err:
            return _error(500, str(err) or type(err).__name__)
        headers = {"X-Repaint-Seeds": ",".join(map(str, opts.seeds)), "X-Repaint-Calls": str(out.calls),
                   "X-Repaint-Settings": describe(out.settings)}
        samples = out.result.samples
        if len(samples) == 1:
            return Response(_png(next(iter(samples.values()))), media_type="image/png", headers=headers)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for s, array in samples.items():
                archive.writestr(f"sample_s{s}.png", _png(array))
        return Response(buffer.getvalue(), media_type="application/zip", headers=headers)

    return router

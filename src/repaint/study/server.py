"""The study page: a FastAPI app over :mod:`repaint.study.store`, served by uvicorn.

    GET  /                 the page (HTML and JS in page.html): participant id, then one trial at a time
    POST /api/next         {"participant"} -> the current trial (image tokens only), enrolling a new participant
    POST /api/vote         {"participant", "token", "side", "rt_ms"} -> {"recorded", "next"}
    GET  /img/{token}      the PNG with that opaque token

The server decides which trial comes next; the client only names its participant id, the trial token it was given
and a side. The id is not a credential: enrolment sets a random per-participant key as an HttpOnly cookie, every later
call for that participant must carry it (403 otherwise), and each client address may enrol at most
``enrol_limit`` participants per ``enrol_window`` seconds (429 beyond). Errors are 400/403/404/409/429
``{"error": "one line"}``, never an echo of the input.
Images are found by random tokens stored in the study file, never by a path. Each worker thread of the
server holds its own SQLite connection (WAL mode); writes are short BEGIN IMMEDIATE transactions, so several
participants vote at once.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict, deque
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from ..web.errors import install_error_handlers
from .store import (StudyConflict, StudyDenied, StudyError, check_key, connect, enrol, image_png, next_trial,
                    record_vote, study_info)

__all__ = ["make_app", "serve"]

PAGE = Path(__file__).with_name("page.html")
COOKIE = "repaint_study_key"
KEY_DAYS = 30


class EnrolLimit:
    """At most ``limit`` enrolments per client address in any ``window`` seconds."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self._seen: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def admit(self, client: str) -> float:
        """0 if ``client`` may enrol now (and counts it), else the seconds until it may."""
        now = time.monotonic()
        with self._lock:
            seen = self._seen[client]
            while seen and now - seen[0] >= self.window:
                seen.popleft()
            if len(seen) >= self.limit:
                return self.window - (now - seen[0])
            seen.append(now)
            return 0.0


class NextRequest(BaseModel):
    participant: str = Field(max_length=64)


class VoteRequest(BaseModel):
    participant: str = Field(max_length=64)
    token: str = Field(max_length=64)
    side: str = Field(max_length=8)
    rt_ms: float | None = None


def make_app(study: str | os.PathLike, enrol_limit: int = 10, enrol_window: float = 60.0) -> FastAPI:
    """The app for one study file (checked now, so that a bad file fails before the server starts)."""
    study = Path(study)
    con = connect(study)
    title = study_info(con)["title"]
    con.close()
    page = PAGE.read_text().replace("{{TITLE}}", title.replace("&", "&amp;").replace("<", "&lt;"))
    app = FastAPI(title="repaint study", docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)
    enrolments = EnrolLimit(enrol_limit, enrol_window)

    local = threading.local()   # one connection per worker thread of the server, opened on first use

    def call(fn, *args):
        if getattr(local, "con", None) is None:
            local.con = connect(study)
        try:
            return fn(local.con, *args)
        except StudyDenied as err:
            raise HTTPException(403, str(err)) from None
        except StudyConflict as err:
            raise HTTPException(409, str(err)) from None
        except StudyError as err:
            raise HTTPException(400, str(err)) from None

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    def authorised(request: Request, participant: str) -> bool:
        return call(check_key, participant, request.cookies.get(COOKIE))

    @app.post("/api/next")
    def api_next(req: NextRequest, request: Request) -> Response:
        if authorised(request, req.participant):
            return JSONResponse(call(next_trial, req.participant))
        client = request.client.host if request.client else "unknown"
        wait = enrolments.admit(client)
        if wait:
            raise HTTPException(429, "too many new participants from this address; try again later",
                                headers={"Retry-After": str(int(wait) + 1)})
        key = call(enrol, req.participant)
        response = JSONResponse(call(next_trial, req.participant))
        response.set_cookie(COOKIE, key, max_age=KEY_DAYS * 86400, httponly=True, samesite="strict", path="/api")
        return response

    @app.post("/api/vote")
    def api_vote(req: VoteRequest, request: Request) -> dict:
        if not authorised(request, req.participant):
            raise HTTPException(403, "this browser has not enrolled this participant id; start again from the page")

        def vote_then_next(con, participant, token, side, rt_ms):
            vote = record_vote(con, participant, token, side, rt_ms)
            return {"recorded": vote.recorded, "next": next_trial(con, participant)}

        return call(vote_then_next, req.participant, req.token, req.side, req.rt_ms)

    @app.get("/img/{token}")
    def img(token: str) -> Response:
        png = call(image_png, token)
        if png is None:
            raise HTTPException(404, "no such image")
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    return app


def serve(study: str | os.PathLike, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Run the study page until interrupted."""
    import uvicorn

    uvicorn.run(make_app(study), host=host, port=port, log_level="warning")

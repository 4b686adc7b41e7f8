"""The study page: a FastAPI app over :mod:`repaint.study.store`, served by uvicorn.

    GET  /                 the page (HTML and JS in page.html): participant id, then one trial at a time
    POST /api/next         {"participant"} -> the current trial (image tokens only), joining a new participant
    POST /api/vote         {"participant", "token", "side", "rt_ms"} -> {"recorded", "next"}
    GET  /img/{token}      the PNG with that opaque token

The server decides which trial comes next; the client only names its participant id, the trial token it was given
and a side. Images are found by random tokens stored in the study file, never by a path. Each worker thread of the
server holds its own SQLite connection (WAL mode); writes are short BEGIN IMMEDIATE transactions, so several
participants vote at once.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from .store import StudyConflict, StudyError, connect, image_png, next_trial, record_vote, study_info

__all__ = ["make_app", "serve"]

PAGE = Path(__file__).with_name("page.html")


class NextRequest(BaseModel):
    participant: str = Field(max_length=64)


class VoteRequest(BaseModel):
    participant: str = Field(max_length=64)
    token: str = Field(max_length=64)
    side: str = Field(max_length=8)
    rt_ms: float | None = None


def make_app(study: str | os.PathLike) -> FastAPI:
    """The app for one study file (checked now, so that a bad file fails before the server starts)."""
    study = Path(study)
    con = connect(study)
    title = study_info(con)["title"]
    con.close()
    page = PAGE.read_text().replace("{{TITLE}}", title.replace("&", "&amp;").replace("<", "&lt;"))
    app = FastAPI(title="repaint study", docs_url=None, redoc_url=None, openapi_url=None)

    local = threading.local()   # one connection per worker thread of the server, opened on first use

    def call(fn, *args):
        if getattr(local, "con", None) is None:
            local.con = connect(study)
        try:
            return fn(local.con, *args)
        except StudyConflict as err:
            raise HTTPException(409, str(err)) from None
        except StudyError as err:
            raise HTTPException(400, str(err)) from None

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @app.post("/api/next")
    def api_next(req: NextRequest) -> dict:
        return call(next_trial, req.participant)

    @app.post("/api/vote")
    def api_vote(req: VoteRequest) -> dict:
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

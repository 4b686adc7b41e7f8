"""Client errors as both servers (``repaint serve`` and the study server) answer them: ``{"error": "one line"}``.

FastAPI's own answer to a malformed request is 422 ``{"detail": [...]}`` with the client's input echoed back; here it
is 400 with one sentence that names the field and what it must be, and never repeats what the client sent.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

__all__ = ["ErrorBody", "error_response", "install_error_handlers", "validation_message", "ERROR_RESPONSES"]

# pydantic error type -> what the field must be, in a form user's words
_MUST_BE = {
    "int_parsing": "a whole number", "int_type": "a whole number", "int_from_float": "a whole number",
    "float_parsing": "a number", "float_type": "a number", "bool_parsing": "true or false",
    "bool_type": "true or false", "string_type": "text", "string_too_long": "shorter",
    "string_too_short": "longer", "dict_type": "a JSON object", "model_type": "a JSON object",
    "finite_number": "a finite number", "upload_file_type": "a file", "value_error": "valid",
}


class ErrorBody(BaseModel):
    """What every error answer holds."""

    error: str


def error_response(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers or None)


def _field(loc) -> str:
    names = [str(part) for part in loc if part not in ("body", "query", "path", "header", "cookie")]
    return ".".join(names) or "the request body"


def validation_message(errors) -> str:
    """FastAPI's validation errors -> one line, e.g. "n_samples must be a whole number; mask is missing"."""
    parts = []
    for err in errors:
        kind, field = err.get("type", ""), _field(err.get("loc", ()))
        if kind == "missing":
            parts.append(f"{field} is missing")
        elif kind == "json_invalid":
            parts.append("the request body is not valid JSON")
        elif kind in _MUST_BE:
            parts.append(f"{field} must be {_MUST_BE[kind]}")
        else:
            parts.append(f"{field} is not valid")
    unique = list(dict.fromkeys(parts))
    return "; ".join(unique[:4]) + ("; ..." if len(unique) > 4 else "")


def install_error_handlers(app: FastAPI) -> None:
    """Answer malformed requests with 400 and every HTTPException with ``{"error"}``; a fault of the server itself
    is answered 500 without details (Starlette re-raises it, so the server logs it once, with its traceback)."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, validation_message(exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "bad request"
        return error_response(exc.status_code, message, **(exc.headers or {}))

    @app.exception_handler(Exception)
    async def fault(request: Request, exc: Exception) -> JSONResponse:
        return error_response(500, "the server failed on this request; the fault is in its log")


# the error answers of a route, for its OpenAPI entry
ERROR_RESPONSES = {code: {"model": ErrorBody, "description": words} for code, words in (
    (400, "bad input: the one-line error says which field and why"),
    (413, "an upload or the request body is over the server's limit"),
    (503, "busy (a run in progress and the queue full) or shutting down; see Retry-After"),
    (500, "the run failed on the server"),
)}


def drop_422(app: FastAPI) -> None:
    """Take FastAPI's automatic 422 answers out of the OpenAPI schema: this server answers 400 instead."""
    from fastapi.openapi.utils import get_openapi

    def schema() -> dict:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
            for path in spec.get("paths", {}).values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                spec.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = schema

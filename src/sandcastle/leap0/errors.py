"""Our errors in Leap0's shape, in one place.

Leap0's SDK takes the exception class from the status alone (403, 404, 409, 429 have their
own) and reads one field of the body, a top-level ``message``. The status is the one our own
API answers (``api.errors.lookup``), so both surfaces agree on what a failure is; invalid
requests are 400 with ``execute.txt``'s ``{message, errors: [{field, error}]}``, as Leap0
answers them (our own API keeps its 422).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sandcastle import errors
from sandcastle.api.errors import lookup

log = logging.getLogger("sandcastle.leap0")


def error_response(
    status: int,
    message: str,
    problems: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": status, "message": message}
    if problems is not None:
        body["errors"] = problems
    return JSONResponse(body, status_code=status, headers=headers)


def for_exception(exc: errors.SandcastleError) -> JSONResponse:
    status, _ = lookup(exc)
    if status == 422:
        status = 400
    headers = None
    if isinstance(exc, errors.RateLimitedError):
        headers = {"Retry-After": str(max(1, round(exc.retry_after_s)))}
    elif isinstance(exc, errors.AuthenticationError):
        headers = {"WWW-Authenticate": "Bearer"}
    problems = None
    if isinstance(exc, errors.FieldError):
        problems = [{"field": exc.field, "error": exc.message}]
    return error_response(status, exc.message, problems, headers)


async def _sandcastle_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.SandcastleError)
    response = for_exception(exc)
    if response.status_code >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc)
    return response


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {
            "field": ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body",
            "error": str(e.get("msg", "invalid")),
        }
        for e in exc.errors()
    ]
    summary = "; ".join(f"{p['field']}: {p['error']}" for p in problems)
    return error_response(400, f"invalid request: {summary}", problems)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route {request.method} {request.url.path}"
    return error_response(exc.status_code, detail, headers=dict(exc.headers or {}) or None)


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s crashed", request.method, request.url.path)
    return error_response(500, "internal server error")


def install(app: FastAPI) -> None:
    """Answer every failure of ``app`` in Leap0's error body."""
    app.add_exception_handler(errors.SandcastleError, _sandcastle_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unhandled)

"""Our errors in E2B's shapes, in one place: ``{"code", "message"}`` bodies for its REST routes
and Connect codes for its RPC services.

The HTTP status is the one our own API answers (``api.errors.lookup``), so both surfaces agree
on what a failure is; only the body differs, because E2B's SDKs read ``message``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sandcastle import errors
from sandcastle.api.errors import lookup

log = logging.getLogger("sandcastle.e2b")

#: Exception class → Connect code, looked up along the MRO like ``api.errors.ERROR_TABLE``.
#: The codes are the ones E2B's SDKs turn into their own exceptions (not found, invalid
#: argument, rate limit, unavailable...).
CONNECT_CODES: dict[type[BaseException], Code] = {
    errors.InvalidRequestError: Code.INVALID_ARGUMENT,
    errors.AuthenticationError: Code.UNAUTHENTICATED,
    errors.ForbiddenError: Code.PERMISSION_DENIED,
    errors.NotFoundError: Code.NOT_FOUND,
    errors.AlreadyExistsError: Code.ALREADY_EXISTS,
    errors.SandboxPausedError: Code.UNAVAILABLE,
    errors.SandboxEndedError: Code.UNAVAILABLE,
    errors.ConflictError: Code.FAILED_PRECONDITION,
    errors.QuotaExceededError: Code.RESOURCE_EXHAUSTED,
    errors.RateLimitedError: Code.RESOURCE_EXHAUSTED,
    errors.StoreBusyError: Code.UNAVAILABLE,
    errors.AgentUnavailableError: Code.UNAVAILABLE,
    errors.SandcastleError: Code.INTERNAL,
}


def connect_error(exc: errors.SandcastleError) -> ConnectError:
    for cls in type(exc).__mro__:
        if cls in CONNECT_CODES:
            return ConnectError(CONNECT_CODES[cls], exc.message)
    return ConnectError(Code.INTERNAL, exc.message)


@contextlib.contextmanager
def connect_errors() -> Iterator[None]:
    """Our errors raised inside, as the Connect errors a Connect handler must raise."""
    try:
        yield
    except errors.SandcastleError as exc:
        raise connect_error(exc) from exc


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status_code=status, headers=headers)


def for_exception(exc: errors.SandcastleError) -> JSONResponse:
    status, _ = lookup(exc)
    if status == 422:
        status = 400  # E2B's API answers every invalid request 400
    headers = None
    if isinstance(exc, errors.RateLimitedError):
        headers = {"Retry-After": str(max(1, round(exc.retry_after_s)))}
    return error_response(status, exc.message, headers)


async def _sandcastle_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.SandcastleError)
    response = for_exception(exc)
    if response.status_code >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc)
    return response


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
        for e in exc.errors()
    )
    return error_response(400, f"invalid request: {problems}")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route {request.method} {request.url.path}"
    return error_response(exc.status_code, detail, dict(exc.headers or {}) or None)


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s crashed", request.method, request.url.path)
    return error_response(500, "internal server error")


def install(app: FastAPI) -> None:
    """Answer every failure of ``app`` in E2B's error body."""
    app.add_exception_handler(errors.SandcastleError, _sandcastle_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unhandled)

"""Errors to HTTP, in one table, looked up along the exception's MRO.

Control-plane routes answer with the envelope of ``org-sandboxes-list.txt``:
``{code, detail, type, errors?: [{loc, msg, type}]}``. Routes that serve ``execute.txt`` answer
validation failures with that document's ``{message, errors: [{field, error}]}`` instead; they are
marked with :func:`execute_document_errors`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from sandcastle import errors

log = logging.getLogger("sandcastle.api")

#: Exception class → (HTTP status, envelope type). The first match along the MRO wins.
ERROR_TABLE: dict[type[BaseException], tuple[int, str]] = {
    errors.LimitExceededError: (422, "validation_error"),
    errors.InvalidRequestError: (422, "validation_error"),
    errors.AuthenticationError: (401, "authentication_error"),
    errors.ForbiddenError: (403, "forbidden_error"),
    errors.NotFoundError: (404, "not_found_error"),
    errors.MemberExistsError: (409, "member_exists_error"),
    errors.AlreadyExistsError: (409, "already_exists_error"),
    # 429: the condition clears by itself as the org's sandboxes end (E2B answers its
    # concurrency limit the same way); the two below need someone to act, so retrying is futile.
    errors.SandboxCapacityExceededError: (429, "org_sandbox_capacity_exceeded_error"),
    errors.MemberLimitExceededError: (403, "member_limit_exceeded_error"),
    errors.UsageLimitExceededError: (403, "usage_limit_exceeded_error"),
    errors.QuotaExceededError: (403, "forbidden_error"),
    errors.RateLimitedError: (429, "e2b_rate_limit_error"),
    # The server's own disk, not the caller's quota. 507 would say it best, but the envelope's
    # documented codes (org-sandboxes-list.txt) stop at 504: a 500 whose detail says why.
    errors.InsufficientStorageError: (500, "server_error"),
    errors.ConflictError: (409, "conflict_error"),
    # No 503 among the envelope's codes: the store did not answer in time, like a gateway.
    errors.StoreBusyError: (504, "database_error"),
    errors.AgentUnavailableError: (502, "bad_gateway_error"),
    errors.AgentError: (502, "bad_gateway_error"),
    errors.TemplateError: (500, "server_error"),
    errors.RuntimeBackendError: (500, "server_error"),
    errors.ConfigurationError: (500, "configuration_error"),
    errors.SandcastleError: (500, "server_error"),
}

#: What the envelope's ``type`` may be (org-sandboxes-list.txt).
ALLOWED_TYPES = frozenset(
    """already_exists_error app_error authentication_error conflict_error aws_error
    configuration_error database_error dynamodb_error e2b_error e2b_rate_limit_error
    expired_signature_error expired_token_error forbidden_error group_error invalid_error
    invalid_flag_error invalid_username_error mail_error member_exists_error
    member_limit_exceeded_error migration_lock_timeout_error not_found_error oauth_config_error
    org_sandbox_capacity_exceeded_error bad_gateway_error gateway_timeout_error s3_error
    server_error task_error stripe_error token_error upgrade_required_error
    usage_limit_exceeded_error user_verification_error validation_error""".split()
)

_HTTP_TYPES = {
    400: "invalid_error",
    401: "authentication_error",
    403: "forbidden_error",
    404: "not_found_error",
    405: "invalid_error",
    409: "conflict_error",
    413: "invalid_error",
    415: "invalid_error",
    422: "validation_error",
    429: "e2b_rate_limit_error",
}

_EXECUTE_DOC = "__sandcastle_execute_document__"
F = TypeVar("F", bound=Callable[..., Any])


def execute_document_errors(endpoint: F) -> F:
    """Mark an endpoint whose validation errors use ``execute.txt``'s shape."""
    setattr(endpoint, _EXECUTE_DOC, True)
    return endpoint


def _uses_execute_document(request: Request) -> bool:
    return bool(getattr(request.scope.get("endpoint"), _EXECUTE_DOC, False))


def lookup(exc: BaseException) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    return 500, "server_error"


def envelope(
    status: int,
    detail: str,
    type_: str,
    errs: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": status, "detail": detail, "type": type_}
    if errs is not None:
        body["errors"] = errs
    all_headers = dict(headers or {})
    if status == 401:
        all_headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body, status_code=status, headers=all_headers or None)


def execute_validation(errs: list[dict[str, str]]) -> JSONResponse:
    return JSONResponse({"message": "Invalid request", "errors": errs}, status_code=422)


async def _sandcastle_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.SandcastleError)
    if isinstance(exc, errors.FieldError) and _uses_execute_document(request):
        return execute_validation([{"field": exc.field, "error": exc.message}])
    status, type_ = lookup(exc)
    if status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc)
    errs = None
    if isinstance(exc, errors.FieldError):
        errs = [{"loc": [exc.location, exc.field], "msg": exc.message, "type": "value_error"}]
    headers = None
    if isinstance(exc, errors.RateLimitedError):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    return envelope(status, exc.message, type_, errs, headers=headers)


def _field_name(error: dict[str, Any]) -> str:
    if error.get("type") == "json_invalid":
        return "body"  # its loc holds a character offset, not a field
    loc = error.get("loc", ())
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw = list(exc.errors())
    if _uses_execute_document(request):
        return execute_validation(
            [{"field": _field_name(e), "error": str(e.get("msg", ""))} for e in raw]
        )
    errs = [
        {
            "loc": list(e.get("loc", ())),
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in raw
    ]
    return envelope(422, "Validation error", "validation_error", errs)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    type_ = _HTTP_TYPES.get(status, "server_error" if status >= 500 else "invalid_error")
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if status == 404 and detail == "Not Found":
        detail = f"no route {request.method} {request.url.path}"
    headers = dict(exc.headers or {})
    if status == 405:
        # Starlette names only the first route that matched the path; list every method.
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return envelope(status, detail, type_, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route accepts for this path, asked of the routes themselves."""
    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.routes):
            allowed.append(method)
    return allowed


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s crashed", request.method, request.url.path)
    return envelope(500, "Internal server error", "server_error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.SandcastleError, _sandcastle_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unhandled)

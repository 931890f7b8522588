"""Bounded request data: schema types for the user-supplied maps (``domain/limits.py``) and the
middleware that bounds every body a route reads whole.

The body bound is checked as the body arrives, against ``Content-Length`` first and against the
bytes really received after that (a chunked body has no length), so an oversized body is refused
with 413 before it is held. Routes that stream their body (uploads, whose size the sandbox's
disk bounds) are marked with :func:`streams_body` and exempt.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, Field
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandcastle.domain import limits


def _metadata(value: dict[str, Any]) -> dict[str, Any]:
    limits.check_metadata(value)
    return value


def _env_vars(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is not None:
        limits.check_env_vars(value)
    return value


# The bounds a JSON Schema can state are documented with the type; the byte totals cannot be.
_METADATA_DOC = {
    "maxProperties": limits.METADATA_MAX_KEYS,
    "propertyNames": {"minLength": 1, "maxLength": limits.METADATA_MAX_KEY_CHARS},
    "description": f"At most {limits.METADATA_MAX_BYTES} bytes as JSON.",
}
_ENV_VARS_DOC = {
    "maxProperties": limits.ENV_VARS_MAX_COUNT,
    "propertyNames": {
        "minLength": 1,
        "maxLength": limits.ENV_VAR_NAME_MAX_CHARS,
        "pattern": "^[^=\\x00]*$",
    },
    "additionalProperties": {"type": "string", "pattern": "^[^\\x00]*$"},
    "description": f"At most {limits.ENV_VARS_MAX_BYTES} bytes in all.",
}
Metadata = Annotated[
    dict[str, Any], AfterValidator(_metadata), Field(json_schema_extra=_METADATA_DOC)
]
EnvVars = Annotated[
    dict[str, str] | None, AfterValidator(_env_vars), Field(json_schema_extra=_ENV_VARS_DOC)
]

_STREAMS = "__sandcastle_streams_body__"
F = TypeVar("F", bound=Callable[..., Any])


def streams_body(endpoint: F) -> F:
    """Mark an endpoint that reads its body as a stream, bounded by where it goes."""
    setattr(endpoint, _STREAMS, True)
    return endpoint


class BodyLimitMiddleware:
    """Refuse (413) a body over ``max_bytes`` on every route that is not :func:`streams_body`."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = 0

        def too_large() -> HTTPException:
            return HTTPException(413, f"the request body exceeds {self.max_bytes} bytes")

        async def bounded() -> Message:
            nonlocal received
            # The router has set the endpoint in this same scope by the time a body is read.
            if getattr(scope.get("endpoint"), _STREAMS, False):
                return await receive()
            if received == 0 and _content_length(scope) > self.max_bytes:
                raise too_large()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise too_large()
            return message

        await self.app(scope, bounded, send)


def _content_length(scope: Scope) -> int:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0

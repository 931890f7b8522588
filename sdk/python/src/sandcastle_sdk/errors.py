"""The SDK's exceptions: one tree, mirroring the server's error ``type``s.

Every answer of the server that is an error carries ``{"code", "type", "detail", "errors"?}``
(the streamed-execution validation answer carries ``{"message", "errors"}`` instead). The class
raised is looked up by ``type`` first and by status second, so a type the server adds later
still lands on the right branch (a new 409 is a :class:`ConflictError`). Catch
:class:`APIError` for anything the server refused, :class:`SandcastleError` for everything.
"""

from __future__ import annotations

from typing import Any


class SandcastleError(Exception):
    """Base of everything this SDK raises."""


class TransportError(SandcastleError):
    """The server could not be reached, or the connection broke (after the retries allowed)."""


class StreamEndedError(SandcastleError):
    """A stream ended before its last event: the connection was cut, or the platform ended
    what it followed (the sandbox was paused or destroyed meanwhile)."""


class WaitTimeoutError(SandcastleError):
    """A ``wait()`` on the client's side ran out of time; the work itself goes on."""


class TemplateBuildFailedError(SandcastleError):
    """A template build ended without a template: ``build.error`` names the failing step (a
    Dockerfile's line) with its last log lines."""

    def __init__(self, build: Any) -> None:
        super().__init__(f"template {build.name!r}, build {build.build_id}: {build.error}")
        self.build = build


class APIError(SandcastleError):
    """The server answered with an error."""

    def __init__(
        self,
        status: int,
        type: str,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {type}: {detail}")
        self.status = status
        self.type = type
        self.detail = detail
        self.errors = errors or []
        self.retry_after = retry_after


class InvalidRequestError(APIError):
    """400: the request could not be read."""


class ValidationError(APIError):
    """422: a field is wrong; ``errors`` says which."""


class AuthenticationError(APIError):
    """401: no key, or a key the server does not know."""


class ForbiddenError(APIError):
    """403: the key may not do this."""


class UsageLimitExceededError(ForbiddenError):
    """403: the org is out of credits or over a usage limit."""


class MemberLimitExceededError(ForbiddenError):
    """403: the org has as many members as it may."""


class NotFoundError(APIError):
    """404: no such thing, or not one this key can see."""


class ConflictError(APIError):
    """409: the thing is in a state that does not allow this (a paused sandbox, say)."""


class AlreadyExistsError(ConflictError):
    """409: something with that name or path exists."""


class MemberExistsError(AlreadyExistsError):
    """409: that user is a member already."""


class PayloadTooLargeError(APIError):
    """413: the body is over the server's limit."""


class RateLimitError(APIError):
    """429: too many requests; ``retry_after`` is the server's advice in seconds."""


class SandboxCapacityExceededError(RateLimitError):
    """429: the org runs as many sandboxes as it may."""


class ServerError(APIError):
    """5xx: the server failed."""


class BadGatewayError(ServerError):
    """502: the sandbox's agent did not answer."""


class GatewayTimeoutError(ServerError):
    """504: the server gave up waiting (on the store, or on the sandbox)."""


_BY_TYPE: dict[str, type[APIError]] = {
    "invalid_error": InvalidRequestError,
    "validation_error": ValidationError,
    "authentication_error": AuthenticationError,
    "forbidden_error": ForbiddenError,
    "usage_limit_exceeded_error": UsageLimitExceededError,
    "member_limit_exceeded_error": MemberLimitExceededError,
    "not_found_error": NotFoundError,
    "conflict_error": ConflictError,
    "already_exists_error": AlreadyExistsError,
    "member_exists_error": MemberExistsError,
    "e2b_rate_limit_error": RateLimitError,
    "org_sandbox_capacity_exceeded_error": SandboxCapacityExceededError,
    "bad_gateway_error": BadGatewayError,
    "gateway_timeout_error": GatewayTimeoutError,
    "database_error": GatewayTimeoutError,
}

_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: RateLimitError,
    502: BadGatewayError,
    504: GatewayTimeoutError,
}


def error_class(status: int, type: str) -> type[APIError]:
    """The class for an answer: by ``type`` when that type belongs to the status (a 403 may be
    a :class:`UsageLimitExceededError`; a 413 carries the generic ``invalid_error`` and stays a
    :class:`PayloadTooLargeError`), else by status, else by the status's class."""
    by_status = _BY_STATUS.get(status)
    by_type = _BY_TYPE.get(type)
    if by_type is not None and by_status is not None and issubclass(by_type, by_status):
        return by_type
    if by_status is not None:
        return by_status
    return ServerError if status >= 500 else APIError


def from_answer(status: int, body: Any, *, retry_after: float | None = None) -> APIError:
    """The exception for an error answer whose body (parsed JSON, or text) is ``body``."""
    if isinstance(body, dict):
        type_ = str(body.get("type") or "")
        detail = str(body.get("detail") or body.get("message") or "")
        errors = body.get("errors")
        errors = [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
    else:
        type_, detail, errors = "", str(body or ""), []
    if errors:
        first = describe_field_error(errors[0])
        if first not in detail:
            detail = f"{detail} ({first})" if detail else first
    cls = error_class(status, type_)
    return cls(
        status,
        type_ or cls.__name__,
        detail or f"HTTP {status}",
        errors=errors,
        retry_after=retry_after,
    )


def describe_field_error(error: dict[str, Any]) -> str:
    """One field error as ``where: what`` (both of the server's shapes)."""
    where = error.get("field") or ".".join(str(part) for part in error.get("loc", []))
    what = error.get("error") or error.get("msg") or ""
    return f"{where}: {what}" if where else str(what)

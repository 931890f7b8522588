"""The OpenAPI document, made to tell the truth about errors.

FastAPI documents every 422 in its own ``{detail: [...]}`` shape and no other error status. Our
routes answer every error in the envelope of ``org-sandboxes-list.txt`` (the ``execute.txt``
routes answer validation errors in that document's shape), and may answer 401, 403, 404, 409,
413, 429, 502 or 504 depending on what they touch. This module rewrites FastAPI's document once:
the two error shapes become components, and each operation lists the statuses that its kind of
route can answer, derived from what FastAPI knows of it (its security, path parameters,
parameters and body, and the part of the API it belongs to).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from sandcastle.api.errors import ALLOWED_TYPES
from sandcastle.config import Settings
from sandcastle.services.limits import MIN_TIMEOUT_MS

ERROR = "#/components/schemas/Error"
EXECUTE_ERROR = "#/components/schemas/ExecuteValidationError"

_DESCRIPTIONS = {
    400: "The request could not be read: a body that does not parse as its content type, or a "
    "request line or headers the HTTP server refuses (then plain text, e.g. a URL too long).",
    401: "Missing, unknown or revoked API key.",
    403: "The key's role or project scope, or the org's quota or credits, forbid this.",
    404: "Not found, or not visible to this key (another org's, another member's).",
    409: "The resource's state forbids this now (e.g. the sandbox is paused or ended).",
    413: "The request body is larger than this route takes.",
    422: "Invalid input; `errors` says which field and why.",
    429: "Too many requests with this key (see `Retry-After`), or the org runs its maximum "
    "of sandboxes.",
    500: "Server error.",
    502: "The sandbox's agent could not be reached or broke off.",
    504: "The database stayed busy (nothing was written; send the request again), or the "
    "sandbox's agent did not answer in time.",
}

#: Paths whose operations reach into a sandbox: its state may conflict, its agent may fail.
_SANDBOX_SCOPED = ("/v1/sandboxes/{sandbox_id}", "/api/v1/org/{org}/sandboxes/{sandbox_id}")


def error_schemas() -> dict[str, Any]:
    """The envelope, and ``execute.txt``'s validation error."""
    return {
        "Error": {
            "title": "Error",
            "description": "Every error of the control plane (org-sandboxes-list.txt).",
            "type": "object",
            "required": ["code", "detail", "type"],
            "additionalProperties": False,
            "properties": {
                "code": {"type": "integer", "minimum": 400, "maximum": 599},
                "detail": {"type": "string"},
                "type": {"type": "string", "enum": sorted(ALLOWED_TYPES)},
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["loc", "msg", "type"],
                        "additionalProperties": False,
                        "properties": {
                            "loc": {
                                "type": "array",
                                "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                            },
                            "msg": {"type": "string"},
                            "type": {"type": "string"},
                        },
                    },
                },
            },
        },
        "ExecuteValidationError": {
            "title": "ExecuteValidationError",
            "description": "A validation error of the execute routes (execute.txt).",
            "type": "object",
            "required": ["message", "errors"],
            "properties": {
                "message": {"type": "string"},
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["field", "error"],
                        "properties": {"field": {"type": "string"}, "error": {"type": "string"}},
                    },
                },
            },
        },
    }


def settings_bounds(s: Settings) -> dict[str, dict[str, tuple[int, int]]]:
    """Request fields whose bounds are the server's settings: schema → field → (min, max)."""
    timeout = (MIN_TIMEOUT_MS, s.max_timeout_ms)
    return {
        "SandboxCreateBody": {
            "vcpus": (1, s.max_vcpus),
            "memory_mb": (s.min_memory_mb, s.max_memory_mb),
            "disk_mb": (s.min_disk_mb, s.max_disk_mb),
            "timeout_ms": timeout,
        },
        "TimeoutBody": {"timeout_ms": timeout},
        "RunCreateBody": {"timeout_secs": (1, s.run_max_timeout_secs)},
    }


def _bound(schemas: dict[str, Any], bounds: dict[str, dict[str, tuple[int, int]]]) -> None:
    for name, fields in bounds.items():
        properties = schemas[name]["properties"]
        for field, (low, high) in fields.items():
            prop = properties[field]
            for branch in prop.get("anyOf", [prop]):
                if branch.get("type") == "integer":
                    branch["minimum"], branch["maximum"] = low, high


#: Responses that a ``fields`` mask cuts down (with one, any of the sandbox's fields may be
#: missing), and those that hold them (whose own fields stay).
_MASKED = "SandboxOut"
_MASKABLE = (_MASKED, "SandboxListOut")


def _masked_twin(schemas: dict[str, Any], name: str) -> str:
    """``<name>Masked``: ``name`` with its maskable parts masked (nothing required of the
    sandbox itself)."""
    twin = f"{name}Masked"
    if twin not in schemas:
        copied = copy.deepcopy(schemas[name])
        if name == _MASKED:
            copied.pop("required", None)
        copied["title"] = twin
        schemas[twin] = _remask(schemas, copied)
    return twin


def _remask(schemas: dict[str, Any], node: Any) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref", "")
        target = ref.rsplit("/", 1)[-1]
        if target in _MASKABLE:
            return {"$ref": f"#/components/schemas/{_masked_twin(schemas, target)}"}
        return {key: _remask(schemas, value) for key, value in node.items()}
    if isinstance(node, list):
        return [_remask(schemas, value) for value in node]
    return node


def _document_masks(schemas: dict[str, Any], operation: dict[str, Any]) -> None:
    """An operation with a ``fields`` query answers either the whole object or the masked."""
    if not any(p.get("name") == "fields" for p in operation.get("parameters", [])):
        return
    for content in operation["responses"].get("200", {}).get("content", {}).values():
        whole = content["schema"]
        content["schema"] = {"anyOf": [whole, _remask(schemas, whole)]}


def error_statuses(path: str, method: str, operation: dict[str, Any]) -> set[int]:
    """What an operation of this kind can answer besides its successes."""
    statuses = {400, 500}
    if operation.get("security"):
        statuses |= {401, 403, 429, 504}
    if "{" in path:
        statuses.add(404)
    if operation.get("parameters") or "requestBody" in operation:
        statuses.add(422)
    if "requestBody" in operation:
        statuses.add(413)
    if path.startswith(_SANDBOX_SCOPED):
        statuses |= {409, 502}
    if path in ("/v1/sandboxes", "/api/v1/org/{org}/sandboxes") and method == "post":
        statuses |= {404, 409, 502}  # the template or snapshot, its state, the new agent
    if path.startswith("/v1/orgs/") and method in ("post", "patch", "delete"):
        statuses.add(409)  # already exists; the last owner
    return statuses


#: ``responses=`` of a route whose validation errors use ``execute.txt``'s shape (the route is
#: also marked with ``errors.execute_document_errors``, which makes it answer so).
EXECUTE_DOCUMENT_422: dict[int | str, dict[str, Any]] = {
    422: {
        "description": "Invalid input, in execute.txt's shape.",
        "content": {"application/json": {"schema": {"$ref": EXECUTE_ERROR}}},
    }
}


def rewrite(
    document: dict[str, Any],
    extra: Iterable[type],
    bounds: dict[str, dict[str, tuple[int, int]]],
) -> dict[str, Any]:
    """``document`` with the errors above; ``extra``: models to add as components; ``bounds``:
    the settings' limits of request fields. An error status a route documents itself (other
    than FastAPI's default 422) is kept."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas.update(error_schemas())
    for model in extra:
        assert issubclass(model, BaseModel)
        found = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(found.pop("$defs", {}))
        schemas[model.__name__] = found
    _bound(schemas, bounds)
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            _document_masks(schemas, operation)
            responses = operation.setdefault("responses", {})
            for status in sorted(error_statuses(path, method, operation)):
                if str(status) not in responses or _fastapi_default(responses[str(status)]):
                    responses[str(status)] = {"description": _DESCRIPTIONS[status]}
            for status, response in responses.items():
                # A route's own description of an error stays; its body is the envelope.
                if int(status) >= 400 and "content" not in response:
                    response["content"] = {"application/json": {"schema": {"$ref": ERROR}}}
            # The HTTP server's own refusals come before the app, as plain text.
            responses["400"]["content"]["text/plain"] = {"schema": {"type": "string"}}
    return document


def _fastapi_default(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref", "").endswith("/HTTPValidationError"))


def install(app: FastAPI, settings: Settings, extra: Iterable[type] = ()) -> None:
    """Serve the rewritten document at ``/openapi.json`` (built once, on first use)."""
    models = list(extra)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = rewrite(document, models, settings_bounds(settings))
        return app.openapi_schema

    setattr(app, "openapi", openapi)  # noqa: B010 - FastAPI's documented way to replace it

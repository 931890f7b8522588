"""The agent API (``sandbox-agent-api.txt``) of one sandbox, at ``/v1/sandboxes/{id}/agent/…``.

The same routes answer on the sandbox's own host, ``{id}.{sandbox_domain}`` (``sb-…`` or
``sb_…``), at the document's paths ``/``, ``/execute``, ``/files/upload/-/*path`` and
``/files/download/-/*path``: ``sandcastle.api.hostrouting`` rewrites those requests onto these.
Authentication is the usual Bearer key; another tenant's sandbox is 404. The document specifies
no error bodies, so errors use the control plane's envelope. See ``docs/AGENT_API.md``.

``POST /execute`` also serves ``execute.txt``. The body decides: one with any of
``context_id``, ``language``, ``timeout_ms`` or ``env_vars`` is ``execute.txt``'s and gets that
document's result and validation errors; any other is this document's ``{code, timeout_secs}``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, ValidationError

from sandcastle.api.bounded import streams_body
from sandcastle.api.deps import PrincipalDep, ServicesDep
from sandcastle.api.errors import execute_validation
from sandcastle.api.openapi import ERROR, EXECUTE_ERROR
from sandcastle.api.request_body import RequestBody
from sandcastle.api.routes.files import (
    FileInfoOut,
    download_response,
    file_out,
    request_body,
)
from sandcastle.api.schemas import ExecuteBody, ExecuteOut, execute_out, rfc3339
from sandcastle.errors import FieldError
from sandcastle.services.agent_api import AgentExecution
from sandcastle.services.executions import ExecuteRequest

router = APIRouter(prefix="/v1/sandboxes", tags=["agent API"])

#: Fields only ``execute.txt``'s request has: a body with any of them is that document's.
EXECUTE_DOCUMENT_FIELDS = frozenset({"context_id", "language", "timeout_ms", "env_vars"})
#: An execute body larger than this is refused before it is parsed.
MAX_EXECUTE_BODY_BYTES = 8 * 1024 * 1024


class PingOut(BaseModel):
    last_activity: str = Field(description="RFC 3339: the last request or execution.")


class AgentExecuteBody(RequestBody):
    code: str
    timeout_secs: float = Field(default=60, gt=0, le=3600)


class AgentEventOut(BaseModel):
    type: Literal["stream", "display_data", "file", "error"]
    timestamp: str
    data: dict[str, Any]


class AgentExecuteOut(BaseModel):
    status: Literal["ok", "timeout"]
    events: list[AgentEventOut]


def execution_out(execution: AgentExecution) -> dict[str, Any]:
    return {
        "status": execution.status,
        "events": [
            {"type": e.type, "timestamp": rfc3339(e.timestamp), "data": e.data}
            for e in execution.events
        ],
    }


@router.get("/{sandbox_id}/agent", response_model=PingOut, include_in_schema=False)
@router.get("/{sandbox_id}/agent/", response_model=PingOut)
async def ping(sandbox_id: str, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    """200 once the sandbox's agent answers, with the time of the sandbox's last activity.

    Pings themselves are not activity.
    """
    return {"last_activity": rfc3339(await services.agent_api.ping(principal, sandbox_id))}


_EXECUTE_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    AgentExecuteBody.model_json_schema(),
                    ExecuteBody.model_json_schema(),
                ]
            }
        }
    },
}


@router.post(
    "/{sandbox_id}/agent/execute",
    # Two shapes, so no response_model: its $ref would sit beside the oneOf (and win).
    response_model=None,
    openapi_extra={"requestBody": _EXECUTE_BODY},
    responses={
        200: {
            "description": "``{status, events}``; or ``execute.txt``'s result for its body.",
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/AgentExecuteOut"},
                            {"$ref": "#/components/schemas/ExecuteOut"},
                        ]
                    }
                }
            },
        },
        422: {
            "description": "Invalid input: in execute.txt's shape for its body, else the envelope.",
            "content": {
                "application/json": {
                    "schema": {"oneOf": [{"$ref": ERROR}, {"$ref": EXECUTE_ERROR}]}
                }
            },
        },
    },
)
async def execute(
    sandbox_id: str, request: Request, principal: PrincipalDep, services: ServicesDep
) -> Any:
    """Run code in the sandbox's default Python context and return its events.

    A body with any of ``context_id``, ``language``, ``timeout_ms`` or ``env_vars`` is
    ``execute.txt``'s instead, answered as ``POST /v1/sandboxes/{id}/execute`` answers it.
    """
    try:
        raw = json.loads(await _bounded_body(request))
    except ValueError as exc:
        raise FieldError("body", "the body must be a JSON object") from exc
    if not isinstance(raw, dict):
        raise FieldError("body", "the body must be a JSON object")
    if not EXECUTE_DOCUMENT_FIELDS.isdisjoint(raw):
        return await _execute_document(sandbox_id, raw, principal, services)
    try:
        body = AgentExecuteBody.model_validate(raw)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        ) from exc
    execution = await services.agent_api.execute(
        principal, sandbox_id, body.code, body.timeout_secs
    )
    return execution_out(execution)


async def _execute_document(
    sandbox_id: str, raw: dict[str, Any], principal: PrincipalDep, services: ServicesDep
) -> JSONResponse:
    try:
        body = ExecuteBody.model_validate(raw)
    except ValidationError as exc:
        return execute_validation(
            [
                {"field": ".".join(str(p) for p in e["loc"]) or "body", "error": e["msg"]}
                for e in exc.errors()
            ]
        )
    try:
        context_id, result = await services.executions.execute(
            principal,
            sandbox_id,
            ExecuteRequest(
                code=body.code,
                context_id=body.context_id,
                language=body.language,
                env_vars=body.env_vars,
                timeout_ms=body.timeout_ms,
            ),
        )
    except FieldError as exc:
        return execute_validation([{"field": exc.field, "error": exc.message}])
    out = ExecuteOut.model_validate(execute_out(context_id, result))
    return JSONResponse(out.model_dump(by_alias=True, exclude_unset=True))


@router.post(
    "/{sandbox_id}/agent/files/upload/-/{path:path}",
    status_code=201,
    response_model=FileInfoOut,
    response_model_exclude_unset=True,
    openapi_extra={
        "requestBody": {
            "required": False,  # no body is an empty file
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
    responses={
        409: {"description": "The file exists already."},
        411: {"description": "No Content-Length."},
    },
)
@streams_body
async def upload(
    sandbox_id: str, path: str, request: Request, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Create a file from the raw body (``Content-Length`` required); parents are created.

    ``path`` is relative to the home (``/files/upload/-/data/x.csv`` is
    ``/home/user/data/x.csv``); an absolute path takes one more slash
    (``/files/upload/-//tmp/x.csv``). 409 if the file exists.
    """
    length = _content_length(request)
    _, info = await services.files.write(
        principal,
        sandbox_id,
        path,
        request_body(request),
        exclusive=True,
        expected_size=length,
    )
    return file_out(info)


@router.get(
    "/{sandbox_id}/agent/files/download/-/{path:path}",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            }
        },
        404: {"description": "No such file."},
    },
)
async def download(
    sandbox_id: str, path: str, principal: PrincipalDep, services: ServicesDep
) -> StreamingResponse:
    """A file's bytes as an attachment, ``Content-Type`` guessed from its name.

    ``path`` as for upload: relative to the home, absolute with one more slash.
    """
    opened = await services.files.open_read(principal, sandbox_id, path)
    return download_response(opened, as_attachment=True)


async def _bounded_body(request: Request) -> bytes:
    # Parsed by hand (the body decides the document), so bounded by hand too.
    body = bytearray()
    async for chunk in request_body(request):
        body += chunk
        if len(body) > MAX_EXECUTE_BODY_BYTES:
            raise FieldError("body", f"the body exceeds {MAX_EXECUTE_BODY_BYTES} bytes")
    return bytes(body)


def _content_length(request: Request) -> int:
    value = request.headers.get("content-length")
    if value is None:
        raise HTTPException(411, "Content-Length is required")
    if not value.isdigit():
        raise HTTPException(400, "Content-Length must be a non-negative integer")
    return int(value)

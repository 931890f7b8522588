"""``/v1/templates`` builds: a Dockerfile and a build context in, an org's template out.

``POST /v1/templates`` takes ``multipart/form-data`` (``name``, ``dockerfile``, an optional
``context`` tar archive, ``build_args`` as a JSON object, ``public``) and answers 202 with the
build's record once the Dockerfile and the context were checked; the build runs on.
``GET /v1/templates/{name}/builds/{build_id}`` is its status and the end of its log, ``.../logs``
the whole log as NDJSON, followed while the build runs.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from sandcastle.api import multipart
from sandcastle.api.bounded import streams_body
from sandcastle.api.deps import PrincipalDep, ServicesDep
from sandcastle.api.routes.files import request_body
from sandcastle.api.schemas import rfc3339
from sandcastle.api.streaming import NDJSON
from sandcastle.errors import FieldError, LimitExceededError
from sandcastle.runtime.templates.catalogue import DEFAULT_KEYS, split_key
from sandcastle.runtime.templates.context_archive import MAX_ARCHIVE_BYTES
from sandcastle.runtime.templates.dockerfile import MAX_DOCKERFILE_BYTES
from sandcastle.runtime.templates.records import BuildRecord
from sandcastle.services.template_builds import BuildRequest

router = APIRouter(prefix="/v1/templates", tags=["templates"])

#: A form field other than the Dockerfile and the context (``name``, ``build_args``, ``public``).
MAX_FIELD_BYTES = 64 * 1024
#: The end of the log a build's status carries.
LOG_TAIL_BYTES = 16 * 1024


class BuildOut(BaseModel):
    build_id: str
    name: str = Field(description="The template's name.")
    template_id: str = Field(
        description="What sandboxes of it record as their `template`: the name, with `+<org "
        "id>` for an org's own template. Either may be given as a sandbox's `template`."
    )
    public: bool
    status: Literal["building", "ready", "failed"]
    created_at: str
    finished_at: str | None
    error: str | None = Field(
        description="Why the build failed: the failing step (a Dockerfile's line) and the last "
        "lines of its output."
    )
    size_bytes: int | None
    logs: str | None = Field(
        default=None, description=f"The last {LOG_TAIL_BYTES // 1024} KiB of the build's log."
    )


def build_out(record: BuildRecord, logs: str | None = None) -> dict[str, Any]:
    name, owner = split_key(record.template)
    return {
        "build_id": record.build_id,
        "name": name,
        "template_id": record.template,
        "public": owner is None,
        "status": record.status.value,
        "created_at": rfc3339(record.created_at),
        "finished_at": rfc3339(record.finished_at) if record.finished_at else None,
        "error": record.error,
        "size_bytes": record.size_bytes,
        "logs": logs,
    }


_FORM = {
    "multipart/form-data": {
        "schema": {
            "type": "object",
            "required": ["name", "dockerfile"],
            "properties": {
                "name": {"type": "string", "description": "The template's name."},
                "dockerfile": {
                    "type": "string",
                    "description": "The Dockerfile (a file or a text field, up to 256 KiB).",
                },
                "context": {
                    "type": "string",
                    "format": "binary",
                    "description": "The build context: a tar archive, plain or compressed "
                    "(gzip, bzip2, xz), up to 512 MiB.",
                },
                "build_args": {
                    "type": "string",
                    "description": 'A JSON object of `ARG` values, e.g. `{"VERSION": "2"}`.',
                },
                "public": {
                    "type": "boolean",
                    "description": "Build the server's public template (operators only).",
                },
                **{
                    key: {
                        "type": "integer",
                        "description": f"The `{key}` its sandboxes get when they ask for none.",
                    }
                    for key in DEFAULT_KEYS
                },
            },
        }
    }
}


@router.post(
    "",
    status_code=202,
    response_model=BuildOut,
    openapi_extra={"requestBody": {"required": True, "content": _FORM}},
)
@streams_body
async def build_template(
    request: Request, response: Response, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Build a template from a Dockerfile and its build context, as the org's own.

    The Dockerfile and the context are checked before the answer: an unsupported instruction is
    a 422 naming its line, a context holding `..`, absolute links or devices a 422. The build
    then runs in the background (its `RUN` steps each in a gVisor sandbox); follow it with
    `GET /v1/templates/{name}/builds/{build_id}` or its `/logs`.
    """
    spool = services.settings.resolved_templates_dir / ".uploads"
    spool.mkdir(parents=True, exist_ok=True)
    archive = spool / f"context-{secrets.token_hex(8)}"
    try:
        form = await _read_form(request, archive)
        record = await services.template_builds.start(principal, form)
    finally:
        archive.unlink(missing_ok=True)
    name = split_key(record.template)[0]
    response.headers["Location"] = f"/v1/templates/{name}/builds/{record.build_id}"
    return build_out(record)


@router.get("/{name}/builds/{build_id}", response_model=BuildOut)
async def get_build(
    name: str, build_id: str, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """A build's status, and the end of its log."""
    builds = services.template_builds
    record = await builds.get(principal, name, build_id)
    return build_out(record, await builds.log_tail(record.build_id, LOG_TAIL_BYTES))


class NdjsonResponse(StreamingResponse):
    """A stream of JSON lines, so documented (the OpenAPI document takes the class's type)."""

    media_type = NDJSON


class LogEvent(BaseModel):
    type: Literal["log", "end", "keepalive"]
    text: str | None = None
    build: BuildOut | None = None


@router.get(
    "/{name}/builds/{build_id}/logs",
    response_class=NdjsonResponse,
    # The model, not its JSON schema inline: that would carry ``$defs`` references no OpenAPI
    # reader resolves (ReDoc then renders nothing).
    responses={200: {"description": "The log's events, one per line (NDJSON).", "model": LogEvent}},
)
async def follow_build_log(
    name: str, build_id: str, principal: PrincipalDep, services: ServicesDep
) -> NdjsonResponse:
    """The build's log as NDJSON, from its start and as it is written: `{"type": "log",
    "text": ...}` per line, then `{"type": "end", "build": {...}}` once the build ended, and
    `{"type": "keepalive"}` after 15 s without a line."""
    builds = services.template_builds
    await builds.get(principal, name, build_id)  # a 404 before the stream starts

    async def events() -> AsyncIterator[bytes]:
        pending = b""
        async for chunk in builds.follow(build_id):
            if not chunk:
                yield _event({"type": "keepalive"})
                continue
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                yield _event({"type": "log", "text": line.decode(errors="replace")})
        if pending:
            yield _event({"type": "log", "text": pending.decode(errors="replace")})
        record = await builds.get(principal, name, build_id)
        yield _event({"type": "end", "build": build_out(record)})

    return NdjsonResponse(events())


def _event(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode() + b"\n"


async def _read_form(request: Request, archive: Path) -> BuildRequest:
    try:
        boundary = multipart.boundary_of(request.headers.get("content-type"))
    except multipart.MultipartError as exc:
        raise FieldError("body", str(exc)) from exc
    fields: dict[str, str] = {}
    has_context = False
    events = multipart.parse(request_body(request), boundary)
    try:
        async for event in events:
            if not isinstance(event, multipart.PartStart):
                continue
            content = multipart.part_content(events)
            if event.name == "context":
                await _spool(content, archive)
                has_context = True
            elif event.name in ("name", "dockerfile", "build_args", "public", *DEFAULT_KEYS):
                limit = MAX_DOCKERFILE_BYTES if event.name == "dockerfile" else MAX_FIELD_BYTES
                fields[event.name] = await _collect(event.name, content, limit)
            else:
                raise FieldError(event.name, f"unknown form field {event.name!r}")
    except multipart.MultipartError as exc:
        raise FieldError("body", str(exc)) from exc
    for required in ("name", "dockerfile"):
        if required not in fields:
            raise FieldError(required, f"the form has no {required!r}")
    return BuildRequest(
        name=fields["name"].strip(),
        dockerfile=fields["dockerfile"],
        context_archive=archive if has_context else None,
        build_args=_build_args(fields.get("build_args")),
        public=_flag("public", fields.get("public", "false")),
        defaults={key: _integer(key, fields[key]) for key in DEFAULT_KEYS if key in fields},
    )


async def _collect(name: str, content: AsyncIterator[bytes], limit: int) -> str:
    data = b""
    async for chunk in content:
        data += chunk
        if len(data) > limit:
            raise LimitExceededError(f"the form field {name!r} is over {limit} bytes")
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise FieldError(name, f"{name!r} is not UTF-8 text") from exc


async def _spool(content: AsyncIterator[bytes], archive: Path) -> None:
    """Write the context archive to ``archive`` as it arrives, up to its limit."""
    written = 0
    with archive.open("wb") as file:
        async for chunk in content:
            written += len(chunk)
            if written > MAX_ARCHIVE_BYTES:
                raise LimitExceededError(
                    f"the build context archive is over {MAX_ARCHIVE_BYTES // 2**20} MiB"
                )
            await asyncio.to_thread(file.write, chunk)  # a disk write: off the event loop


def _build_args(text: str | None) -> dict[str, str]:
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise FieldError("build_args", "build_args must be a JSON object") from exc
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise FieldError("build_args", "build_args must be a JSON object of strings")
    return value


def _integer(name: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError as exc:
        raise FieldError(name, f"{name!r} must be an integer") from exc


def _flag(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in ("true", "false", "1", "0"):
        raise FieldError(name, f"{name!r} must be true or false")
    return lowered in ("true", "1")

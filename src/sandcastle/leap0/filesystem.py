"""Leap0's file calls, on the control plane (``/v1/sandbox/{id}/filesystem/…``), over our
file service.

Contents stream both ways, as on our own API: a write goes to the agent as the body arrives and
replaces the file only once complete; a read streams the file (from its start, skipping up to
``offset``, when the SDK asks for a range). Paths are the sandbox's; relative ones resolve
against the home, ``/home/user``, and the path rules of ``docs/AGENT_API.md`` apply.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Any, cast

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from sandcastle.api.bounded import streams_body
from sandcastle.api.deps import ServicesDep
from sandcastle.api.routes.files import (
    PATH_LIMITS,
    DownloadResponse,
    download_response,
    request_body,
)
from sandcastle.errors import ConflictError, FieldError
from sandcastle.leap0.access import WorkDep
from sandcastle.leap0.schemas import DeleteBody, ListBody, ReadFileBody
from sandcastle.services.files import FileDownload, FileInfo

router = APIRouter(prefix="/v1/sandbox/{sandbox_id}/filesystem", tags=["leap0"])

_OCTET = "application/octet-stream"


def item_out(info: FileInfo) -> dict[str, Any]:
    """One entry as the SDK's ``FileInfo`` reads it: ``mode`` an octal string, ``mtime`` unix
    seconds (both go through ``int()``/``str`` there, so neither is ever null)."""
    return {
        "name": info.name,
        "path": info.path,
        "is_dir": info.type == "dir",
        "size": info.size,
        "mode": f"{info.mode:04o}",
        "mtime": int(info.mtime.timestamp()),
        "is_symlink": info.type == "symlink",
        "link_target": info.target or "",
    }


@router.post("/write-file", status_code=204)
@streams_body
async def write_file(
    call: WorkDep,
    request: Request,
    services: ServicesDep,
    path: Annotated[str, Query(**PATH_LIMITS)],
    permissions: Annotated[str | None, Query(max_length=8)] = None,
) -> Response:
    """The raw body becomes the file (parents created, an existing file replaced)."""
    if permissions is not None:
        # Files are created with the sandbox user's umask; the agent has no chmod to offer.
        raise FieldError("permissions", "setting permissions is not supported by this server")
    await services.files.write(
        call.principal, call.sandbox_id, path, request_body(request), exclusive=False
    )
    return Response(status_code=204)


@router.post("/read-file", response_class=StreamingResponse)
async def read_file(body: ReadFileBody, call: WorkDep, services: ServicesDep) -> StreamingResponse:
    """The file's bytes, raw (the SDK decodes text itself); 404 if there is no such file."""
    opened = await services.files.open_read(call.principal, call.sandbox_id, body.path)
    if body.offset is None and body.limit is None:
        return download_response(opened, as_attachment=False)
    return range_response(opened, body.offset or 0, body.limit)


def range_response(download: FileDownload, offset: int, limit: int | None) -> DownloadResponse:
    """``limit`` bytes of a download from ``offset``."""
    available = max(0, download.size - offset)
    length = available if limit is None else min(limit, available)
    return DownloadResponse(
        download,
        {"Content-Length": str(length)},
        content=_sliced(download, offset, length),
        media_type=_OCTET,
    )


async def _sliced(download: FileDownload, offset: int, length: int) -> AsyncIterator[bytes]:
    skip, left = offset, length
    if left == 0:
        return
    # Stopping early must close the chunk stream now, not whenever it is collected; chunks()
    # is an async generator, though typed as the iterator it is used as.
    stream = cast("AsyncGenerator[bytes, None]", download.chunks())
    async with contextlib.aclosing(stream) as chunks:
        async for chunk in chunks:
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            piece = chunk[skip : skip + left]
            skip = 0
            left -= len(piece)
            yield piece
            if left == 0:
                return


@router.post("/ls")
async def ls(body: ListBody, call: WorkDep, services: ServicesDep) -> dict[str, Any]:
    """A directory's entries by name (at most 10,000)."""
    listing = await services.files.list(call.principal, call.sandbox_id, body.path)
    return {"items": [item_out(entry) for entry in listing.entries]}


@router.post("/delete", status_code=204)
async def delete(body: DeleteBody, call: WorkDep, services: ServicesDep) -> Response:
    """Delete a file, a link, or a directory (one with anything in it only if ``recursive``)."""
    if not body.recursive:
        info = await services.files.stat(call.principal, call.sandbox_id, body.path)
        if info.type == "dir":
            listing = await services.files.list(call.principal, call.sandbox_id, info.path, limit=1)
            if listing.entries:
                raise ConflictError(f"not_empty: {info.path} is not empty; delete it recursively")
    await services.files.delete(call.principal, call.sandbox_id, body.path)
    return Response(status_code=204)

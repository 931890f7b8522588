"""envd's plain HTTP routes: ``/health`` and ``/files`` (download, and upload as a form or raw).

Paths are the sandbox's; a relative one is under ``/home/user``, as in E2B. Commands and file
operations run as the sandbox's one user: ``username`` may name it (``user``) and nothing else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from sandcastle.api import multipart
from sandcastle.api.bounded import streams_body
from sandcastle.api.deps import ServicesDep
from sandcastle.api.routes.files import download_response, request_body
from sandcastle.e2b.sandbox_calls import EnvdCall
from sandcastle.e2b.users import check_user
from sandcastle.errors import InvalidRequestError
from sandcastle.services.files import FileInfo

router = APIRouter(tags=["e2b-envd"])

PathParam = Annotated[str | None, Query(max_length=4096)]
UserParam = Annotated[str | None, Query(max_length=64)]


def entry_out(info: FileInfo) -> dict[str, Any]:
    return {"name": info.name, "type": "dir" if info.type == "dir" else "file", "path": info.path}


@router.get("/health", status_code=204)
async def health(call: EnvdCall) -> Response:
    call.sandbox.require_running()
    return Response(status_code=204)


@router.get("/files", response_class=StreamingResponse)
async def download(
    call: EnvdCall, services: ServicesDep, path: PathParam = None, username: UserParam = None
) -> StreamingResponse:
    check_user(username)
    if not path:
        raise InvalidRequestError("path is required")
    opened = await services.files.open_read(call.principal, call.sandbox_id, path)
    return download_response(opened, as_attachment=True)


@router.post("/files")
@streams_body
async def upload(
    call: EnvdCall,
    request: Request,
    services: ServicesDep,
    path: PathParam = None,
    username: UserParam = None,
) -> list[dict[str, Any]]:
    """A raw body (``application/octet-stream``) to ``path``, or a form whose parts each go to
    ``path`` (one part) or to their own file name (a path, relative ones under the home)."""
    check_user(username)
    if request.headers.get("content-encoding", "identity").lower() != "identity":
        # Stored as sent would be a corrupt file: refused, so the client can send it plain.
        raise InvalidRequestError("compressed uploads are not supported: send the bytes plain")
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/"):
        if not path:
            raise InvalidRequestError("path is required for a raw upload")
        return [await _write(call, services, path, request_body(request))]
    try:
        boundary = multipart.boundary_of(content_type)
    except multipart.MultipartError as exc:
        raise InvalidRequestError(str(exc)) from exc
    written: list[dict[str, Any]] = []
    events = multipart.parse(request_body(request), boundary)
    try:
        async for filename, content in multipart.file_parts(events):
            target = path if path and not written else filename
            if not target:
                raise InvalidRequestError("a file part has no name and no path was given")
            written.append(await _write(call, services, target, content))
    except multipart.MultipartError as exc:
        raise InvalidRequestError(str(exc)) from exc
    if not written:
        raise InvalidRequestError("the form holds no file (a part with a file name)")
    return written


async def _write(
    call: EnvdCall, services: ServicesDep, path: str, body: AsyncIterator[bytes]
) -> dict[str, Any]:
    _, info = await services.files.write(
        call.principal, call.sandbox_id, path, body, exclusive=False
    )
    return entry_out(info)

"""``/v1/sandboxes/{id}/files``: list, stat, mkdir, delete, rename, read, write, upload.

Paths are sandbox paths; relative ones resolve against the user's home (``/home/user``). Paths
into the agent's own mounts (``/run/sandcastle``, ``/opt/sandcastle``, ``/proc``, ``/sys``,
``/dev``), directly or through a symlink, are refused with 403; malformed paths (NUL bytes,
``..`` above ``/``, a component over 255 bytes, over 4096 bytes in all) with 422. File contents
stream both ways; the server never holds a whole file.
"""

from __future__ import annotations

import mimetypes
import posixpath
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from sandcastle.agent import layout
from sandcastle.api import multipart
from sandcastle.api.bounded import streams_body
from sandcastle.api.deps import PrincipalDep, ServicesDep
from sandcastle.api.request_body import RequestBody
from sandcastle.api.schemas import rfc3339
from sandcastle.errors import FieldError, InvalidRequestError
from sandcastle.services.files import FileDownload, FileInfo

router = APIRouter(prefix="/v1/sandboxes", tags=["files"])

#: What a JSON Schema can say of a sandbox path. The agent judges paths (NUL, over 4096 bytes
#: of UTF-8, a component over 255, ``..`` above ``/``) and answers every operation alike with
#: ``invalid_path``, so the schema's bounds are documented here but only a coarse length is
#: enforced before the agent (4096 characters may be up to 16 KiB).
PATH_LIMITS: dict[str, Any] = {
    "min_length": 1,
    "max_length": 16384,
    "json_schema_extra": {"maxLength": 4096, "pattern": "^[^\\x00]*$"},
}
_PATH_DOC = (
    "Sandbox path, relative to the home: at most 4096 bytes of UTF-8, components at most 255, "
    "no NUL."
)
PathQuery = Annotated[str, Query(**PATH_LIMITS, description=_PATH_DOC)]
_BINARY = {"schema": {"type": "string", "format": "binary"}}


class FileInfoOut(BaseModel):
    name: str
    path: str = Field(description="The resolved absolute path.")
    type: Literal["file", "dir", "symlink", "other"]
    size: int = Field(description="Bytes (for a symlink: the length of its target).")
    mode: int = Field(description="Permission bits, e.g. 420 for 0644.")
    mtime: str = Field(description="Last modification, RFC 3339.")
    target: str | None = Field(default=None, description="Where a symlink points.")


class ListingOut(BaseModel):
    path: str
    entries: list[FileInfoOut]
    truncated: bool = Field(description="True if the directory had more entries than returned.")


class MkdirBody(RequestBody):
    path: str = Field(**PATH_LIMITS, description=_PATH_DOC)


class RenameBody(RequestBody):
    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from", **PATH_LIMITS, description=_PATH_DOC)
    to: str = Field(**PATH_LIMITS, description=_PATH_DOC)
    overwrite: bool = False


class UploadOut(BaseModel):
    files: list[FileInfoOut]


def file_out(info: FileInfo) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": info.name,
        "path": info.path,
        "type": info.type,
        "size": info.size,
        "mode": info.mode,
        "mtime": rfc3339(info.mtime),
    }
    if info.target is not None:
        out["target"] = info.target
    return out


def content_type_of(name: str) -> str:
    return mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"


def attachment(name: str) -> str:
    return f"attachment; filename*=UTF-8''{quote(name, safe='')}"


class DownloadResponse(StreamingResponse):
    """Streams a :class:`FileDownload` (or ``content``, a part of it), and closes the download
    however the response ends."""

    def __init__(
        self,
        download: FileDownload,
        headers: dict[str, str],
        *,
        content: AsyncIterator[bytes] | None = None,
        media_type: str | None = None,
    ) -> None:
        super().__init__(
            download.chunks() if content is None else content,
            media_type=media_type or content_type_of(download.info.name),
            headers=headers,
        )
        self.download = download

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except ClientDisconnect:
            pass  # the client left: nothing to answer
        finally:
            await self.download.aclose()


def download_response(download: FileDownload, *, as_attachment: bool) -> StreamingResponse:
    headers = {"Content-Length": str(download.size)}
    if as_attachment:
        headers["Content-Disposition"] = attachment(download.info.name)
    return DownloadResponse(download, headers)


async def request_body(request: Request) -> AsyncIterator[bytes]:
    """The request body as it arrives; a client that leaves mid-body is a bad request."""
    try:
        async for chunk in request.stream():
            if chunk:
                yield chunk
    except ClientDisconnect as exc:
        raise InvalidRequestError("the client disconnected before the body was complete") from exc


@router.get("/{sandbox_id}/files", response_model=ListingOut, response_model_exclude_unset=True)
async def list_files(
    sandbox_id: str,
    principal: PrincipalDep,
    services: ServicesDep,
    path: PathQuery = layout.USER_HOME,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
) -> dict[str, Any]:
    """List a directory (symlinks are listed, not followed), sorted by name."""
    listing = await services.files.list(principal, sandbox_id, path, limit=limit)
    return {
        "path": listing.path,
        "entries": [file_out(e) for e in listing.entries],
        "truncated": listing.truncated,
    }


@router.get(
    "/{sandbox_id}/files/stat", response_model=FileInfoOut, response_model_exclude_unset=True
)
async def stat_file(
    sandbox_id: str, path: PathQuery, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Describe one file, directory or symlink (a symlink itself, not its target)."""
    return file_out(await services.files.stat(principal, sandbox_id, path))


@router.post(
    "/{sandbox_id}/files/mkdir",
    status_code=201,
    response_model=FileInfoOut,
    response_model_exclude_unset=True,
    responses={200: {"description": "The directory existed already."}},
)
async def make_directory(
    sandbox_id: str,
    body: MkdirBody,
    principal: PrincipalDep,
    services: ServicesDep,
    response: Response,
) -> dict[str, Any]:
    """Create a directory and any missing parents: 201, or 200 if it existed already."""
    created, info = await services.files.mkdir(principal, sandbox_id, body.path)
    if not created:
        response.status_code = 200
    return file_out(info)


@router.delete("/{sandbox_id}/files", status_code=204)
async def delete_file(
    sandbox_id: str, path: PathQuery, principal: PrincipalDep, services: ServicesDep
) -> Response:
    """Delete a file, a symlink (not its target), or a directory with all it contains."""
    await services.files.delete(principal, sandbox_id, path)
    return Response(status_code=204)


@router.post(
    "/{sandbox_id}/files/rename", response_model=FileInfoOut, response_model_exclude_unset=True
)
async def rename_file(
    sandbox_id: str, body: RenameBody, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Move ``from`` to ``to``; 409 if ``to`` exists unless ``overwrite`` is true."""
    info = await services.files.rename(
        principal, sandbox_id, body.from_, body.to, overwrite=body.overwrite
    )
    return file_out(info)


@router.get(
    "/{sandbox_id}/files/content",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": _BINARY}}},
)
async def read_file(
    sandbox_id: str, path: PathQuery, principal: PrincipalDep, services: ServicesDep
) -> StreamingResponse:
    """A regular file's bytes, streamed; ``Content-Type`` guessed from its name."""
    download = await services.files.open_read(principal, sandbox_id, path)
    return download_response(download, as_attachment=False)


@router.put(
    "/{sandbox_id}/files/content",
    status_code=201,
    response_model=FileInfoOut,
    response_model_exclude_unset=True,
    openapi_extra={
        # No body is an empty file, like an empty one.
        "requestBody": {"required": False, "content": {"application/octet-stream": _BINARY}}
    },
    responses={200: {"description": "An existing file was replaced."}},
)
@streams_body
async def write_file(
    sandbox_id: str,
    path: PathQuery,
    request: Request,
    principal: PrincipalDep,
    services: ServicesDep,
    response: Response,
    overwrite: Annotated[bool, Query(description="Replace an existing file (else 409).")] = True,
) -> dict[str, Any]:
    """Write the raw request body to a file, streamed; missing parents are created.

    201 if the file is new, 200 if it replaced one. The file appears only once the whole body
    has arrived: a failed or interrupted upload leaves nothing behind.
    """
    created, info = await services.files.write(
        principal, sandbox_id, path, request_body(request), exclusive=not overwrite
    )
    if not created:
        response.status_code = 200
    return file_out(info)


@router.post(
    "/{sandbox_id}/files/upload",
    status_code=201,
    response_model=UploadOut,
    response_model_exclude_unset=True,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "file": {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                            }
                        },
                    }
                }
            },
        }
    },
)
@streams_body
async def upload_files(
    sandbox_id: str,
    request: Request,
    principal: PrincipalDep,
    services: ServicesDep,
    path: PathQuery = layout.USER_HOME,
    overwrite: Annotated[bool, Query(description="Replace existing files (else 409).")] = False,
) -> dict[str, Any]:
    """Upload one or more files (``multipart/form-data``) into the directory ``path``.

    Every part with a filename is written to ``path/<filename>`` as it streams in; parts
    without one are ignored. The directory is a query parameter, not a form field, because
    parts are written as they arrive. Files are written in order: on an error the files before
    it stay, the failing one is not created.
    """
    # The sandbox first: another tenant's id is a 404 whatever the body holds.
    (await services.sandboxes.get(principal, sandbox_id)).require_running()
    try:
        boundary = multipart.boundary_of(request.headers.get("content-type"))
    except multipart.MultipartError as exc:
        raise FieldError("body", str(exc)) from exc
    written: list[dict[str, Any]] = []
    events = multipart.parse(request_body(request), boundary)
    try:
        async for filename, content in multipart.file_parts(events):
            name = _plain_name(filename)
            _, info = await services.files.write(
                principal,
                sandbox_id,
                posixpath.join(path, name),
                content,
                exclusive=not overwrite,
            )
            written.append(file_out(info))
    except multipart.MultipartError as exc:
        raise FieldError("body", str(exc)) from exc
    if not written:
        raise FieldError("file", "the form holds no file (a part with a filename)")
    return {"files": written}


def _plain_name(filename: str) -> str:
    if filename in ("", ".", "..") or "/" in filename or "\x00" in filename:
        raise FieldError("file", f"invalid_path: {filename!r} is not a plain file name")
    return filename

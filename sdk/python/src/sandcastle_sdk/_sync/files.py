# Generated from ../_async/files.py by sdk/python/tools/generate_sync.py: do not edit.
"""``sandbox.files``: read, write, list, stat, move and remove files in a sandbox; upload and
download large ones from and to local paths, streamed, with progress."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from sandcastle_sdk import errors
from sandcastle_sdk._http import drop_none
from sandcastle_sdk.models import FileInfo, Listing

from . import _io
from ._transport import SyncTransport

CHUNK = 1024 * 1024

#: ``progress(done, total)``: bytes moved so far and the whole (None when unknown).
Progress = Callable[[int, int | None], Any]


class SyncFiles:
    def __init__(self, transport: SyncTransport, base: str) -> None:
        self._t = transport
        self._base = f"{base}/files"

    def read(self, path: str) -> bytes:
        """A whole file's bytes (for large files, ``download`` streams to disk)."""
        response = self._t.send("GET", f"{self._base}/content", params={"path": path})
        return response.content

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return (self.read(path)).decode(encoding)

    def write(
        self,
        path: str,
        data: bytes | str | IO[bytes],
        *,
        overwrite: bool = True,
        progress: Progress | None = None,
    ) -> FileInfo:
        """Write ``data`` (bytes, text, or a binary file object, streamed) to ``path``;
        parent directories are made. ``overwrite=False`` refuses an existing file."""
        params = {"path": path, "overwrite": str(overwrite).lower()}
        if isinstance(data, str):
            data = data.encode()
        if isinstance(data, bytes):
            content: Any = data
            if progress is not None:
                content = _chunks_of_bytes(data, progress)
        else:
            content = _chunks_of_file(data, _size_of(data), progress)
        return self._t.model(
            FileInfo,
            "PUT",
            f"{self._base}/content",
            params=params,
            content=content,
            headers={"Content-Type": "application/octet-stream"},
        )

    def upload(
        self,
        local_path: str | os.PathLike[str],
        path: str,
        *,
        overwrite: bool = True,
        progress: Progress | None = None,
    ) -> FileInfo:
        """Stream a local file to ``path`` in the sandbox."""
        with open(local_path, "rb") as file:  # noqa: ASYNC230 - reads go through _io
            return self.write(path, file, overwrite=overwrite, progress=progress)

    def download(
        self,
        path: str,
        local_path: str | os.PathLike[str],
        *,
        progress: Progress | None = None,
    ) -> int:
        """Stream ``path`` to a local file (written whole or not at all); its size."""
        params = {"path": path}
        return stream_to_file(self._t, f"{self._base}/content", params, Path(local_path), progress)

    def list(self, path: str = ".", *, limit: int | None = None) -> Listing:
        params = drop_none(path=path, limit=limit)
        return self._t.model(Listing, "GET", self._base, params=params)

    def stat(self, path: str) -> FileInfo:
        return self._t.model(FileInfo, "GET", f"{self._base}/stat", params={"path": path})

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
        except errors.NotFoundError:
            return False
        return True

    def make_dir(self, path: str) -> None:
        """Make a directory and its parents (nothing happens if it exists)."""
        self._t.send("POST", f"{self._base}/mkdir", json={"path": path})

    def rename(self, source: str, destination: str, *, overwrite: bool = False) -> FileInfo:
        body = {"from": source, "to": destination, "overwrite": overwrite}
        return self._t.model(FileInfo, "POST", f"{self._base}/rename", json=body)

    def remove(self, path: str) -> None:
        """Remove a file, or a directory with everything in it."""
        self._t.send("DELETE", self._base, params={"path": path})


def stream_to_file(
    transport: SyncTransport,
    path: str,
    params: dict[str, str] | None,
    target: Path,
    progress: Progress | None,
) -> int:
    """Stream a download to ``target`` through a temporary file beside it, renamed into place
    once complete, so an interrupted download leaves no half file; the bytes written."""
    partial = target.with_name(f".{target.name}.partial")
    done = 0
    try:
        with transport.stream("GET", path, params=params) as response:
            total = _content_length(response.headers.get("Content-Length"))
            with open(partial, "wb") as file:  # noqa: ASYNC230 - writes go through _io
                for chunk in response.iter_bytes(CHUNK):
                    _io.write_chunk(file, chunk)
                    done += len(chunk)
                    if progress is not None:
                        _io.call(_progress(progress, total), done)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return done


def _size_of(file: IO[bytes]) -> int | None:
    try:
        return os.fstat(file.fileno()).st_size - file.tell()
    except (OSError, AttributeError, ValueError):
        return None


def _content_length(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _progress(progress: Progress, total: int | None) -> Callable[[int], Any]:
    return lambda done: progress(done, total)


def _chunks_of_bytes(data: bytes, progress: Progress) -> Iterator[bytes]:
    for start in range(0, len(data), CHUNK):
        chunk = data[start : start + CHUNK]
        yield chunk
        _io.call(_progress(progress, len(data)), start + len(chunk))


def _chunks_of_file(
    file: IO[bytes], total: int | None, progress: Progress | None
) -> Iterator[bytes]:
    done = 0
    while chunk := _io.read_chunk(file, CHUNK):
        yield chunk
        done += len(chunk)
        if progress is not None:
            _io.call(_progress(progress, total), done)

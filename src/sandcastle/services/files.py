"""Files in a sandbox: the control plane's side of the agent's file methods.

Whole files are never held in server memory. A download pulls chunks of :data:`CHUNK_BYTES`
from the agent with at most :data:`WINDOW` requests in flight, and pulls the next only when the
consumer (an HTTP response, which waits for a slow client) asks for it. An upload pushes the
request body as it arrives, :data:`WINDOW` chunks in flight at most, so a slow agent disk slows
the client through TCP instead of filling memory. Per transfer that bounds memory by about
``WINDOW × CHUNK_BYTES`` times a copy or two: chunks travel as raw payloads of the agent's
frames, never as base64 in JSON.

The agent's error codes are translated into :mod:`sandcastle.errors` here, once.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import anyio

from sandcastle.agent import protocol
from sandcastle.errors import (
    AgentError,
    AlreadyExistsError,
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    LimitExceededError,
    NotFoundError,
    SandboxPausedError,
    SandcastleError,
)
from sandcastle.runtime.channel import AgentLink, AgentRequestError
from sandcastle.services.auth import Principal
from sandcastle.services.sandboxes import SandboxService

log = logging.getLogger("sandcastle.files")

#: Bytes per agent request; base64 makes the frame 4/3 of this.
CHUNK_BYTES = 1024 * 1024
#: Chunk requests in flight per transfer: enough to keep the agent and the client busy at once.
WINDOW = 4
#: How long cleanup (closing or aborting a handle) may take after a transfer failed.
_CLEANUP_S = 10.0

_ERRORS: dict[str, type[SandcastleError]] = {
    "not_found": NotFoundError,
    "exists": AlreadyExistsError,
    "invalid_path": InvalidRequestError,
    "invalid": InvalidRequestError,
    "forbidden_path": ForbiddenError,
    "permission_denied": ForbiddenError,
    "is_a_directory": ConflictError,
    "not_a_directory": ConflictError,
    "not_a_file": ConflictError,
    "not_empty": ConflictError,
    "no_space": ConflictError,
    "busy": ConflictError,
    "cross_device": ConflictError,
    "incomplete": ConflictError,
    "too_many_handles": LimitExceededError,
}


def translate(exc: AgentRequestError) -> SandcastleError:
    """The domain error for an agent's file error code; unknown codes are agent failures."""
    cls = _ERRORS.get(exc.code, AgentError)
    return cls(f"{exc.code}: {exc}")


async def call(
    link: AgentLink,
    method: str,
    params: dict[str, Any],
    payload: bytes | None = None,
    *,
    returns_payload: bool = False,
) -> dict[str, Any]:
    try:
        return await link.call(method, params, payload=payload, returns_payload=returns_payload)
    except AgentRequestError as exc:
        raise translate(exc) from exc


@dataclass(frozen=True)
class FileInfo:
    name: str
    path: str
    type: Literal["file", "dir", "symlink", "other"]
    size: int
    mode: int
    mtime: datetime
    #: Where a symlink points, unresolved.
    target: str | None = None

    @classmethod
    def from_agent(cls, raw: dict[str, Any]) -> FileInfo:
        return cls(
            name=str(raw["name"]),
            path=str(raw["path"]),
            type=raw["type"],
            size=int(raw["size"]),
            mode=int(raw["mode"]),
            mtime=datetime.fromtimestamp(int(raw["mtime_ns"]) / 1e9, UTC),
            target=raw.get("target"),
        )


@dataclass(frozen=True)
class Listing:
    path: str
    entries: list[FileInfo]
    truncated: bool


class FileDownload:
    """An open file in a sandbox, read as a stream of chunks.

    Iterate :meth:`chunks` once; :meth:`aclose` (idempotent, also run when the iteration ends
    or is abandoned) cancels the chunks still in flight and closes the agent's handle.
    """

    def __init__(self, link: AgentLink, handle: str, info: FileInfo) -> None:
        self.info = info
        #: The size when opened: exactly this many bytes are streamed.
        self.size = info.size
        self._link = link
        self._handle = handle
        self._pending: deque[asyncio.Task[bytes]] = deque()
        self._closed = False

    async def chunks(self) -> AsyncIterator[bytes]:
        next_offset = 0
        try:
            while next_offset < self.size or self._pending:
                while len(self._pending) < WINDOW and next_offset < self.size:
                    length = min(CHUNK_BYTES, self.size - next_offset)
                    self._pending.append(asyncio.create_task(self._pull(next_offset, length)))
                    next_offset += length
                yield await self._pending.popleft()
        finally:
            await self.aclose()

    async def _pull(self, offset: int, length: int) -> bytes:
        reply = await call(
            self._link,
            "file.read.chunk",
            {"handle": self._handle, "offset": offset, "length": length},
            returns_payload=True,
        )
        data = chunk_of(reply)
        if data is None:
            raise AgentError(f"the agent answered a chunk of {self.info.path} without its bytes")
        if len(data) != length:
            raise ConflictError(f"{self.info.path} shrank while it was being read")
        return data

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Shielded: this also runs when the client went away and the response was cancelled.
        with anyio.move_on_after(_CLEANUP_S, shield=True):
            for task in self._pending:
                task.cancel()
            await asyncio.gather(*self._pending, return_exceptions=True)
            self._pending.clear()
            try:
                await self._link.call("file.read.close", {"handle": self._handle})
            except SandcastleError as exc:
                log.info("closing a read handle failed (the agent reaps it): %s", exc)


def chunk_of(reply: dict[str, Any]) -> bytes | None:
    """The bytes of a ``file.read.chunk`` reply: its payload, or (from an agent older than
    protocol 2, still running in a sandbox hibernated before an upgrade) its base64."""
    data = reply.get(protocol.PAYLOAD)
    if isinstance(data, bytes):
        return data
    encoded = reply.get("data_b64")
    if isinstance(encoded, str):
        try:
            return base64.b64decode(encoded, validate=True)
        except ValueError:
            return None
    return None


def _speaks_base64(link: AgentLink) -> bool:
    """Whether the agent predates raw payloads (see :func:`chunk_of`)."""
    version = (link.hello or {}).get("version")
    return isinstance(version, int) and version < 2


async def _rechunk(body: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    buffer = bytearray()
    async for piece in body:
        buffer += piece
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


async def push_file(
    link: AgentLink,
    handle: str,
    body: AsyncIterable[bytes],
    expected_size: int | None = None,
) -> tuple[bool, FileInfo]:
    """Stream ``body`` into an open write handle and commit it; abort it on any failure.

    At most :data:`WINDOW` chunks are in flight; the body is not read further until one lands.
    """
    pending: deque[asyncio.Task[None]] = deque()
    offset = 0

    async def send_chunk(at: int, data: bytes) -> None:
        params: dict[str, Any] = {"handle": handle, "offset": at}
        if _speaks_base64(link):
            params["data_b64"] = base64.b64encode(data).decode("ascii")
            await call(link, "file.write.chunk", params)
        else:
            await call(link, "file.write.chunk", params, payload=data)

    try:
        async for piece in _rechunk(body, CHUNK_BYTES):
            if len(pending) >= WINDOW:
                await pending.popleft()
            pending.append(asyncio.create_task(send_chunk(offset, piece)))
            offset += len(piece)
            if expected_size is not None and offset > expected_size:
                raise InvalidRequestError(f"the body is longer than {expected_size} bytes")
        while pending:
            await pending.popleft()
        if expected_size is not None and offset != expected_size:
            raise InvalidRequestError(
                f"the body has {offset} bytes, not the {expected_size} announced"
            )
        reply = await call(link, "file.write.close", {"handle": handle, "size": offset})
    except BaseException:
        for task in pending:
            task.cancel()
        with anyio.move_on_after(_CLEANUP_S, shield=True):
            await asyncio.gather(*pending, return_exceptions=True)
            try:
                await link.call("file.write.abort", {"handle": handle})
            except SandboxPausedError:
                link.after_thaw("file.write.abort", {"handle": handle})
            except SandcastleError as exc:
                log.info("aborting a write handle failed (the agent reaps it): %s", exc)
        raise
    return bool(reply["created"]), FileInfo.from_agent(reply["info"])


class FilesService:
    """List, stat, create, delete, move, read and write files inside a running sandbox."""

    def __init__(self, sandboxes: SandboxService) -> None:
        self._sandboxes = sandboxes

    async def list(
        self, principal: Principal, sandbox_id: str, path: str, *, limit: int = 10_000
    ) -> Listing:
        """A directory's entries by name (at most ``limit``; ``truncated`` says if cut)."""
        reply = await call(
            await self._sandboxes.agent_of(principal, sandbox_id),
            "file.list",
            {"path": path, "limit": limit},
        )
        return Listing(
            path=str(reply["path"]),
            entries=[FileInfo.from_agent(e) for e in reply["entries"]],
            truncated=bool(reply.get("truncated")),
        )

    async def stat(self, principal: Principal, sandbox_id: str, path: str) -> FileInfo:
        reply = await call(
            await self._sandboxes.agent_of(principal, sandbox_id), "file.stat", {"path": path}
        )
        return FileInfo.from_agent(reply)

    async def mkdir(
        self, principal: Principal, sandbox_id: str, path: str
    ) -> tuple[bool, FileInfo]:
        """Create a directory and its parents; ``(created, info)``."""
        reply = await call(
            await self._sandboxes.agent_of(principal, sandbox_id), "file.mkdir", {"path": path}
        )
        return bool(reply["created"]), FileInfo.from_agent(reply["info"])

    async def delete(self, principal: Principal, sandbox_id: str, path: str) -> None:
        """Delete a file, a symlink (not its target) or a directory with everything in it."""
        await call(
            await self._sandboxes.agent_of(principal, sandbox_id), "file.delete", {"path": path}
        )

    async def rename(
        self, principal: Principal, sandbox_id: str, source: str, target: str, *, overwrite: bool
    ) -> FileInfo:
        reply = await call(
            await self._sandboxes.agent_of(principal, sandbox_id),
            "file.rename",
            {"from": source, "to": target, "overwrite": overwrite},
        )
        return FileInfo.from_agent(reply)

    async def open_read(self, principal: Principal, sandbox_id: str, path: str) -> FileDownload:
        """Open a regular file for streaming; iterate :meth:`FileDownload.chunks` once."""
        link = await self._sandboxes.agent_of(principal, sandbox_id)
        reply = await call(link, "file.read.open", {"path": path})
        return FileDownload(link, str(reply["handle"]), FileInfo.from_agent(reply["info"]))

    async def write(
        self,
        principal: Principal,
        sandbox_id: str,
        path: str,
        body: AsyncIterable[bytes],
        *,
        exclusive: bool,
        expected_size: int | None = None,
    ) -> tuple[bool, FileInfo]:
        """Stream ``body`` into ``path`` (parents created); ``(created, info)``.

        The file appears only once the whole body arrived: on any failure, including the client
        going away, nothing is left behind. ``exclusive`` refuses an existing file (before any
        byte is sent, and again atomically at the end).
        """
        link = await self._sandboxes.agent_of(principal, sandbox_id)
        opened = await call(
            link, "file.write.open", {"path": path, "exclusive": exclusive, "parents": True}
        )
        return await push_file(link, str(opened["handle"]), body, expected_size)

    async def snapshot(self, link: AgentLink, root: str) -> FilesSnapshot | None:
        """The regular files under ``root``, or ``None`` if it cannot be taken (the directory
        is gone, the agent is busy failing)."""
        return await take_snapshot(link, root)


@dataclass(frozen=True)
class FilesSnapshot:
    #: Relative path → (size, mtime_ns), regular files only.
    files: dict[str, tuple[int, int]]
    #: The agent stopped early (too many files or too deep): changes may be missed.
    truncated: bool
    #: The sandbox's clock when the listing started (None from an older agent).
    taken_ns: int | None = None

    def changed_since(self, before: FilesSnapshot) -> list[str]:
        """Paths new here or written since ``before``, in path order."""
        return sorted(
            path
            for path, meta in self.files.items()
            if not _unchanged(before.files.get(path), meta, before.taken_ns)
        )


#: Modification times closer than this count as equal (an agent without ``taken_ns``).
MTIME_TOLERANCE_NS = 1_000_000


def _unchanged(before: tuple[int, int] | None, after: tuple[int, int], taken: int | None) -> bool:
    """Under gVisor a file's mtime moves after the fact, without a write, either way (measured:
    +10 µs to -0.5 ms, more under load): the Sentry's clock at the write, then the host's. A
    file written after the snapshot is newer than ``taken``; one still no newer was not."""
    if before is None or before[0] != after[0]:
        return False
    if abs(before[1] - after[1]) < MTIME_TOLERANCE_NS:
        return True
    return taken is not None and after[1] <= taken


async def take_snapshot(link: AgentLink, root: str) -> FilesSnapshot | None:
    """Ask the agent for the regular files under ``root``; ``None`` if it could not list them."""
    try:
        reply = await call(link, "files.snapshot", {"root": root})
    except SandcastleError as exc:
        log.info("snapshot of %s failed: %s", root, exc)
        return None
    raw = reply.get("files")
    if not isinstance(raw, dict):
        return None
    taken = reply.get("taken_ns")
    return FilesSnapshot(
        files={str(k): (int(v[0]), int(v[1])) for k, v in raw.items()},
        truncated=bool(reply.get("truncated")),
        taken_ns=taken if isinstance(taken, int) else None,
    )

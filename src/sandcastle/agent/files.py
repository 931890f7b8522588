"""File operations inside the sandbox, served over the agent channel.

Every path goes through :mod:`sandcastle.agent.paths` first. Blocking filesystem work (the
operations of :mod:`sandcastle.agent.fsops`, and the sessions' reads and writes here) runs in
worker threads so that a large directory or a slow disk never stalls the channel (and with it
every execution's events).

A channel frame holds at most 16 MiB, so whole files never travel in one message. Reading and
writing are sessions over a handle, moved in chunks at explicit offsets that the host pulls
(``file.read.chunk``) or pushes (``file.write.chunk``): the host decides the pace and how many
chunks are in flight, so a slow HTTP client slows the sandbox's disk, not the server's memory.
A write goes to a hidden temporary file beside the target and is renamed into place only on
``file.write.close``: an upload that fails or is aborted never leaves a half-written file, and a
symlink planted at the target is replaced, never written through. Handles left idle for
:data:`HANDLE_IDLE_S` (a host that went away) are closed, and their temporary files removed.

Methods (``docs/AGENT_PROTOCOL.md``, "Files"): ``file.list``, ``file.stat``, ``file.mkdir``,
``file.delete``, ``file.rename``, ``file.read.open|chunk|close``,
``file.write.open|chunk|close|abort``, ``files.snapshot``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from sandcastle.agent import partials
from sandcastle.agent.channel import Emit, Handler, RequestFailed
from sandcastle.agent.fsops import (
    MAX_LIST_ENTRIES,
    SNAPSHOT_MAX_DEPTH,
    SNAPSHOT_MAX_FILES,
    FileInfo,
    delete,
    info_of,
    list_dir,
    lstat_info,
    make_dir,
    os_error,
    rename,
    snapshot,
)
from sandcastle.agent.paths import PathRules, check_not_ancestor, invalid
from sandcastle.agent.protocol import PAYLOAD

#: The largest chunk one ``file.read.chunk`` returns or one ``file.write.chunk`` may carry, as
#: the raw payload of its frame (well below a payload's 16 MiB).
MAX_CHUNK_BYTES = 4 * 1024 * 1024
#: Open read/write handles at once; more means a host is leaking them.
MAX_HANDLES = 64
#: A handle unused this long is closed (its host went away without closing it).
HANDLE_IDLE_S = 300.0
_REAP_INTERVAL_S = 30.0


@dataclass
class _Handle:
    id: str
    kind: Literal["read", "write"]
    fd: int
    path: str
    #: For writes: the temporary file the data goes to until ``close``.
    tmp: str | None = None
    exclusive: bool = False
    last_used: float = field(default_factory=time.monotonic)
    busy: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False

    def __post_init__(self) -> None:
        self.idle.set()


def _open_for_read(path: str) -> tuple[int, FileInfo]:
    try:
        # O_NONBLOCK: opening a FIFO must not hang the agent; O_NOFOLLOW: a symlink swapped in
        # after resolution is refused (ELOOP), not followed.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise os_error(exc, path) from exc
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise RequestFailed("is_a_directory", f"{path} is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise RequestFailed("not_a_file", f"{path} is not a regular file")
        return fd, info_of(path, st)
    except BaseException:
        os.close(fd)
        raise


def _open_for_write(
    target: str, name_exists: bool, exclusive: bool, parents: bool
) -> tuple[int, str]:
    parent, name = posixpath.split(target)
    if not name:
        raise invalid("cannot write to /")
    if exclusive and name_exists:
        raise RequestFailed("exists", f"{target} exists")
    try:
        if parents:
            os.makedirs(parent, exist_ok=True)
        mode: int | None = None
        try:
            st = os.stat(target)
        except FileNotFoundError:
            pass
        else:
            if stat.S_ISDIR(st.st_mode):
                raise RequestFailed("is_a_directory", f"{target} is a directory")
            if not stat.S_ISREG(st.st_mode):
                raise RequestFailed("not_a_file", f"{target} is not a regular file")
            mode = stat.S_IMODE(st.st_mode)
        # Hidden, unique, created with O_EXCL (which never follows a symlink).
        tmp = posixpath.join(parent, f".{name[:200]}.{secrets.token_hex(4)}{partials.SUFFIX}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise os_error(exc, getattr(exc, "filename", None) or target) from exc
    if mode is not None:
        with contextlib.suppress(OSError):
            os.fchmod(fd, mode)  # replacing a file keeps its permissions
    return fd, tmp


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _commit(handle: _Handle, expected_size: int | None) -> tuple[bool, FileInfo]:
    assert handle.tmp is not None
    try:
        size = os.fstat(handle.fd).st_size
        if expected_size is not None and size != expected_size:
            raise RequestFailed(
                "incomplete", f"{handle.path}: got {size} bytes, expected {expected_size}"
            )
        os.close(handle.fd)
        handle.fd = -1
        if handle.exclusive:
            # link() fails if anything appeared at the target meanwhile: no-clobber, atomically.
            os.link(handle.tmp, handle.path)
            os.unlink(handle.tmp)
            created = True
        else:
            created = not os.path.lexists(handle.path)
            os.rename(handle.tmp, handle.path)
        handle.tmp = None
    except OSError as exc:
        raise os_error(exc, handle.path) from exc
    return created, lstat_info(handle.path)


def _commit_or_discard(handle: _Handle, expected_size: int | None) -> tuple[bool, FileInfo]:
    try:
        return _commit(handle, expected_size)
    finally:
        _discard(handle)


def _discard(handle: _Handle) -> None:
    if handle.fd >= 0:
        with contextlib.suppress(OSError):
            os.close(handle.fd)
        handle.fd = -1
    if handle.tmp is not None:
        with contextlib.suppress(OSError):
            os.unlink(handle.tmp)
        handle.tmp = None


T = TypeVar("T")


def _int_param(params: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise RequestFailed("invalid", f"{name} must be an integer in [{low}, {high}]")
    return value


class AgentFiles:
    """The file methods of one agent, and the read/write handles they have open."""

    def __init__(self, home: str, partials_record: str = partials.RECORD) -> None:
        self.rules = PathRules(home)
        self._record = partials_record
        #: Writes between ``write.open`` and their end: the record is emptied at zero.
        self._writing = 0
        self._handles: dict[str, _Handle] = {}
        self._reaper: asyncio.Task[None] | None = None

    def handlers(self) -> dict[str, Handler]:
        return {
            "file.list": self.list,
            "file.stat": self.stat,
            "file.mkdir": self.mkdir,
            "file.delete": self.delete,
            "file.rename": self.rename,
            "file.read.open": self.read_open,
            "file.read.chunk": self.read_chunk,
            "file.read.close": self.close_handle,
            "file.write.open": self.write_open,
            "file.write.chunk": self.write_chunk,
            "file.write.close": self.write_close,
            "file.write.abort": self.close_handle,
            "files.snapshot": self.snapshot,
        }

    async def aclose(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        await self.drop_all()

    async def drop_all(self) -> None:
        """Close every handle, discarding writes in progress: their host has gone (a server
        killed in the middle of an upload leaves nothing behind once it is back)."""
        for handle in list(self._handles.values()):
            await self._drop(handle)

    # --- simple operations ---------------------------------------------------------------------

    async def list(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        path = self.rules.resolve(params.get("path", self.rules.home), follow=True)
        limit = _int_param(params, "limit", MAX_LIST_ENTRIES, 1, MAX_LIST_ENTRIES)
        return dict(await asyncio.to_thread(list_dir, path, limit))

    async def stat(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        path = self.rules.resolve(params.get("path"), follow=False)
        return dict(await asyncio.to_thread(lstat_info, path))

    async def mkdir(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        path = self.rules.resolve(params.get("path"), follow=True)
        created, info = await asyncio.to_thread(make_dir, path)
        return {"created": created, "info": info}

    async def delete(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        path = self.rules.resolve(params.get("path"), follow=False)
        await asyncio.to_thread(delete, path)
        return {}

    async def rename(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        source = self.rules.resolve(params.get("from"), follow=False)
        target = self.rules.resolve(params.get("to"), follow=False)
        check_not_ancestor(target)
        info = await asyncio.to_thread(rename, source, target, bool(params.get("overwrite")))
        return dict(info)

    async def snapshot(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        root = self.rules.resolve(params.get("root", self.rules.home), follow=True)
        max_files = _int_param(params, "max_files", SNAPSHOT_MAX_FILES, 1, SNAPSHOT_MAX_FILES)
        max_depth = _int_param(params, "max_depth", SNAPSHOT_MAX_DEPTH, 1, SNAPSHOT_MAX_DEPTH)
        return dict(await asyncio.to_thread(snapshot, root, max_files, max_depth))

    # --- sessions ------------------------------------------------------------------------------

    async def read_open(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        path = self.rules.resolve(params.get("path"), follow=True)
        self._check_capacity()
        fd, info = await asyncio.to_thread(_open_for_read, path)
        handle = self._add(_Handle(id=secrets.token_hex(8), kind="read", fd=fd, path=path))
        return {"handle": handle.id, "size": info["size"], "info": info}

    async def read_chunk(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        handle = self._get(params, "read")
        offset = _int_param(params, "offset", 0, 0, 2**62)
        length = _int_param(params, "length", MAX_CHUNK_BYTES, 1, MAX_CHUNK_BYTES)
        data = await self._io(handle, lambda: os.pread(handle.fd, length, offset))
        return {PAYLOAD: data, "eof": len(data) < length}

    async def write_open(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        raw = params.get("path")
        target = self.rules.resolve(raw, follow=True)
        exclusive = bool(params.get("exclusive", False))
        parents = bool(params.get("parents", True))
        self._check_capacity()

        def open_() -> tuple[int, str]:
            # "Exists" is about the name itself: a symlink there, even dangling, is a file.
            name_exists = os.path.lexists(self.rules.resolve(raw, follow=False))
            fd, tmp = _open_for_write(target, name_exists, exclusive, parents)
            partials.note(tmp, self._record)
            return fd, tmp

        self._writing += 1
        opening = asyncio.get_running_loop().run_in_executor(None, open_)
        try:
            fd, tmp = await asyncio.shield(opening)
        except asyncio.CancelledError:
            # The thread goes on; what it opens is closed and removed once it is done.
            opening.add_done_callback(self._discard_opened)
            raise
        except BaseException:
            self._write_ended()
            raise
        handle = self._add(
            _Handle(
                id=secrets.token_hex(8),
                kind="write",
                fd=fd,
                path=target,
                tmp=tmp,
                exclusive=exclusive,
            )
        )
        return {"handle": handle.id, "path": target}

    async def write_chunk(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        handle = self._get(params, "write")
        offset = _int_param(params, "offset", 0, 0, 2**62)
        data = params.get(PAYLOAD)
        if not isinstance(data, bytes):
            raise RequestFailed("invalid", "a chunk's bytes must come as the request's payload")
        if len(data) > MAX_CHUNK_BYTES:
            raise RequestFailed("invalid", f"a chunk must be at most {MAX_CHUNK_BYTES} bytes")
        await self._io(handle, lambda: _pwrite_all(handle.fd, data, offset))
        return {"written": len(data)}

    async def write_close(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        handle = self._get(params, "write")
        size = params.get("size")
        expected = size if isinstance(size, int) and not isinstance(size, bool) else None
        handle.closing = True
        # Ours from here: an abort or the reaper coming meanwhile finds nothing to drop.
        self._handles.pop(handle.id, None)
        await handle.idle.wait()
        # Committed (or discarded) in one thread run to its end even if this request is
        # cancelled: nothing else may touch the descriptor meanwhile.
        finishing = asyncio.get_running_loop().run_in_executor(
            None, _commit_or_discard, handle, expected
        )
        finishing.add_done_callback(lambda _: self._write_ended())
        created, info = await asyncio.shield(finishing)
        return {"created": created, "info": info}

    async def close_handle(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """``file.read.close`` and ``file.write.abort``: forget the handle, discard a write."""
        handle = self._handles.get(str(params.get("handle")))
        if handle is not None:
            await self._drop(handle)
        return {}

    # --- handle bookkeeping --------------------------------------------------------------------

    def _check_capacity(self) -> None:
        if len(self._handles) >= MAX_HANDLES:
            raise RequestFailed("too_many_handles", f"at most {MAX_HANDLES} files open at once")

    def _add(self, handle: _Handle) -> _Handle:
        self._handles[handle.id] = handle
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_forever())
        return handle

    def _get(self, params: dict[str, Any], kind: str) -> _Handle:
        handle = self._handles.get(str(params.get("handle")))
        if handle is None or handle.kind != kind or handle.closing:
            raise RequestFailed("bad_handle", f"no open {kind} handle {params.get('handle')!r}")
        handle.last_used = time.monotonic()
        return handle

    async def _io(self, handle: _Handle, work: Callable[[], T]) -> T:
        handle.busy += 1
        handle.idle.clear()
        future = asyncio.get_running_loop().run_in_executor(None, work)

        def release(_: object) -> None:
            handle.busy -= 1
            handle.last_used = time.monotonic()
            if handle.busy == 0:
                handle.idle.set()

        # The handle counts as busy until the thread is really done with its fd, even if the
        # request is cancelled meanwhile: closing the fd under a running pread/pwrite could let
        # it touch whatever file reuses that number.
        future.add_done_callback(release)
        try:
            return await asyncio.shield(future)
        except OSError as exc:
            raise os_error(exc, handle.path) from exc

    async def _drop(self, handle: _Handle) -> None:
        handle.closing = True
        if self._handles.pop(handle.id, None) is None:
            return  # dropped (or closed) already
        await handle.idle.wait()
        await asyncio.to_thread(_discard, handle)
        if handle.kind == "write":
            self._write_ended()

    def _write_ended(self) -> None:
        self._writing -= 1
        if self._writing == 0:
            # On the event loop, so no write can be noted between the count and the removal.
            partials.forget_all(self._record)

    def _discard_opened(self, opening: asyncio.Future[tuple[int, str]]) -> None:
        """A write whose ``open`` was cancelled while its thread ran: undo what it made."""
        if not opening.cancelled() and opening.exception() is None:
            fd, tmp = opening.result()
            with contextlib.suppress(OSError):
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._write_ended()

    def remove_left_over(self) -> int:
        """Remove what writes of an agent before this one left half-done (call at start)."""
        return partials.remove_left_over(self._record)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(_REAP_INTERVAL_S)
            now = time.monotonic()
            for handle in list(self._handles.values()):
                if handle.busy == 0 and now - handle.last_used > HANDLE_IDLE_S:
                    await self._drop(handle)

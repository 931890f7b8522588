"""envd's ``filesystem.Filesystem`` Connect service over our files service.

Served by connectrpc's ASGI application with the message and service stubs E2B's own SDK wheel
ships (``e2b.envd.filesystem``), so the wire format (Connect, JSON or binary, enveloped
streams) is the library's, not ours. Each call proves its right to the sandbox with its token
(``access.py``); our errors become Connect codes (``errors.connect_errors``).

Watches (``WatchDir`` and E2B's polled watchers) poll the directory: see ``watching.py``. A
directory of more than 10,000 entries is listed, and watched, in part.
"""

from __future__ import annotations

import contextlib
import posixpath
import stat
from collections.abc import AsyncIterator
from typing import Any, Literal

from connectrpc.request import RequestContext
from e2b.envd.filesystem import filesystem_connect
from e2b.envd.filesystem import filesystem_pb as pb
from protobuf import Oneof
from protobuf.wkt.google.protobuf.timestamp_pb import Timestamp

from sandcastle.api.ratelimit import RateLimiter
from sandcastle.e2b import watching
from sandcastle.e2b.access import SandboxCall
from sandcastle.e2b.errors import connect_errors
from sandcastle.e2b.sandbox_calls import EnvdRpc
from sandcastle.errors import AlreadyExistsError
from sandcastle.services.files import FileInfo
from sandcastle.wiring import Services

#: Entries a listing returns at most, over all its depths.
MAX_ENTRIES = 10_000
#: How deep a recursive watch looks.
WATCH_DEPTH = 64
#: Silence after which a watch sends a keepalive.
WATCH_KEEPALIVE_S = 15.0


_TYPES = {"file": pb.FileType.FILE, "dir": pb.FileType.DIRECTORY}
_MODE_BITS = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}


def entry_info(info: FileInfo) -> pb.EntryInfo:
    symlink = info.type == "symlink"
    entry = pb.EntryInfo(
        name=info.name,
        type=_TYPES.get(info.type, pb.FileType.FILE),
        path=info.path,
        size=info.size,
        mode=info.mode & 0o7777,
        permissions=stat.filemode(_MODE_BITS.get(info.type, 0) | (info.mode & 0o7777)),
        owner="user",
        group="user",
        modified_time=Timestamp.from_datetime(info.mtime),
        is_symlink=symlink,
    )
    if info.target is not None:
        entry.symlink_target = info.target
    return entry


class Filesystem(EnvdRpc, filesystem_connect.Filesystem):
    def __init__(self, services: Services, ratelimit: RateLimiter) -> None:
        super().__init__(services, ratelimit)
        self._watchers = watching.Watchers()

    async def stat(self, request: pb.StatRequest, ctx: RequestContext[Any, Any]) -> pb.StatResponse:
        with connect_errors():
            call = await self._call(ctx)
            info = await self._services.files.stat(call.principal, call.sandbox_id, request.path)
            return pb.StatResponse(entry=entry_info(info))

    async def make_dir(
        self, request: pb.MakeDirRequest, ctx: RequestContext[Any, Any]
    ) -> pb.MakeDirResponse:
        with connect_errors():
            call = await self._call(ctx)
            created, info = await self._services.files.mkdir(
                call.principal, call.sandbox_id, request.path
            )
            if not created:
                raise AlreadyExistsError(f"directory {info.path} already exists")
            return pb.MakeDirResponse(entry=entry_info(info))

    async def move(self, request: pb.MoveRequest, ctx: RequestContext[Any, Any]) -> pb.MoveResponse:
        with connect_errors():
            call = await self._call(ctx)
            info = await self._services.files.rename(
                call.principal,
                call.sandbox_id,
                request.source,
                request.destination,
                overwrite=True,
            )
            return pb.MoveResponse(entry=entry_info(info))

    async def remove(
        self, request: pb.RemoveRequest, ctx: RequestContext[Any, Any]
    ) -> pb.RemoveResponse:
        with connect_errors():
            call = await self._call(ctx)
            await self._services.files.delete(call.principal, call.sandbox_id, request.path)
            return pb.RemoveResponse()

    async def list_dir(
        self, request: pb.ListDirRequest, ctx: RequestContext[Any, Any]
    ) -> pb.ListDirResponse:
        with connect_errors():
            call = await self._call(ctx)
            entries = await self._walk(call, request.path, max(1, request.depth))
            return pb.ListDirResponse(entries=[entry_info(e) for e in entries])

    async def _walk(self, call: SandboxCall, root: str, depth: int) -> list[FileInfo]:
        """Entries under ``root`` down to ``depth`` levels (symlinks not followed), breadth
        first, at most :data:`MAX_ENTRIES`."""
        found: list[FileInfo] = []
        level = [root]
        for _ in range(depth):
            below: list[str] = []
            for directory in level:
                room = MAX_ENTRIES - len(found)
                if room <= 0:
                    return found
                listing = await self._services.files.list(
                    call.principal, call.sandbox_id, directory, limit=room
                )
                found += listing.entries
                below += [e.path for e in listing.entries if e.type == "dir"]
            level = below
        return found

    async def watch_dir(
        self, request: pb.WatchDirRequest, ctx: RequestContext[Any, Any]
    ) -> AsyncIterator[pb.WatchDirResponse]:
        with connect_errors():
            call = await self._call(ctx)
            listing = self._listing(call, request.path, request.recursive)
            first = await listing()
        yield pb.WatchDirResponse(
            event=Oneof[Literal["start"], pb.WatchDirResponse.StartEvent](
                "start", pb.WatchDirResponse.StartEvent()
            )
        )
        describe = entry_info if request.include_entry else None
        quiet_s = 0.0
        with connect_errors():
            async with contextlib.aclosing(watching.poll(listing, first, describe)) as polls:
                async for events in polls:
                    for event in events:
                        yield pb.WatchDirResponse(
                            event=Oneof[Literal["filesystem"], pb.FilesystemEvent](
                                "filesystem", event
                            )
                        )
                    quiet_s = 0.0 if events else quiet_s + watching.POLL_S
                    if quiet_s >= WATCH_KEEPALIVE_S:
                        quiet_s = 0.0
                        yield pb.WatchDirResponse(
                            event=Oneof[Literal["keepalive"], pb.WatchDirResponse.KeepAlive](
                                "keepalive", pb.WatchDirResponse.KeepAlive()
                            )
                        )

    async def create_watcher(
        self, request: pb.CreateWatcherRequest, ctx: RequestContext[Any, Any]
    ) -> pb.CreateWatcherResponse:
        with connect_errors():
            call = await self._call(ctx)
            listing = self._listing(call, request.path, request.recursive)
            describe = entry_info if request.include_entry else None
            watcher_id = self._watchers.create(call.sandbox_id, listing, await listing(), describe)
            return pb.CreateWatcherResponse(watcher_id=watcher_id)

    async def get_watcher_events(
        self, request: pb.GetWatcherEventsRequest, ctx: RequestContext[Any, Any]
    ) -> pb.GetWatcherEventsResponse:
        with connect_errors():
            call = await self._call(ctx)
            events = self._watchers.take(call.sandbox_id, request.watcher_id)
            return pb.GetWatcherEventsResponse(events=events)

    async def remove_watcher(
        self, request: pb.RemoveWatcherRequest, ctx: RequestContext[Any, Any]
    ) -> pb.RemoveWatcherResponse:
        with connect_errors():
            call = await self._call(ctx)
            await self._watchers.remove(call.sandbox_id, request.watcher_id)
            return pb.RemoveWatcherResponse()

    def _listing(self, call: SandboxCall, root: str, recursive: bool) -> watching.Listing:
        depth = WATCH_DEPTH if recursive else 1

        async def listing() -> dict[str, FileInfo]:
            entries = await self._walk(call, root, depth)
            return {posixpath.relpath(e.path, root): e for e in entries}

        return listing

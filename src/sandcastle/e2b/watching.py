"""Directory watches for envd's filesystem service, by polling.

The agent has no change notification, and a poll sees what a sandbox did however it did it:
each poll lists the directory (to a depth) and compares it with the last listing. Changes that
undo each other between two polls are not seen; a rename is a removal and a creation.

``WatchDir`` streams the changes while its client listens; E2B's polled watchers
(``CreateWatcher``, ``GetWatcherEvents``, ``RemoveWatcher``, which the Python SDK uses) keep
them here until asked. Those are bounded: :data:`MAX_PER_SANDBOX` watchers per sandbox,
:data:`MAX_EVENTS` events kept per watcher (the oldest dropped), and a watcher nobody asked for
:data:`IDLE_S` is removed. They live in this process: a server restart forgets them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from e2b.envd.filesystem import filesystem_pb as pb

from sandcastle.errors import NotFoundError, QuotaExceededError, SandcastleError
from sandcastle.services.files import FileInfo

POLL_S = 0.5
MAX_PER_SANDBOX = 16
MAX_EVENTS = 10_000
IDLE_S = 300.0

#: One listing of the watched tree: relative path → entry.
Listing = Callable[[], Awaitable[dict[str, FileInfo]]]
#: How an entry is described in an event (``entry_info``).
Describe = Callable[[FileInfo], pb.EntryInfo]


def changes(
    before: dict[str, FileInfo],
    after: dict[str, FileInfo],
    describe: Describe | None,
) -> Iterator[pb.FilesystemEvent]:
    """The events that take ``before`` to ``after`` (entries described if ``describe``)."""
    for name, info in after.items():
        old = before.get(name)
        if old is None:
            kind = pb.EventType.CREATE
        elif (old.size, old.mtime) != (info.size, info.mtime):
            kind = pb.EventType.WRITE
        elif old.mode != info.mode:
            kind = pb.EventType.CHMOD
        else:
            continue
        yield pb.FilesystemEvent(
            name=name, type=kind, entry=describe(info) if describe is not None else None
        )
    for name in sorted(before.keys() - after.keys()):
        yield pb.FilesystemEvent(name=name, type=pb.EventType.REMOVE)


async def poll(
    listing: Listing, first: dict[str, FileInfo], describe: Describe | None
) -> AsyncGenerator[list[pb.FilesystemEvent]]:
    """The changes since ``first``, one list per poll (empty when nothing changed); a listing
    that fails ends it with that error."""
    seen = first
    while True:
        await asyncio.sleep(POLL_S)
        now = await listing()
        yield list(changes(seen, now, describe))
        seen = now


@dataclass
class Watcher:
    sandbox_id: str
    events: deque[pb.FilesystemEvent] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))
    asked_at: float = field(default_factory=time.monotonic)
    failure: SandcastleError | None = None
    task: asyncio.Task[None] | None = None


class Watchers:
    """E2B's polled watchers of this server process, by id."""

    def __init__(self) -> None:
        self._watchers: dict[str, Watcher] = {}

    def create(
        self,
        sandbox_id: str,
        listing: Listing,
        first: dict[str, FileInfo],
        describe: Describe | None,
    ) -> str:
        if sum(w.sandbox_id == sandbox_id for w in self._watchers.values()) >= MAX_PER_SANDBOX:
            raise QuotaExceededError(
                f"sandbox {sandbox_id} has {MAX_PER_SANDBOX} watchers already: remove one first"
            )
        watcher_id = uuid.uuid4().hex
        watcher = Watcher(sandbox_id)
        watcher.task = asyncio.create_task(self._run(watcher_id, watcher, listing, first, describe))
        self._watchers[watcher_id] = watcher
        return watcher_id

    async def _run(
        self,
        watcher_id: str,
        watcher: Watcher,
        listing: Listing,
        first: dict[str, FileInfo],
        describe: Describe | None,
    ) -> None:
        try:
            async for events in poll(listing, first, describe):
                watcher.events.extend(events)
                if time.monotonic() - watcher.asked_at > IDLE_S:
                    self._watchers.pop(watcher_id, None)  # nobody is asking any more
                    return
        except SandcastleError as exc:
            watcher.failure = exc  # told at the next ask (the sandbox ended, the directory went)

    def take(self, sandbox_id: str, watcher_id: str) -> list[pb.FilesystemEvent]:
        """The events since the last take; the watcher's failure, once, if it stopped."""
        watcher = self._find(sandbox_id, watcher_id)
        watcher.asked_at = time.monotonic()
        taken = list(watcher.events)
        watcher.events.clear()
        if not taken and watcher.failure is not None:
            self._watchers.pop(watcher_id, None)
            raise watcher.failure
        return taken

    async def remove(self, sandbox_id: str, watcher_id: str) -> None:
        watcher = self._find(sandbox_id, watcher_id)
        self._watchers.pop(watcher_id, None)
        if watcher.task is not None:
            watcher.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher.task

    def _find(self, sandbox_id: str, watcher_id: str) -> Watcher:
        watcher = self._watchers.get(watcher_id)
        # Another sandbox's watcher is not found either.
        if watcher is None or watcher.sandbox_id != sandbox_id:
            raise NotFoundError(f"no watcher {watcher_id} in sandbox {sandbox_id}")
        return watcher

"""One memory operation per sandbox at a time: hibernation, restore and snapshot.

Shared by the services that save and restore memory, and read by the ones that must leave a
sandbox alone meanwhile: its processes come and go on purpose while it is being changed, so
the reconciler must not mark it dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator


class OperationLocks:
    def __init__(self) -> None:
        # A lock lives while someone holds or waits for it, so idle sandboxes cost nothing.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._changing: set[str] = set()

    @contextlib.asynccontextmanager
    async def hold(self, sandbox_id: str) -> AsyncIterator[None]:
        lock = self._locks.get(sandbox_id)
        if lock is None:
            lock = self._locks[sandbox_id] = asyncio.Lock()
        async with lock:
            self._changing.add(sandbox_id)
            try:
                yield
            finally:
                self._changing.discard(sandbox_id)

    def busy(self, sandbox_id: str) -> bool:
        """Whether an operation holds the sandbox now (a caller would wait for it)."""
        lock = self._locks.get(sandbox_id)
        return lock is not None and lock.locked()

    def changing(self, sandbox_id: str) -> bool:
        """Whether the sandbox is being hibernated, restored or snapshotted right now."""
        return sandbox_id in self._changing

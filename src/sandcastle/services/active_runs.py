"""The runs this process is executing, and the signals other services send them.

Shared by the dispatcher, which adds and removes runs as it starts and settles them, and the
services that must reach a run in flight: a cancel, a sandbox's end, a submit that should wake
the dispatcher. The signals are synchronous: they only flag, cancel a task and wake.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from sandcastle.domain.execution import ExecutionResult


@dataclass
class ActiveRun:
    """A run this process is executing."""

    run_id: str
    sandbox_id: str
    #: Its lane: the context id, or the run id until a new context is made for it.
    lane: str
    exec_task: asyncio.Task[ExecutionResult] | None = None
    cancel_reason: str | None = None
    sandbox_end: str | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    #: The events folded so far, so an interrupted run keeps what it printed.
    partial: ExecutionResult = field(default_factory=ExecutionResult)

    def cancel(self, reason: str) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = reason
        if self.exec_task is not None:
            self.exec_task.cancel()


class ActiveRuns:
    def __init__(self) -> None:
        self._runs: dict[str, ActiveRun] = {}
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._runs)

    def __iter__(self) -> Iterator[ActiveRun]:
        return iter(list(self._runs.values()))

    def add(self, run: ActiveRun) -> None:
        self._runs[run.run_id] = run

    def discard(self, run_id: str) -> None:
        self._runs.pop(run_id, None)

    def ids(self) -> list[str]:
        return list(self._runs)

    # --- signals ---------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def cancel(self, run_id: str, reason: str) -> None:
        run = self._runs.get(run_id)
        if run is not None:
            run.cancel(reason)

    def sandbox_ended(self, sandbox_id: str, reason: str) -> None:
        for run in self._runs.values():
            if run.sandbox_id == sandbox_id:
                run.sandbox_end = reason
                run.ended.set()
                run.cancel(reason)
        self.wake()

    async def woken(self, within_s: float) -> None:
        """Wait for the next :meth:`wake` (one that came since the last wait counts), or
        ``within_s``."""
        # ``asyncio.timeout``, not ``wait_for``: on 3.11 ``wait_for`` can swallow a
        # cancellation that arrives as the event is set, and shutdown would hang.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                await self._wake.wait()
        self._wake.clear()

"""Status changes of sandboxes, the one way every service moves a sandbox between states.

Every change goes through the domain's state machine as a compare-and-set on the record
(``store/sandboxes.py``), so a caller acting on a stale read cannot overwrite a newer status.
A sandbox that ends (``destroyed`` or ``error``) is announced to the ``ended`` listeners the
composition root gives (its runs are settled, its memory image deleted), after the commit:
they write in transactions of their own.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from sandcastle.domain.clock import Clock
from sandcastle.domain.metering import Prices, meter_values, stop_values
from sandcastle.domain.sandbox import Sandbox, SandboxStatus, check_transition, predecessors
from sandcastle.errors import ConflictError
from sandcastle.runtime.base import Runtime
from sandcastle.services.oplocks import OperationLocks
from sandcastle.store.sandboxes import SandboxRepository

log = logging.getLogger("sandcastle.sandboxes")

#: Told once a sandbox became ``destroyed`` or ``error`` (after the commit).
EndedListener = Callable[[Sandbox], Awaitable[None]]

#: Attempts of a metered move before giving up on a meter that keeps changing.
_METERED_ATTEMPTS = 20


class SandboxStates:
    def __init__(
        self,
        sandboxes: SandboxRepository,
        runtime: Runtime,
        locks: OperationLocks,
        prices: Prices,
        clock: Clock,
        ended: Sequence[EndedListener],
    ) -> None:
        self._sandboxes = sandboxes
        self._runtime = runtime
        self._locks = locks
        self._prices = prices
        self._clock = clock
        self._ended = tuple(ended)
        #: Sandboxes whose processes are being destroyed, before their record says so.
        self._ending: set[str] = set()

    def ending(self, sandbox_id: str) -> bool:
        """Its processes are being destroyed (its agent link closes before the record moves)."""
        return sandbox_id in self._ending

    async def set_status(
        self,
        sandbox_id: str,
        status: SandboxStatus,
        *,
        reason: str | None = None,
        expect: SandboxStatus | None = None,
        **values: Any,
    ) -> Sandbox:
        """Move to ``status`` from ``expect`` (default: any state that may legally become
        ``status``); ConflictError when the sandbox is in another state now."""
        sources = [expect] if expect is not None else predecessors(status)
        if reason is not None:
            values["status_reason"] = reason
        moved, sandbox = await self._sandboxes.move(sandbox_id, sources, status, values)
        if not moved:
            if expect is not None and sandbox.status is not expect:
                raise ConflictError(f"sandbox {sandbox_id} is {sandbox.status.value}")
            check_transition(sandbox_id, sandbox.status, status)  # raises: the move is illegal
        if status in (SandboxStatus.DESTROYED, SandboxStatus.ERROR):
            for listener in self._ended:
                try:
                    await listener(sandbox)
                except Exception:  # the sandbox has ended all the same; the sweeps catch up
                    log.exception("after sandbox %s ended: %r failed", sandbox_id, listener)
        return sandbox

    async def metered_move(
        self,
        sandbox_id: str,
        source: SandboxStatus,
        target: SandboxStatus,
        now: datetime,
        **values: Any,
    ) -> Sandbox:
        """Change the status and cost the metering segment it ends, in one compare-and-set on
        the status and the meter: a deduction that moved the meter meanwhile makes us read
        again, so no interval is costed twice or lost (services/accounting.py)."""
        for _attempt in range(_METERED_ATTEMPTS):
            row = await self._sandboxes.row(sandbox_id)
            if row.status != source.value:
                raise ConflictError(f"sandbox {sandbox_id} is {row.status}")
            if source is SandboxStatus.RUNNING:
                meter = stop_values(row, now, self._prices)
            else:
                meter = meter_values(row, now, self._prices)
            moved = await self._sandboxes.move_metered(row, target, {**meter, **values})
            if moved is not None:
                return moved
        raise ConflictError(f"sandbox {sandbox_id} kept changing; try again")

    async def resumed(self, sandbox_id: str, now: datetime, **values: Any) -> Sandbox:
        """``paused`` → ``running`` at ``now``: the pause ends, a running segment starts."""
        return await self.metered_move(
            sandbox_id,
            SandboxStatus.PAUSED,
            SandboxStatus.RUNNING,
            now,
            paused_at=None,
            pause_reason=None,
            last_started_at=now,
            stopped_at=None,
            **values,
        )

    async def abandon(self, sandbox_id: str, reason: str) -> None:
        """A start that failed: its processes go and it is ``error`` with the reason."""
        log.warning("sandbox %s: %s", sandbox_id, reason)
        await self._runtime.destroy(sandbox_id)
        await self.set_status(sandbox_id, SandboxStatus.ERROR, reason=reason)

    async def end(self, sandbox_id: str, reason: str | None) -> Sandbox:
        """Destroy the processes and record it ``destroyed`` (``reason``: why, if not asked)."""
        self._ending.add(sandbox_id)
        try:
            await self._runtime.destroy(sandbox_id)
            return await self.set_status(
                sandbox_id, SandboxStatus.DESTROYED, reason=reason, destroyed_at=self._clock()
            )
        finally:
            self._ending.discard(sandbox_id)

    async def mark_dead(self, sandbox_id: str) -> None:
        """Its processes exited without being asked: ``error`` with what is known of why (a
        warm-pool entry is forgotten instead; the pool boots another)."""
        if self._locks.changing(sandbox_id):
            return  # being hibernated or restored: its processes come and go on purpose
        sandbox = await self._sandboxes.find(sandbox_id)
        if sandbox is not None and sandbox.snapshot_id is not None:
            return  # hibernated: its processes exited on purpose
        state = await self._runtime.poll(sandbox_id)
        reason = "the sandbox's processes exited unexpectedly"
        if state.oom_kills:
            reason += f" (after {state.oom_kills} out-of-memory kills)"
        await self._runtime.destroy(sandbox_id)
        if await self._sandboxes.forget_pool_entry(sandbox_id):
            return
        try:
            await self.set_status(sandbox_id, SandboxStatus.ERROR, reason=reason)
        except ConflictError:
            return  # destroyed meanwhile
        log.warning("sandbox %s: %s", sandbox_id, reason)

    async def observe_oom(self, sandbox_id: str) -> int:
        """The sandbox's OOM-kill count now, recorded on its record."""
        state = await self._runtime.poll(sandbox_id)
        await self._sandboxes.record_oom(sandbox_id, state.oom_kills)
        return state.oom_kills

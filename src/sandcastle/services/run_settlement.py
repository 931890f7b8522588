"""Settling the runs of a sandbox that ended: told by the sandbox states, and swept for.

When a sandbox becomes ``destroyed`` or ``error``, its queued runs end ``cancelled`` at once
and its running ones as soon as their execution notices (the dispatcher interrupts them). A
periodic sweep settles the runs of sandboxes that ended while this process did not see it (a
crash, another replica).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sandcastle.config import Settings
from sandcastle.domain.clock import Clock
from sandcastle.domain.runs import Reasons, RunStatus
from sandcastle.domain.sandbox import LIVE_STATUSES, Sandbox, SandboxStatus
from sandcastle.services.active_runs import ActiveRuns
from sandcastle.store.runs import RunRepository
from sandcastle.store.sandboxes import SandboxRepository

log = logging.getLogger("sandcastle.runs")


def retained_from(settings: Settings, when: datetime) -> datetime:
    """When a run that ended at ``when`` is purged."""
    return when + timedelta(seconds=settings.run_retention_s)


class RunSettlement:
    def __init__(
        self,
        settings: Settings,
        runs: RunRepository,
        sandboxes: SandboxRepository,
        active: ActiveRuns,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._runs = runs
        self._sandboxes = sandboxes
        self._active = active
        self._clock = clock

    async def sandbox_ended(self, sandbox: Sandbox) -> None:
        """The sandbox was destroyed or failed: its queued runs end ``cancelled`` now, its
        running ones as soon as their execution notices (the dispatcher interrupts them)."""
        if sandbox.status not in (SandboxStatus.DESTROYED, SandboxStatus.ERROR):
            return
        reason = Reasons.sandbox_ended(sandbox.status.value, sandbox.status_reason)
        now = self._clock()
        values = {
            "status": RunStatus.CANCELLED.value,
            "completed_at": now,
            "failure_reason": reason,
            "env_vars": None,
            "expires_at": retained_from(self._settings, now),
        }
        # Running runs nobody in this process executes (none, after recovery) end here too.
        await self._runs.end_open_runs_of(sandbox.id, values, except_ids=self._active.ids())
        self._active.sandbox_ended(sandbox.id, reason)

    async def on_sandbox_ended(self, sandbox: Sandbox) -> None:
        """The sandbox states' ``ended`` listener: never lets a failure here break a destroy."""
        try:
            await self.sandbox_ended(sandbox)
        except Exception:  # the periodic sweep settles what this missed
            log.exception("settling the runs of sandbox %s failed", sandbox.id)

    async def sweep(self) -> None:
        """Settle the runs of sandboxes that ended without the listener seeing it."""
        sandbox_ids = await self._runs.sandboxes_with_open_runs()
        for sandbox_id in sandbox_ids:
            sandbox = await self._sandboxes.find(sandbox_id)
            if sandbox is not None and sandbox.status not in LIVE_STATUSES:
                await self.sandbox_ended(sandbox)

"""Keeping the records and the processes in agreement: at start-up and every few seconds.

At start-up every live sandbox is re-adopted (its agent reconnects) or settled; one the server
died creating is abandoned, since nobody waits for it. Each pass abandons a create that did not
finish by its deadline, applies deadlines (destroy, or
hibernate when asked and the backend saves memory), notices sandboxes whose processes died and
OOM kills, and destroys runtime resources no live record accounts for. A hibernated sandbox has
no processes on purpose: it is never adopted, polled or marked dead.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sandcastle.config import Settings
from sandcastle.domain.clock import Clock
from sandcastle.domain.sandbox import DEADLINE_STATUSES, LIVE_STATUSES, SandboxStatus, TimeoutAction
from sandcastle.runtime.base import Runtime
from sandcastle.services.hibernation import Hibernation
from sandcastle.services.states import SandboxStates
from sandcastle.store.sandboxes import SandboxRepository

log = logging.getLogger("sandcastle.sandboxes")


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        sandboxes: SandboxRepository,
        runtime: Runtime,
        states: SandboxStates,
        hibernation: Hibernation,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._sandboxes = sandboxes
        self._runtime = runtime
        self._states = states
        self._hibernation = hibernation
        self._clock = clock

    async def adopt_all(self) -> None:
        """At start-up: re-attach to every live sandbox; settle those that did not survive."""
        for sandbox in await self._sandboxes.with_status(LIVE_STATUSES):
            if sandbox.snapshot_id is not None:
                continue  # hibernated: no processes to adopt until it is resumed
            link = await self._runtime.adopt(sandbox.id)
            if sandbox.status is SandboxStatus.CREATING:
                # The server died mid-create: nobody is waiting for it, so do not keep it.
                await self._states.abandon(
                    sandbox.id, "the server restarted while the sandbox was created"
                )
            elif link is None:
                await self._states.mark_dead(sandbox.id)
            else:
                log.info("re-adopted sandbox %s", sandbox.id)
        await self._remove_orphans()

    async def reconcile(self) -> None:
        """Apply deadlines, notice dead sandboxes and OOM kills, destroy orphans."""
        now = self._clock()
        stale = now - timedelta(seconds=self._settings.create_deadline_s)
        for sandbox in await self._sandboxes.with_status({SandboxStatus.CREATING}):
            # A create finishes or abandons its own record; one still here this late lost its
            # last step (a store error, a cancelled task), and its processes would otherwise
            # count against the org forever.
            if sandbox.snapshot_id is None and sandbox.created_at <= stale:
                await self._states.abandon(
                    sandbox.id,
                    f"the create did not finish within {self._settings.create_deadline_s:g} s",
                )
        for sandbox in await self._sandboxes.with_status(DEADLINE_STATUSES):
            if sandbox.snapshot_id is not None:
                continue  # hibernated: no processes, no deadline
            if sandbox.timeout_at is not None and sandbox.timeout_at <= now:
                if (
                    sandbox.timeout_action is TimeoutAction.HIBERNATE
                    and self._hibernation.can_hibernate(sandbox)
                    and await self._hibernation.at_deadline(sandbox.id)
                ):
                    continue
                log.info("sandbox %s reached its timeout: destroying", sandbox.id)
                await self._states.end(sandbox.id, reason="timeout")
                continue
            state = await self._runtime.poll(sandbox.id)
            if not state.alive:
                await self._states.mark_dead(sandbox.id)
            elif state.oom_kills > sandbox.oom_kills:
                await self._states.observe_oom(sandbox.id)
        await self._remove_orphans()

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.reconcile_interval_s)
            try:
                await self.reconcile()
            except Exception:  # one bad pass must not stop reconciliation
                log.exception("reconciliation failed")

    async def _remove_orphans(self) -> None:
        """Destroy runtime resources that no live record accounts for."""
        present = await self._runtime.list_sandboxes()
        if not present:
            return
        live = await self._sandboxes.live_among(present, LIVE_STATUSES)
        for sandbox_id in present:
            if sandbox_id not in live:
                log.warning("destroying orphan sandbox resources %s", sandbox_id)
                await self._runtime.destroy(sandbox_id)

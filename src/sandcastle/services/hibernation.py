"""Hibernation: a sandbox's memory saved into an image, its processes ended, and restored later
under the same id.

A hibernated sandbox is ``paused`` with ``snapshot_id`` naming its image; its writable layer
stays in place and it holds no processes on purpose (it is never adopted, polled or marked
dead). Resuming — asked for, or on the first request that needs its agent when it has
``auto_resume`` — restores it and deletes the image. One operation per sandbox at a time
(``oplocks.py``), so concurrent requests never restore a sandbox twice. The runtime refuses to
save a sandbox whose agent is serving a request (``SandboxBusyError``, 409).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any, TypeVar

from sandcastle.config import Settings
from sandcastle.domain import ids
from sandcastle.domain.clock import Clock
from sandcastle.domain.metering import PauseReason
from sandcastle.domain.sandbox import Sandbox, SandboxStatus
from sandcastle.errors import ConflictError, SandboxBusyError, SandcastleError
from sandcastle.runtime.base import Runtime
from sandcastle.services.admission import Admission
from sandcastle.services.diskspace import ensure_free
from sandcastle.services.images import MemoryImages
from sandcastle.services.limits import require_memory_snapshots, saves_memory
from sandcastle.services.oplocks import OperationLocks
from sandcastle.services.provisioning import Provisioning
from sandcastle.services.states import SandboxStates
from sandcastle.store.repositories import to_sandbox
from sandcastle.store.sandboxes import SandboxRepository

log = logging.getLogger("sandcastle.snapshots")

T = TypeVar("T")


class Hibernation:
    def __init__(
        self,
        settings: Settings,
        sandboxes: SandboxRepository,
        runtime: Runtime,
        states: SandboxStates,
        provisioning: Provisioning,
        admission: Admission,
        images: MemoryImages,
        locks: OperationLocks,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._sandboxes = sandboxes
        self._runtime = runtime
        self._states = states
        self._provisioning = provisioning
        self._admission = admission
        self._images = images
        self._locks = locks
        self._clock = clock

    async def hibernate(self, sandbox: Sandbox) -> Sandbox:
        """Save a running (or freezer-paused) sandbox's memory and end its processes."""
        ensure_free(self._settings, "hibernate a sandbox")
        require_memory_snapshots(
            self._runtime.backend(sandbox.runtime), "hibernate", internet=sandbox.internet
        )
        return await finish(self._hibernate(sandbox.id, PauseReason.USER))

    def can_hibernate(self, sandbox: Sandbox) -> bool:
        """Whether its backend saves its memory (else a deadline destroys it instead)."""
        backend = self._provisioning.backend_of(sandbox.runtime)
        return saves_memory(backend, internet=sandbox.internet)

    async def at_deadline(self, sandbox_id: str) -> bool:
        """The reconciler's ``timeout_action: hibernate``. A busy sandbox (or one in another
        operation) is tried again on the next pass; False: it cannot be saved, destroy it."""
        if self._locks.busy(sandbox_id):
            return True
        try:
            await finish(self._hibernate(sandbox_id, PauseReason.TIMEOUT))
        except SandboxBusyError:
            log.info("sandbox %s reached its timeout while busy: hibernating later", sandbox_id)
            return True
        except ConflictError:
            return True  # hibernated, destroyed or changed meanwhile: look again next pass
        except SandcastleError as exc:
            log.warning("sandbox %s: hibernation at its timeout failed: %s", sandbox_id, exc)
            return False
        log.info("sandbox %s reached its timeout: hibernated", sandbox_id)
        return True

    async def _hibernate(self, sandbox_id: str, reason: PauseReason) -> Sandbox:
        async with self._locks.hold(sandbox_id):
            sandbox = await self._sandboxes.get(sandbox_id)
            if sandbox.hibernated:
                raise ConflictError(f"sandbox {sandbox_id} is hibernated already")
            if sandbox.status not in (SandboxStatus.RUNNING, SandboxStatus.PAUSED):
                raise ConflictError(
                    f"sandbox {sandbox_id} is {sandbox.status.value}; only a running or "
                    "paused sandbox can be hibernated"
                )
            frozen = sandbox.status is SandboxStatus.PAUSED
            if frozen:
                await self._runtime.resume(sandbox_id)  # frozen processes cannot be saved
            image_id = ids.new_snapshot_id()
            image = self._images.path(image_id)
            try:
                await self._images.make(image_id)
                await self._runtime.checkpoint(sandbox_id, image, keep_running=False)
            except BaseException:
                await self._images.discard(image)
                if frozen:
                    with contextlib.suppress(SandcastleError):
                        await self._runtime.pause(sandbox_id)
                raise
            now = self._clock()
            # The deadline stops with the processes; resuming starts a new one.
            values: dict[str, Any] = {
                "pause_reason": reason.value,
                "snapshot_id": image_id,
                "timeout_at": None,
            }
            if not frozen:
                values["paused_at"] = now
            try:
                return await self._states.metered_move(
                    sandbox_id, sandbox.status, SandboxStatus.PAUSED, now, **values
                )
            except SandcastleError:
                # Destroyed while it was saved: nothing is left to restore.
                await self._runtime.destroy(sandbox_id)
                await self._images.discard(image)
                raise

    async def wake(self, sandbox_id: str, org_id: str) -> Sandbox:
        """Restore a hibernated sandbox under its id: ``running``, or ``error`` and raises."""
        return await finish(self._wake(sandbox_id, org_id))

    async def _wake(self, sandbox_id: str, org_id: str) -> Sandbox:
        async with self._locks.hold(sandbox_id):
            row = await self._sandboxes.row(sandbox_id)
            sandbox = to_sandbox(row)
            if not sandbox.hibernated:
                # Restored by a request that came first, or no longer there to restore.
                if sandbox.status is not SandboxStatus.RUNNING:
                    raise ConflictError(f"sandbox {sandbox_id} is {sandbox.status.value}")
                return sandbox
            if not self._images.can_restore(row.runtime):
                # Kept as it is: a server with its own backend again can still restore it.
                raise ConflictError(
                    f"sandbox {sandbox_id} was hibernated by the {row.runtime} backend; this "
                    f"server cannot restore it (it runs {', '.join(self._runtime.available)})"
                )
            await self._admission.admit_resume(org_id, sandbox_id)
            assert row.snapshot_id is not None
            image = self._images.path(row.snapshot_id)
            try:
                template = self._images.template(row.template, row.build_id)
                spec = self._provisioning.launch_spec(row, template.rootfs)
                link = await self._runtime.restore(spec, image)
                await link.wait_connected(self._settings.agent_connect_timeout_s)
            except Exception as exc:
                # Its processes, layer and image go; the images' ended listener removes it.
                await self._states.abandon(sandbox_id, f"restore failed: {exc}")
                raise
            now = self._clock()
            deadline = (
                None if row.timeout_ms is None else now + timedelta(milliseconds=row.timeout_ms)
            )
            try:
                moved = await self._states.resumed(
                    sandbox_id, now, snapshot_id=None, timeout_at=deadline
                )
            except SandcastleError:
                await self._runtime.destroy(sandbox_id)  # destroyed while it was restored
                raise
            finally:
                await self._images.discard(image)
            log.info("sandbox %s resumed from hibernation", sandbox_id)
            return moved


async def finish(work: Awaitable[T]) -> T:
    """Run ``work`` to its end even if the caller is cancelled (a client that went away):
    saving or restoring half-way would leave the record and the processes disagreeing."""
    return await asyncio.shield(work)

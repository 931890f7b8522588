"""Memory snapshots: hibernation, snapshots of running sandboxes, and forks restored from them.

*Hibernating* saves a sandbox's memory into an image and ends its processes; its writable layer
stays in place. The row becomes ``paused`` with ``snapshot_id`` naming the image, and it holds
no processes on purpose (``SandboxService`` never adopts, polls or marks it dead). Resuming
restores it under the same id and deletes the image. A *snapshot* saves a running sandbox's
memory and writable layer and lets it run on; *forks* are new sandboxes restored from it.

Images live in ``<data_dir>/snapshots/<id>/``; this service creates and deletes them. One
operation at a time per sandbox (a per-sandbox lock), so concurrent requests never restore a
sandbox twice. The runtime refuses to save a sandbox whose agent is serving a request
(``SandboxBusyError``, 409): an execution in flight cannot be saved consistently.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import func, select, update

from sandcastle.config import Settings
from sandcastle.domain import ids
from sandcastle.domain.context import ContextStatus
from sandcastle.domain.metering import PauseReason
from sandcastle.domain.sandbox import Sandbox, SandboxStatus
from sandcastle.domain.snapshot import Snapshot, SnapshotContext
from sandcastle.errors import (
    ConflictError,
    FieldError,
    NotFoundError,
    QuotaExceededError,
    SandboxBusyError,
    SandcastleError,
)
from sandcastle.runtime.base import LaunchSpec, Runtime
from sandcastle.runtime.channel import AgentLink
from sandcastle.runtime.templates.builder import TemplateInfo, load_template
from sandcastle.services.auth import Principal
from sandcastle.services.diskspace import ensure_free
from sandcastle.services.limits import org_resources, require_memory_snapshots
from sandcastle.services.sandboxes import Clock, CreateSandbox, SandboxService, utcnow
from sandcastle.store import repositories as repo
from sandcastle.store.db import Database
from sandcastle.store.models import ContextRow, SandboxRow, SnapshotRow

log = logging.getLogger("sandcastle.snapshots")

T = TypeVar("T")
#: Request fields a fork takes from its snapshot, never from the request.
_FROM_SNAPSHOT = ("template", "vcpus", "memory_mb", "disk_mb", "cwd")


class SnapshotService:
    def __init__(
        self, settings: Settings, db: Database, sandboxes: SandboxService, clock: Clock = utcnow
    ) -> None:
        self._settings = settings
        self._db = db
        self._sandboxes = sandboxes
        self._clock = clock
        # A lock lives while someone holds or waits for it, so idle sandboxes cost nothing.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._changing: set[str] = set()
        #: Snapshots being restored into forks right now (they must not be deleted meanwhile),
        #: and snapshots being deleted (no fork may start from them). Each is checked and set
        #: with no ``await`` in between, so a fork and a delete never both go ahead. Forks are
        #: counted per (org, snapshot): another org's requests never block a delete.
        self._restoring: Counter[tuple[str, str]] = Counter()
        self._deleting: set[str] = set()

    @property
    def _runtime(self) -> Runtime:
        return self._sandboxes.runtime

    def _can_restore(self, backend: str) -> bool:
        """Whether this server runs ``backend``, and it restores memory images."""
        return (
            backend in self._runtime.available
            and self._runtime.backend(backend).supports_memory_snapshots
        )

    def image_dir(self, image_id: str) -> Path:
        return self._settings.data_dir / "snapshots" / image_id

    # --- hibernation -----------------------------------------------------------------------

    async def hibernate(self, principal: Principal, sandbox_id: str) -> Sandbox:
        """Save a running (or freezer-paused) sandbox's memory and end its processes."""
        sandbox = await self._sandboxes.get(principal, sandbox_id)
        ensure_free(self._settings, "hibernate a sandbox")
        require_memory_snapshots(
            self._runtime.backend(sandbox.runtime), "hibernate", internet=sandbox.internet
        )
        return await _finish(self._hibernate(sandbox_id, PauseReason.USER))

    async def at_deadline(self, sandbox_id: str) -> bool:
        """The reconciler's ``timeout_action: hibernate``. A busy sandbox (or one in another
        operation) is tried again on the next pass; False: it cannot be saved, destroy it."""
        lock = self._locks.get(sandbox_id)
        if lock is not None and lock.locked():
            return True
        try:
            await _finish(self._hibernate(sandbox_id, PauseReason.TIMEOUT))
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
        async with self._hold(sandbox_id):
            sandbox = repo.to_sandbox(await self._row(sandbox_id))
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
            image = self.image_dir(image_id)
            try:
                await asyncio.to_thread(image.mkdir, parents=True)
                await self._runtime.checkpoint(sandbox_id, image, keep_running=False)
            except BaseException:
                await self._discard(image)
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
                return await self._sandboxes.metered_move(
                    sandbox_id, sandbox.status, SandboxStatus.PAUSED, now, **values
                )
            except SandcastleError:
                # Destroyed while it was saved: nothing is left to restore.
                await self._runtime.destroy(sandbox_id)
                await self._discard(image)
                raise

    async def wake(self, sandbox_id: str, org_id: str) -> Sandbox:
        """Restore a hibernated sandbox under its id: ``running``, or ``error`` and raises."""
        return await _finish(self._wake(sandbox_id, org_id))

    async def _wake(self, sandbox_id: str, org_id: str) -> Sandbox:
        async with self._hold(sandbox_id):
            row = await self._row(sandbox_id)
            sandbox = repo.to_sandbox(row)
            if not sandbox.hibernated:
                # Restored by a request that came first, or no longer there to restore.
                if sandbox.status is not SandboxStatus.RUNNING:
                    raise ConflictError(f"sandbox {sandbox_id} is {sandbox.status.value}")
                return sandbox
            if not self._can_restore(row.runtime):
                # Kept as it is: a server with its own backend again can still restore it.
                raise ConflictError(
                    f"sandbox {sandbox_id} was hibernated by the {row.runtime} backend; this "
                    f"server cannot restore it (it runs {', '.join(self._runtime.available)})"
                )
            if self._sandboxes.admission is not None:
                await self._sandboxes.admission.admit_resume(org_id, sandbox_id)
            assert row.snapshot_id is not None
            image = self.image_dir(row.snapshot_id)
            try:
                template = self._template(row.template, row.build_id)
                spec = self._sandboxes.launch_spec(row, template.rootfs)
                link = await self._runtime.restore(spec, image)
                await link.wait_connected(self._settings.agent_connect_timeout_s)
            except Exception as exc:
                # Its processes, layer and image go; ``on_sandbox_ended`` removes the image.
                await self._sandboxes.abandon(sandbox_id, f"restore failed: {exc}")
                raise
            now = self._clock()
            deadline = (
                None if row.timeout_ms is None else now + timedelta(milliseconds=row.timeout_ms)
            )
            try:
                moved = await self._sandboxes.metered_move(
                    sandbox_id,
                    SandboxStatus.PAUSED,
                    SandboxStatus.RUNNING,
                    now,
                    paused_at=None,
                    pause_reason=None,
                    last_started_at=now,
                    stopped_at=None,
                    snapshot_id=None,
                    timeout_at=deadline,
                )
            except SandcastleError:
                await self._runtime.destroy(sandbox_id)  # destroyed while it was restored
                raise
            finally:
                await self._discard(image)
            log.info("sandbox %s resumed from hibernation", sandbox_id)
            return moved

    def changing(self, sandbox_id: str) -> bool:
        return sandbox_id in self._changing

    async def on_sandbox_ended(self, sandbox: Sandbox) -> None:
        """A hibernated sandbox was destroyed or failed: its image goes too."""
        if sandbox.snapshot_id is None:
            return
        await self._discard(self.image_dir(sandbox.snapshot_id))
        async with self._db.session() as session:
            await session.execute(
                update(SandboxRow)
                .where(SandboxRow.id == sandbox.id, SandboxRow.snapshot_id == sandbox.snapshot_id)
                .values(snapshot_id=None)
            )

    # --- snapshots -------------------------------------------------------------------------

    async def create(self, principal: Principal, sandbox_id: str) -> Snapshot:
        """Save a running sandbox's memory and writable layer; it goes on running."""
        sandbox = await self._sandboxes.get(principal, sandbox_id)
        ensure_free(self._settings, "take a snapshot")
        await self._check_quota(sandbox.org_id)
        require_memory_snapshots(
            self._runtime.backend(sandbox.runtime), "snapshots", internet=sandbox.internet
        )
        return await _finish(self._take(sandbox_id))

    async def _check_quota(self, org_id: str) -> None:
        """Refuse a new snapshot once the org keeps its maximum of them, in count or bytes."""
        async with self._db.session() as session:
            count, total = (
                await session.execute(
                    select(
                        func.count(SnapshotRow.id),
                        func.coalesce(func.sum(SnapshotRow.size_bytes), 0),
                    ).where(SnapshotRow.org_id == org_id)
                )
            ).one()
        limit_count = self._settings.org_max_snapshots
        limit_bytes = self._settings.org_max_snapshot_mb * 2**20
        if count >= limit_count:
            raise QuotaExceededError(
                f"the org keeps {count} snapshots, its maximum (org_max_snapshots = "
                f"{limit_count}); delete some first"
            )
        if total >= limit_bytes:
            raise QuotaExceededError(
                f"the org's snapshots take {total // 2**20} MiB, its maximum (org_max_snapshot_mb"
                f" = {self._settings.org_max_snapshot_mb}); delete some first"
            )

    async def _take(self, sandbox_id: str) -> Snapshot:
        async with self._hold(sandbox_id):
            sandbox = repo.to_sandbox(await self._row(sandbox_id))
            if sandbox.status is not SandboxStatus.RUNNING:
                state = "hibernated" if sandbox.hibernated else sandbox.status.value
                raise ConflictError(
                    f"sandbox {sandbox_id} is {state}; only a running sandbox can be snapshotted"
                )
            async with self._db.session() as session:
                contexts = (
                    await session.scalars(
                        select(ContextRow)
                        .where(
                            ContextRow.sandbox_id == sandbox_id,
                            ContextRow.status == ContextStatus.READY.value,
                        )
                        .order_by(ContextRow.created_at, ContextRow.id)
                    )
                ).all()
                source = await session.get(SandboxRow, sandbox_id)
            assert source is not None
            snapshot_id = ids.new_snapshot_id()
            image = self.image_dir(snapshot_id)
            try:
                await asyncio.to_thread(image.mkdir, parents=True)
                size = await self._runtime.checkpoint(sandbox_id, image, keep_running=True)
                row = SnapshotRow(
                    id=snapshot_id,
                    org_id=sandbox.org_id,
                    project_id=source.project_id,
                    sandbox_id=sandbox_id,
                    template=sandbox.template,
                    build_id=source.build_id,
                    runtime=sandbox.runtime,
                    vcpus=sandbox.config.vcpus,
                    memory_mb=sandbox.config.memory_mb,
                    disk_mb=sandbox.config.disk_mb,
                    cwd=sandbox.cwd,
                    internet=sandbox.internet,
                    size_bytes=size,
                    contexts=[{"id": c.id, "language": c.language, "cwd": c.cwd} for c in contexts],
                    metadata_json=dict(sandbox.metadata),
                    created_at=self._clock(),
                )
                async with self._db.session() as session:
                    session.add(row)
            except BaseException:
                await self._discard(image)
                raise
            log.info("snapshot %s of sandbox %s: %d bytes", snapshot_id, sandbox_id, size)
            return repo.to_snapshot(row)

    async def list(
        self, principal: Principal, *, limit: int, cursor: str | None
    ) -> tuple[list[Snapshot], str | None]:
        """The org's snapshots, newest first."""
        query = repo.snapshots_of(principal.org_id, member_id=principal.sandbox_member)
        page = repo.newest_first_page(query, cursor, limit, SnapshotRow)
        async with self._db.session() as session:
            rows = list((await session.scalars(page)).all())
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = repo.encode_cursor(rows[-1].created_at, rows[-1].id)
        return [repo.to_snapshot(row) for row in rows], next_cursor

    async def get(self, principal: Principal, snapshot_id: str) -> Snapshot:
        return repo.to_snapshot(await self._snapshot_row(principal, snapshot_id))

    async def delete(self, principal: Principal, snapshot_id: str) -> None:
        """Forget the snapshot and delete its image (forks made from it are not touched)."""
        await self._snapshot_row(principal, snapshot_id)
        if self._restoring[principal.org_id, snapshot_id]:
            raise ConflictError(f"snapshot {snapshot_id} is being restored; try again shortly")
        self._deleting.add(snapshot_id)
        try:
            async with self._db.session() as session:
                row = await session.get(SnapshotRow, snapshot_id)
                if row is not None:
                    await session.delete(row)
            await self._discard(self.image_dir(snapshot_id))
        finally:
            self._deleting.discard(snapshot_id)

    # --- forks -----------------------------------------------------------------------------

    async def fork(self, principal: Principal, snapshot_id: str, request: CreateSandbox) -> Sandbox:
        """A new sandbox restored from the snapshot: its template, resources, working
        directory, network and contexts (under new ids). The request may set the timeout,
        metadata (merged over the snapshot's), ``auto_resume`` and the placement; it is
        admitted like any create, and never comes from a warm pool."""
        require_memory_snapshots(self._runtime, "creating a sandbox from a snapshot")
        ensure_free(self._settings, "create a sandbox")
        key = (principal.org_id, snapshot_id)
        self._restoring[key] += 1
        try:
            if snapshot_id in self._deleting:
                raise NotFoundError(f"snapshot {snapshot_id} not found")
            return await self._fork(principal, snapshot_id, request)
        finally:
            self._restoring[key] -= 1
            if not self._restoring[key]:
                del self._restoring[key]

    async def _fork(
        self, principal: Principal, snapshot_id: str, request: CreateSandbox
    ) -> Sandbox:
        snap = repo.to_snapshot(await self._snapshot_row(principal, snapshot_id))
        for name in _FROM_SNAPSHOT:
            if getattr(request, name) is not None:
                raise FieldError(name, f"{name} comes from the snapshot; leave it out")
        if request.internet:
            raise FieldError("network", "the network comes from the snapshot; leave it out")
        if not self._can_restore(snap.runtime):
            raise ConflictError(
                f"snapshot {snap.id} was made by the {snap.runtime} backend; this server "
                f"cannot restore it (it runs {', '.join(self._runtime.available)})"
            )
        # A fork runs where its image was made, whatever its template is pinned to now.
        runtime = self._runtime.backend(snap.runtime)
        template = self._template(snap.template, snap.build_id)
        placement = await self._sandboxes.place(principal, request)
        config = snap.config
        resources = org_resources(
            self._settings, config.vcpus, config.memory_mb, config.disk_mb, placement.limits
        )
        request = dataclasses.replace(request, metadata={**snap.metadata, **request.metadata})
        values = self._sandboxes.row_values(
            principal,
            placement,
            request,
            build_id=snap.build_id,
            cwd=snap.cwd,
            now=self._clock(),
            runtime=runtime,
        )
        image = self.image_dir(snap.id)

        async def restore(spec: LaunchSpec) -> AgentLink:
            return await self._runtime.restore(spec, image)

        async with self._sandboxes.admitted(principal.org_id, placement):
            row = self._sandboxes.new_row(
                snap.template,
                resources,
                internet=snap.internet,
                runtime=runtime,
                source_snapshot_id=snap.id,
                **values,
            )
            async with self._db.session() as session:
                session.add(row)

        async def adopt_contexts(link: AgentLink) -> None:
            await self._copy_contexts(row.id, snap.contexts, link)

        return await self._sandboxes.boot(
            row, template.rootfs, start=restore, connected=adopt_contexts
        )

    async def _copy_contexts(
        self, sandbox_id: str, contexts: tuple[SnapshotContext, ...], link: AgentLink
    ) -> None:
        """The fork's contexts: new rows, then the agent renames its kernels to match (it
        still knows them by the source sandbox's context ids)."""
        if not contexts:
            return
        renamed = {c.id: ids.new_context_id() for c in contexts}
        now = self._clock()
        async with self._db.session() as session:
            session.add_all(
                ContextRow(
                    id=renamed[c.id],
                    sandbox_id=sandbox_id,
                    language=c.language,
                    cwd=c.cwd,
                    status=ContextStatus.READY.value,
                    created_at=now,
                )
                for c in contexts
            )
        try:
            await link.call("context.rename", {"ids": renamed})
        except BaseException:
            async with self._db.session() as session:
                await session.execute(
                    update(ContextRow)
                    .where(ContextRow.id.in_(list(renamed.values())))
                    .values(status=ContextStatus.ERROR.value)
                )
            raise

    # --- helpers ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _hold(self, sandbox_id: str) -> AsyncIterator[None]:
        """One hibernation, restore or snapshot of a sandbox at a time."""
        lock = self._locks.get(sandbox_id)
        if lock is None:
            lock = self._locks[sandbox_id] = asyncio.Lock()
        async with lock:
            self._changing.add(sandbox_id)
            try:
                yield
            finally:
                self._changing.discard(sandbox_id)

    async def _row(self, sandbox_id: str) -> SandboxRow:
        async with self._db.session() as session:
            row = await session.get(SandboxRow, sandbox_id)
        if row is None:
            raise NotFoundError(f"sandbox {sandbox_id} not found")
        return row

    async def _snapshot_row(self, principal: Principal, snapshot_id: str) -> SnapshotRow:
        async with self._db.session() as session:
            return await repo.get_snapshot_row(
                session, principal.org_id, snapshot_id, member_id=principal.sandbox_member
            )

    def _template(self, name: str, build_id: str | None) -> TemplateInfo:
        """The template an image was made on: restoring over another build is unsafe."""
        template = load_template(name, self._settings.resolved_templates_dir)
        if template is None:
            raise ConflictError(f"template {name!r} is gone; the image cannot be restored")
        if build_id is not None and template.build_id != build_id:
            raise ConflictError(
                f"template {name!r} was rebuilt since the image was saved; it cannot be restored"
            )
        return template

    async def _discard(self, image: Path) -> None:
        await asyncio.to_thread(shutil.rmtree, image, True)


async def _finish(work: Awaitable[T]) -> T:
    """Run ``work`` to its end even if the caller is cancelled (a client that went away):
    saving or restoring half-way would leave the row and the processes disagreeing."""
    return await asyncio.shield(work)

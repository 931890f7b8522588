"""Snapshots of running sandboxes, and forks restored from them.

A *snapshot* saves a running sandbox's memory and writable layer and lets it run on; *forks*
are new sandboxes restored from it, admitted like any create. Images are kept by
``images.py``; one memory operation per sandbox at a time (``oplocks.py``). Hibernation, which
saves a sandbox to resume it under its own id, is ``hibernation.py``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter

from sandcastle.config import Settings
from sandcastle.domain import ids
from sandcastle.domain.clock import Clock
from sandcastle.domain.context import Context, ContextStatus
from sandcastle.domain.sandbox import Sandbox, SandboxStatus
from sandcastle.domain.snapshot import Snapshot, SnapshotContext
from sandcastle.errors import ConflictError, FieldError, NotFoundError, QuotaExceededError
from sandcastle.runtime.base import LaunchSpec, Runtime
from sandcastle.runtime.channel import AgentLink
from sandcastle.services.auth import Principal
from sandcastle.services.diskspace import ensure_free
from sandcastle.services.hibernation import finish
from sandcastle.services.images import MemoryImages
from sandcastle.services.limits import org_resources, require_memory_snapshots
from sandcastle.services.oplocks import OperationLocks
from sandcastle.services.provisioning import CreateSandbox, Provisioning
from sandcastle.services.sandboxes import SandboxService
from sandcastle.store.contexts import ContextRepository
from sandcastle.store.repositories import to_sandbox
from sandcastle.store.sandboxes import SandboxRepository
from sandcastle.store.snapshots import SnapshotRepository

log = logging.getLogger("sandcastle.snapshots")

#: Request fields a fork takes from its snapshot, never from the request.
_FROM_SNAPSHOT = ("template", "vcpus", "memory_mb", "disk_mb", "cwd")


class SnapshotService:
    def __init__(
        self,
        settings: Settings,
        snapshots: SnapshotRepository,
        sandbox_records: SandboxRepository,
        contexts: ContextRepository,
        sandboxes: SandboxService,
        provisioning: Provisioning,
        images: MemoryImages,
        locks: OperationLocks,
        runtime: Runtime,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._snapshots = snapshots
        self._sandbox_records = sandbox_records
        self._contexts = contexts
        self._sandboxes = sandboxes
        self._provisioning = provisioning
        self._images = images
        self._locks = locks
        self._runtime = runtime
        self._clock = clock
        #: Snapshots being restored into forks right now (they must not be deleted meanwhile),
        #: and snapshots being deleted (no fork may start from them). Each is checked and set
        #: with no ``await`` in between, so a fork and a delete never both go ahead. Forks are
        #: counted per (org, snapshot): another org's requests never block a delete.
        self._restoring: Counter[tuple[str, str]] = Counter()
        self._deleting: set[str] = set()

    # --- snapshots -------------------------------------------------------------------------

    async def create(self, principal: Principal, sandbox_id: str) -> Snapshot:
        """Save a running sandbox's memory and writable layer; it goes on running."""
        sandbox = await self._sandboxes.get(principal, sandbox_id)
        ensure_free(self._settings, "take a snapshot")
        await self._check_quota(sandbox.org_id)
        require_memory_snapshots(
            self._runtime.backend(sandbox.runtime), "snapshots", internet=sandbox.internet
        )
        return await finish(self._take(sandbox_id))

    async def _check_quota(self, org_id: str) -> None:
        """Refuse a new snapshot once the org keeps its maximum of them, in count or bytes."""
        count, total = await self._snapshots.usage(org_id)
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
        async with self._locks.hold(sandbox_id):
            source = await self._sandbox_records.row(sandbox_id)
            sandbox = to_sandbox(source)
            if sandbox.status is not SandboxStatus.RUNNING:
                state = "hibernated" if sandbox.hibernated else sandbox.status.value
                raise ConflictError(
                    f"sandbox {sandbox_id} is {state}; only a running sandbox can be snapshotted"
                )
            contexts = await self._contexts.of_sandbox(sandbox_id, [ContextStatus.READY])
            snapshot_id = ids.new_snapshot_id()
            image = self._images.path(snapshot_id)
            try:
                await self._images.make(snapshot_id)
                size = await self._runtime.checkpoint(sandbox_id, image, keep_running=True)
                snapshot = Snapshot(
                    id=snapshot_id,
                    org_id=sandbox.org_id,
                    project_id=source.project_id,
                    sandbox_id=sandbox_id,
                    template=sandbox.template,
                    build_id=source.build_id,
                    runtime=sandbox.runtime,
                    config=sandbox.config,
                    cwd=sandbox.cwd,
                    internet=sandbox.internet,
                    size_bytes=size,
                    created_at=self._clock(),
                    contexts=tuple(
                        SnapshotContext(id=c.id, language=c.language, cwd=c.cwd) for c in contexts
                    ),
                    metadata=dict(sandbox.metadata),
                )
                await self._snapshots.insert(snapshot)
            except BaseException:
                await self._images.discard(image)
                raise
            log.info("snapshot %s of sandbox %s: %d bytes", snapshot_id, sandbox_id, size)
            return snapshot

    async def list(
        self, principal: Principal, *, limit: int, cursor: str | None
    ) -> tuple[list[Snapshot], str | None]:
        """The org's snapshots, newest first."""
        return await self._snapshots.page(
            principal.org_id, member_id=principal.sandbox_member, cursor=cursor, limit=limit
        )

    async def get(self, principal: Principal, snapshot_id: str) -> Snapshot:
        return await self._snapshots.owned(
            principal.org_id, snapshot_id, member_id=principal.sandbox_member
        )

    async def delete(self, principal: Principal, snapshot_id: str) -> None:
        """Forget the snapshot and delete its image (forks made from it are not touched)."""
        await self.get(principal, snapshot_id)
        if self._restoring[principal.org_id, snapshot_id]:
            raise ConflictError(f"snapshot {snapshot_id} is being restored; try again shortly")
        self._deleting.add(snapshot_id)
        try:
            await self._snapshots.delete(snapshot_id)
            await self._images.discard(self._images.path(snapshot_id))
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
        snap = await self.get(principal, snapshot_id)
        for name in _FROM_SNAPSHOT:
            if getattr(request, name) is not None:
                raise FieldError(name, f"{name} comes from the snapshot; leave it out")
        if request.internet:
            raise FieldError("network", "the network comes from the snapshot; leave it out")
        if not self._images.can_restore(snap.runtime):
            raise ConflictError(
                f"snapshot {snap.id} was made by the {snap.runtime} backend; this server "
                f"cannot restore it (it runs {', '.join(self._runtime.available)})"
            )
        # A fork runs where its image was made, whatever its template is pinned to now.
        runtime = self._runtime.backend(snap.runtime)
        template = self._images.template(snap.template, snap.build_id)
        placement = await self._provisioning.place(principal, request)
        config = snap.config
        resources = org_resources(
            self._settings, config.vcpus, config.memory_mb, config.disk_mb, placement.limits
        )
        request = dataclasses.replace(request, metadata={**snap.metadata, **request.metadata})
        values = self._provisioning.row_values(
            principal,
            placement,
            request,
            build_id=snap.build_id,
            cwd=snap.cwd,
            now=self._clock(),
            runtime=runtime,
        )
        image = self._images.path(snap.id)

        async def restore(spec: LaunchSpec) -> AgentLink:
            return await self._runtime.restore(spec, image)

        async with self._provisioning.admitted(principal.org_id, placement):
            row = self._provisioning.new_row(
                snap.template,
                resources,
                internet=snap.internet,
                runtime=runtime,
                source_snapshot_id=snap.id,
                **values,
            )
            await self._provisioning.record(row)

        async def adopt_contexts(link: AgentLink) -> None:
            await self._copy_contexts(row.id, snap.contexts, link)

        return await self._provisioning.boot(
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
        await self._contexts.insert(
            Context(
                id=renamed[c.id],
                sandbox_id=sandbox_id,
                language=c.language,
                cwd=c.cwd,
                status=ContextStatus.READY,
                created_at=now,
            )
            for c in contexts
        )
        try:
            await link.call("context.rename", {"ids": renamed})
        except BaseException:
            await self._contexts.set_status(list(renamed.values()), ContextStatus.ERROR)
            raise

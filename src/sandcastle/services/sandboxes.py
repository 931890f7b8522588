"""Sandbox lifecycle: create, get, list, pause, resume, timeout, destroy; adoption, reconciling.

Invariants: a row is written (and committed) before the runtime acts on it; every status change
goes through the domain's state machine; a sandbox never stays ``creating`` — the agent connects
and it is ``running``, or it is ``error`` with the reason. A *hibernated* sandbox (``paused``
with a ``snapshot_id``) has no processes on purpose: it is never adopted, polled or marked dead;
``services/snapshots.py`` hibernates and restores it through :class:`HibernationHook`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import delete, select, update

from sandcastle.config import Settings
from sandcastle.domain import ids
from sandcastle.domain.metering import PauseReason, Prices, meter_values, stop_values
from sandcastle.domain.sandbox import (
    DEADLINE_STATUSES,
    LIVE_STATUSES,
    Sandbox,
    SandboxStatus,
    TimeoutAction,
    check_transition,
    normalise_cwd,
    predecessors,
)
from sandcastle.errors import ConflictError, LimitExceededError, NotFoundError
from sandcastle.runtime.base import LaunchSpec, Runtime
from sandcastle.runtime.channel import AgentLink
from sandcastle.runtime.templates.builder import load_template
from sandcastle.services.admission import Admission
from sandcastle.services.auth import Principal
from sandcastle.services.diskspace import ensure_free
from sandcastle.services.limits import Resources, check_timeout, org_resources
from sandcastle.services.tenancy import Placement
from sandcastle.store import repositories as repo
from sandcastle.store.db import Database
from sandcastle.store.models import ProjectRow, SandboxRow

log = logging.getLogger("sandcastle.sandboxes")

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class CreateSandbox:
    template: str | None = None
    vcpus: int | None = None
    memory_mb: int | None = None
    disk_mb: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    timeout_ms: int | None = None
    timeout_action: TimeoutAction = TimeoutAction.DESTROY
    cwd: str | None = None
    internet: bool = False
    #: Tenancy: the project (default: the key's, else the org's first), an optional workspace.
    project_id: str | None = None
    workspace_id: str | None = None
    sandbox_kind: str = "runtime"
    #: Resume the sandbox, once hibernated, on the first request that needs its agent.
    auto_resume: bool = False


@dataclass(frozen=True)
class ListFilter:
    statuses: list[str] = field(default_factory=list)
    template: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class SandboxService:
    def __init__(
        self, settings: Settings, db: Database, runtime: Runtime, clock: Clock = utcnow
    ) -> None:
        self._settings = settings
        self._db = db
        self._runtime = runtime
        self._clock = clock
        #: Set by the warm pool service: ``(template, resources, internet) -> checkout``.
        self.pool: WarmPoolHook | None = None
        #: Set by ``create_app``: admits creates and resumes (projects, credits, quotas).
        self.admission: Admission | None = None
        self.prices = Prices.from_settings(settings)
        #: Creates of one org are admitted one at a time, so none slips past its capacity.
        self._create_locks: dict[str, asyncio.Lock] = {}
        #: Called once a sandbox became ``destroyed`` or ``error`` (settles its code runs).
        self.on_ended: Callable[[Sandbox], Awaitable[None]] | None = None
        #: Set by ``create_app``: hibernates and restores (``services/snapshots.py``).
        self.hibernation: HibernationHook | None = None

    @property
    def runtime(self) -> Runtime:
        return self._runtime

    # --- queries ---------------------------------------------------------------------------

    async def get(self, principal: Principal, sandbox_id: str) -> Sandbox:
        async with self._db.session() as session:
            row = await repo.get_sandbox_row(
                session, principal.org_id, sandbox_id, member_id=principal.sandbox_member
            )
            return repo.to_sandbox(row)

    async def list(
        self,
        principal: Principal,
        *,
        limit: int,
        cursor: str | None,
        where: ListFilter | None = None,
    ) -> tuple[list[Sandbox], str | None]:
        where = where or ListFilter()
        query = repo.sandboxes_of(
            principal.org_id,
            statuses=where.statuses,
            template=where.template,
            metadata=where.metadata,
            member_id=principal.sandbox_member,
        )
        async with self._db.session() as session:
            rows = list((await session.scalars(repo.newest_first_page(query, cursor, limit))).all())
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = repo.encode_cursor(rows[-1].created_at, rows[-1].id)
        return [repo.to_sandbox(row) for row in rows], next_cursor

    # --- create ----------------------------------------------------------------------------

    async def create(self, principal: Principal, request: CreateSandbox) -> Sandbox:
        ensure_free(self._settings, "create a sandbox")
        template_name = request.template or self._settings.default_template
        template = load_template(template_name, self._settings.resolved_templates_dir)
        if template is None:
            raise NotFoundError(f"template {template_name!r} not found (build it first)")
        runtime = self.template_runtime(template_name, template.runtime)
        if request.internet and not runtime.supports_internet:
            raise LimitExceededError(
                f"network.internet is not available on the {runtime.name} backend; "
                "run the server with SANDCASTLE_RUNTIME=bwrap for sandboxes that need it"
            )
        placement = await self.place(principal, request)
        resources = org_resources(
            self._settings, request.vcpus, request.memory_mb, request.disk_mb, placement.limits
        )
        now = self._clock()
        tenancy = self.row_values(
            principal,
            placement,
            request,
            build_id=template.build_id,
            cwd=request.cwd,
            now=now,
            runtime=runtime,
        )
        async with self.admitted(principal.org_id, placement):
            pool_id = None
            if self.pool is not None:
                pool_id, taken = await self.pool.checkout(
                    template_name, resources, request.internet, tenancy, now, runtime.name
                )
                if taken is not None:
                    return taken
            row = self.new_row(
                template_name, resources, internet=request.internet, runtime=runtime, **tenancy
            )
            if pool_id is not None:
                row.warm_pool_hit, row.warm_pool_id = False, pool_id
            # Committed under the lock, so the next create's capacity check counts it;
            # ``boot`` re-attaches the row rather than inserting it again.
            async with self._db.session() as session:
                session.add(row)
        return await self.boot(row, template.rootfs)

    def row_values(
        self,
        principal: Principal,
        placement: Placement,
        request: CreateSandbox,
        *,
        build_id: str | None,
        cwd: str | None,
        now: datetime,
        runtime: Runtime,
    ) -> dict[str, Any]:
        """A new row's tenancy, deadline and settings (the timeout checked for ``runtime``,
        the backend it will run on)."""
        timeout_ms = request.timeout_ms or self._settings.default_timeout_ms
        check_timeout(
            self._settings,
            runtime,
            timeout_ms,
            request.timeout_action,
            internet=request.internet,
        )
        return {
            "org_id": principal.org_id,
            "project_id": placement.project_id,
            "workspace_id": placement.workspace_id,
            "member_id": principal.member_id,
            "sandbox_kind": request.sandbox_kind,
            "build_id": build_id,
            "meter_since": now,
            "metadata_json": request.metadata,
            "cwd": normalise_cwd(cwd),
            "timeout_ms": timeout_ms,
            "timeout_action": request.timeout_action.value,
            "auto_resume": request.auto_resume,
        }

    @contextlib.asynccontextmanager
    async def admitted(self, org_id: str, placement: Placement) -> AsyncIterator[None]:
        """The org's capacity checked, under its create lock: commit the new row inside, so
        the next create's check counts it."""
        async with self._create_locks.setdefault(org_id, asyncio.Lock()):
            if self.admission is not None and placement.limits is not None:
                await self.admission.check_capacity(org_id, placement.limits)
            yield

    async def place(self, principal: Principal, request: CreateSandbox) -> Placement:
        if self.admission is not None:
            return await self.admission.place(principal, request.project_id, request.workspace_id)
        project_id = (
            request.project_id
            or principal.project_id
            or await self._default_project(principal.org_id)
        )
        return Placement(project_id, request.workspace_id, None)

    def _backend_of(self, name: str) -> Runtime:
        """The backend a sandbox runs on; the default for one this server no longer runs
        (whose capabilities then do not matter: it cannot be restored here either)."""
        try:
            return self._runtime.backend(name or None)
        except LimitExceededError:
            return self._runtime

    def template_runtime(self, name: str, pinned: str | None) -> Runtime:
        """The backend sandboxes of template ``name`` run on: the one it pins, else the
        server's default. A pinned backend this server cannot run is refused, saying why."""
        try:
            return self._runtime.backend(pinned)
        except LimitExceededError as exc:
            raise LimitExceededError(f"template {name!r} is pinned to {pinned}: {exc}") from None

    def new_row(
        self,
        template: str,
        resources: Resources,
        *,
        internet: bool,
        runtime: Runtime,
        **values: Any,
    ) -> SandboxRow:
        return SandboxRow(
            id=ids.new_sandbox_id(),
            status=SandboxStatus.CREATING.value,
            template=template,
            vcpus=resources.vcpus,
            memory_mb=resources.memory_mb,
            disk_mb=resources.disk_mb,
            runtime=runtime.name,
            created_at=self._clock(),
            oom_kills_seen=0,
            internet=internet,
            traffic_access_token=secrets.token_urlsafe(24),
            metadata_json=values.pop("metadata_json", {}),
            timeout_action=values.pop("timeout_action", TimeoutAction.DESTROY.value),
            **values,
        )

    def launch_spec(self, row: SandboxRow, rootfs: Path) -> LaunchSpec:
        return LaunchSpec(
            sandbox_id=row.id,
            rootfs=rootfs,
            vcpus=row.vcpus,
            memory_mb=row.memory_mb,
            disk_mb=row.disk_mb,
            pids_max=self._settings.pids_max,
            cwd=row.cwd or "/home/user",
            internet=row.internet,
            backend=row.runtime,
        )

    async def boot(
        self,
        row: SandboxRow,
        rootfs: Path,
        *,
        start: Callable[[LaunchSpec], Awaitable[AgentLink]] | None = None,
        connected: Callable[[AgentLink], Awaitable[None]] | None = None,
    ) -> Sandbox:
        """Record, launch (or ``start``, e.g. restore), wait for the agent and run
        ``connected``; ``running`` or ``error``, never stuck."""
        async with self._db.session() as session:
            session.add(row)
        spec = self.launch_spec(row, rootfs)
        try:
            link = await (start or self._runtime.launch)(spec)
            await link.wait_connected(self._settings.agent_connect_timeout_s)
            if connected is not None:
                await connected(link)
        except Exception as exc:
            # Whatever went wrong, the sandbox must not stay ``creating``.
            await self.abandon(row.id, f"start failed: {exc}")
            raise
        except asyncio.CancelledError:
            await asyncio.shield(self.abandon(row.id, "create was cancelled"))
            raise
        started = self._clock()
        deadline = (
            None if row.timeout_ms is None else started + timedelta(milliseconds=row.timeout_ms)
        )
        return await self._set_status(
            row.id, SandboxStatus.RUNNING, started_at=started, timeout_at=deadline
        )

    async def abandon(self, sandbox_id: str, reason: str) -> None:
        log.warning("sandbox %s: %s", sandbox_id, reason)
        await self._runtime.destroy(sandbox_id)
        await self._set_status(sandbox_id, SandboxStatus.ERROR, reason=reason)

    async def _default_project(self, org_id: str) -> str:
        async with self._db.session() as session:
            project_id = await session.scalar(
                select(ProjectRow.id)
                .where(ProjectRow.org_id == org_id)
                .order_by(ProjectRow.created_at)
            )
        if project_id is None:
            raise NotFoundError("the organisation has no project to put the sandbox in")
        return project_id

    # --- pause, resume, timeout, destroy ----------------------------------------------------

    async def pause(self, principal: Principal, sandbox_id: str) -> Sandbox:
        sandbox = await self.get(principal, sandbox_id)
        check_transition(sandbox_id, sandbox.status, SandboxStatus.PAUSED)
        return await self.suspend(sandbox_id, PauseReason.USER)

    async def suspend(self, sandbox_id: str, reason: PauseReason) -> Sandbox:
        """Freeze a running sandbox in place, recording why: the user asked, its timeout, its
        org ran out of credits, or its creator is past the org's member limit."""
        async with self._db.session() as session:
            row = await session.get(SandboxRow, sandbox_id)
        if row is None:
            raise NotFoundError(f"sandbox {sandbox_id} not found")
        check_transition(sandbox_id, SandboxStatus(row.status), SandboxStatus.PAUSED)
        await self._runtime.pause(sandbox_id)
        now = self._clock()
        return await self.metered_move(
            sandbox_id,
            SandboxStatus.RUNNING,
            SandboxStatus.PAUSED,
            now,
            paused_at=now,
            pause_reason=reason.value,
        )

    async def resume(self, principal: Principal, sandbox_id: str) -> Sandbox:
        sandbox = await self.get(principal, sandbox_id)
        if sandbox.status is not SandboxStatus.PAUSED:
            raise ConflictError(f"sandbox {sandbox_id} is {sandbox.status.value}, not paused")
        if sandbox.hibernated and self.hibernation is not None:
            return await self.hibernation.wake(sandbox.id, sandbox.org_id)
        if self.admission is not None:
            await self.admission.admit_resume(principal.org_id, sandbox_id)
        await self._runtime.resume(sandbox_id)
        now = self._clock()
        return await self.metered_move(
            sandbox_id,
            SandboxStatus.PAUSED,
            SandboxStatus.RUNNING,
            now,
            paused_at=None,
            pause_reason=None,
            last_started_at=now,
            stopped_at=None,
        )

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
        for _attempt in range(20):
            async with self._db.session() as session:
                row = await session.get(SandboxRow, sandbox_id)
            if row is None:
                raise NotFoundError(f"sandbox {sandbox_id} not found")
            if row.status != source.value:
                raise ConflictError(f"sandbox {sandbox_id} is {row.status}")
            if source is SandboxStatus.RUNNING:
                meter = stop_values(row, now, self.prices)
            else:
                meter = meter_values(row, now, self.prices)
            meter.update(values)
            async with self._db.session() as session:
                changed = await session.execute(
                    update(SandboxRow)
                    .where(
                        SandboxRow.id == sandbox_id,
                        SandboxRow.status == source.value,
                        SandboxRow.meter_units == row.meter_units,
                        SandboxRow.meter_since.is_not_distinct_from(row.meter_since),
                    )
                    .values(status=target.value, **meter)
                )
                if changed.rowcount == 1:  # type: ignore[attr-defined]
                    moved = await session.get(SandboxRow, sandbox_id, populate_existing=True)
                    assert moved is not None
                    return repo.to_sandbox(moved)
        raise ConflictError(f"sandbox {sandbox_id} kept changing; try again")

    async def set_timeout(
        self,
        principal: Principal,
        sandbox_id: str,
        timeout_ms: int,
        action: TimeoutAction | None = None,
    ) -> Sandbox:
        """A new deadline ``timeout_ms`` from now (and optionally a new action)."""
        sandbox = await self.get(principal, sandbox_id)
        if sandbox.status not in DEADLINE_STATUSES:
            raise ConflictError(f"sandbox {sandbox_id} is {sandbox.status.value}")
        check_timeout(
            self._settings,
            self._backend_of(sandbox.runtime),
            timeout_ms,
            action or sandbox.timeout_action,
            internet=sandbox.internet,
        )
        values: dict[str, Any] = {
            "timeout_ms": timeout_ms,
            "timeout_at": self._clock() + timedelta(milliseconds=timeout_ms),
        }
        if action is not None:
            values["timeout_action"] = action.value
        if sandbox.hibernated:
            values["timeout_at"] = None  # the deadline starts again when it is resumed
        return await self._set_status(sandbox_id, sandbox.status, **values)

    async def destroy(self, principal: Principal, sandbox_id: str) -> Sandbox:
        sandbox = await self.get(principal, sandbox_id)
        if sandbox.status is SandboxStatus.DESTROYED:
            return sandbox
        return await self._destroy(sandbox_id, reason=None)

    async def retire(self, sandbox_id: str, reason: str) -> None:
        """Destroy a sandbox no caller owns (a warm-pool entry no longer wanted)."""
        await self._destroy(sandbox_id, reason=reason)

    async def _destroy(self, sandbox_id: str, reason: str | None) -> Sandbox:
        await self._runtime.destroy(sandbox_id)
        return await self._set_status(
            sandbox_id, SandboxStatus.DESTROYED, reason=reason, destroyed_at=self._clock()
        )

    # --- agent -----------------------------------------------------------------------------

    async def agent(self, sandbox: Sandbox, *, wait_s: float = 10.0) -> AgentLink:
        """The running sandbox's agent link, waiting briefly for an agent that is redialing.

        The choke point of every use of an agent: a hibernated sandbox with ``auto_resume`` is
        restored here first (once, however many requests arrive together)."""
        sandbox.require_running()
        if sandbox.hibernated and self.hibernation is not None:
            sandbox = await self.hibernation.wake(sandbox.id, sandbox.org_id)
        link = self._runtime.link(sandbox.id) or await self._runtime.adopt(sandbox.id)
        if (
            link is not None
            and not link.connected
            and not (await self._runtime.poll(sandbox.id)).alive
        ):
            link = None
        if link is None:
            await self._mark_dead(sandbox.id)
            raise ConflictError(f"sandbox {sandbox.id} is no longer running: its processes exited")
        if not link.connected:
            await link.wait_connected(wait_s)
        return link

    async def observe_oom(self, sandbox_id: str) -> int:
        """The sandbox's OOM-kill count now, recorded on its row."""
        state = await self._runtime.poll(sandbox_id)
        async with self._db.session() as session:
            row = await session.get(SandboxRow, sandbox_id)
            if row is not None and state.oom_kills > row.oom_kills_seen:
                row.oom_kills_seen = state.oom_kills
        return state.oom_kills

    # --- start-up and reconciliation -------------------------------------------------------

    async def adopt_all(self) -> None:
        """At start-up: re-attach to every live sandbox; settle those that did not survive."""
        async with self._db.session() as session:
            rows = (
                await session.scalars(
                    select(SandboxRow).where(
                        SandboxRow.status.in_([s.value for s in LIVE_STATUSES])
                    )
                )
            ).all()
        for row in rows:
            if row.snapshot_id is not None:
                continue  # hibernated: no processes to adopt until it is resumed
            link = await self._runtime.adopt(row.id)
            if row.status == SandboxStatus.CREATING.value:
                # The server died mid-create: nobody is waiting for it, so do not keep it.
                await self.abandon(row.id, "the server restarted while the sandbox was created")
            elif link is None:
                await self._mark_dead(row.id)
            else:
                log.info("re-adopted sandbox %s", row.id)
        await self._remove_orphans()

    async def reconcile(self) -> None:
        """Apply deadlines, notice dead sandboxes and OOM kills, destroy orphans."""
        now = self._clock()
        async with self._db.session() as session:
            rows = (
                await session.scalars(
                    select(SandboxRow).where(
                        SandboxRow.status.in_([s.value for s in DEADLINE_STATUSES])
                    )
                )
            ).all()
        for row in rows:
            if row.snapshot_id is not None:
                continue  # hibernated: no processes, no deadline
            if row.timeout_at is not None and row.timeout_at <= now:
                if (
                    row.timeout_action == TimeoutAction.HIBERNATE.value
                    and self.hibernation is not None
                    and self._backend_of(row.runtime).supports_memory_snapshots
                    and await self.hibernation.at_deadline(row.id)
                ):
                    continue
                log.info("sandbox %s reached its timeout: destroying", row.id)
                await self._destroy(row.id, reason="timeout")
                continue
            state = await self._runtime.poll(row.id)
            if not state.alive:
                await self._mark_dead(row.id)
            elif state.oom_kills > row.oom_kills_seen:
                await self.observe_oom(row.id)
        await self._remove_orphans()

    async def _remove_orphans(self) -> None:
        """Destroy runtime resources that no live record accounts for."""
        present = await self._runtime.list_sandboxes()
        if not present:
            return
        async with self._db.session() as session:
            live = set(
                (
                    await session.scalars(
                        select(SandboxRow.id).where(
                            SandboxRow.id.in_(present),
                            SandboxRow.status.in_([s.value for s in LIVE_STATUSES]),
                        )
                    )
                ).all()
            )
        for sandbox_id in present:
            if sandbox_id not in live:
                log.warning("destroying orphan sandbox resources %s", sandbox_id)
                await self._runtime.destroy(sandbox_id)

    async def _mark_dead(self, sandbox_id: str) -> None:
        if self.hibernation is not None and self.hibernation.changing(sandbox_id):
            return  # being hibernated or restored: its processes come and go on purpose
        async with self._db.session() as session:
            row = await session.get(SandboxRow, sandbox_id)
        if row is not None and row.snapshot_id is not None:
            return  # hibernated: its processes exited on purpose
        state = await self._runtime.poll(sandbox_id)
        reason = "the sandbox's processes exited unexpectedly"
        if state.oom_kills:
            reason += f" (after {state.oom_kills} out-of-memory kills)"
        await self._runtime.destroy(sandbox_id)
        async with self._db.session() as session:
            row = await session.get(SandboxRow, sandbox_id)
            if row is not None and row.pool is not None:
                # A warm-pool entry nobody owns: forget it; the pool boots another.
                await session.execute(delete(SandboxRow).where(SandboxRow.id == sandbox_id))
                return
        try:
            await self._set_status(sandbox_id, SandboxStatus.ERROR, reason=reason)
        except ConflictError:
            return  # destroyed meanwhile
        log.warning("sandbox %s: %s", sandbox_id, reason)

    async def _set_status(
        self,
        sandbox_id: str,
        status: SandboxStatus,
        *,
        reason: str | None = None,
        expect: SandboxStatus | None = None,
        **values: Any,
    ) -> Sandbox:
        # One compare-and-set UPDATE: the status only changes from a state that may legally
        # become ``status``, so a caller acting on a stale read (the reconciler racing a
        # DELETE) cannot overwrite a newer status.
        sources = [expect] if expect is not None else predecessors(status)
        if reason is not None:
            values["status_reason"] = reason
        async with self._db.session() as session:
            changed = await session.execute(
                update(SandboxRow)
                .where(
                    SandboxRow.id == sandbox_id,
                    SandboxRow.status.in_([s.value for s in sources]),
                )
                .values(status=status.value, **values)
            )
            row = await session.get(SandboxRow, sandbox_id, populate_existing=True)
            if row is None:
                raise NotFoundError(f"sandbox {sandbox_id} not found")
            if changed.rowcount != 1:  # type: ignore[attr-defined]
                current = SandboxStatus(row.status)
                if expect is not None and current is not expect:
                    raise ConflictError(f"sandbox {sandbox_id} is {current.value}")
                check_transition(sandbox_id, current, status)  # raises: the move is illegal
            sandbox = repo.to_sandbox(row)
        if status in (SandboxStatus.DESTROYED, SandboxStatus.ERROR) and self.on_ended is not None:
            await self.on_ended(sandbox)  # after the commit: it writes in its own transaction
        return sandbox


class HibernationHook(Protocol):
    """What the sandbox service needs from hibernation (see ``services/snapshots.py``)."""

    async def wake(self, sandbox_id: str, org_id: str) -> Sandbox:
        """Restore a hibernated sandbox (admission checked); ``running``, or raises."""
        ...

    async def at_deadline(self, sandbox_id: str) -> bool:
        """Hibernate a sandbox at its deadline; False: it cannot be, destroy it instead."""
        ...

    def changing(self, sandbox_id: str) -> bool:
        """Whether the sandbox is being hibernated, restored or snapshotted right now."""
        ...


class WarmPoolHook(Protocol):
    """What the sandbox service needs from a warm pool (see ``services/pool.py``)."""

    async def checkout(
        self,
        template: str,
        resources: Resources,
        internet: bool,
        tenancy: dict[str, Any],
        now: datetime,
        runtime: str,
    ) -> tuple[str | None, Sandbox | None]:
        """``(pool id if a pool was considered, the checked-out sandbox or None)``; only an
        entry on ``runtime`` (the template's backend) is taken."""
        ...

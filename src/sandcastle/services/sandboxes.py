"""Sandbox lifecycle: create, get, list, destroy; re-adoption and reconciliation.

Invariant: a row is written (and committed) before the runtime acts on it, and every status
change goes through the domain's state machine. A sandbox never stays ``creating``: either the
agent connects and it is ``running``, or it is ``error`` with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from sandcastle.config import Settings
from sandcastle.domain import ids
from sandcastle.domain.sandbox import (
    LIVE_STATUSES,
    Sandbox,
    SandboxStatus,
    TimeoutAction,
    check_transition,
)
from sandcastle.errors import (
    ConflictError,
    LimitExceededError,
    NotFoundError,
    SandcastleError,
)
from sandcastle.runtime.base import LaunchSpec, Runtime
from sandcastle.runtime.channel import AgentLink
from sandcastle.runtime.templates.builder import load_template
from sandcastle.services.auth import Principal
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


class SandboxService:
    def __init__(
        self, settings: Settings, db: Database, runtime: Runtime, clock: Clock = utcnow
    ) -> None:
        self._settings = settings
        self._db = db
        self._runtime = runtime
        self._clock = clock

    # --- queries ---------------------------------------------------------------------------

    async def get(self, principal: Principal, sandbox_id: str) -> Sandbox:
        async with self._db.session() as session:
            return repo.to_sandbox(
                await repo.get_sandbox_row(session, principal.org_id, sandbox_id)
            )

    async def list(
        self, principal: Principal, *, limit: int, cursor: str | None
    ) -> tuple[list[Sandbox], str | None]:
        query = repo.newest_first_page(repo.sandboxes_of(principal.org_id), cursor, limit)
        async with self._db.session() as session:
            rows = list((await session.scalars(query)).all())
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = repo.encode_cursor(rows[-1].created_at, rows[-1].id)
        return [repo.to_sandbox(row) for row in rows], next_cursor

    # --- create ----------------------------------------------------------------------------

    def _resolve_config(self, request: CreateSandbox) -> tuple[int, int, int, int]:
        s = self._settings
        vcpus = request.vcpus or s.default_vcpus
        memory_mb = request.memory_mb or s.default_memory_mb
        disk_mb = request.disk_mb or s.default_disk_mb
        timeout_ms = request.timeout_ms or s.default_timeout_ms
        checks = [
            ("vcpus", vcpus, 1, s.max_vcpus),
            ("memory_mb", memory_mb, s.min_memory_mb, s.max_memory_mb),
            ("disk_mb", disk_mb, s.min_disk_mb, s.max_disk_mb),
            ("timeout_ms", timeout_ms, 1000, s.max_timeout_ms),
        ]
        for name, value, low, high in checks:
            if not low <= value <= high:
                raise LimitExceededError(f"{name} must be between {low} and {high} on this server")
        return vcpus, memory_mb, disk_mb, timeout_ms

    async def create(self, principal: Principal, request: CreateSandbox) -> Sandbox:
        template_name = request.template or self._settings.default_template
        template = load_template(template_name, self._settings.resolved_templates_dir)
        if template is None:
            raise NotFoundError(f"template {template_name!r} not found (build it first)")
        if request.timeout_action is TimeoutAction.HIBERNATE:
            raise LimitExceededError(
                f"timeout_action 'hibernate' needs memory snapshots, which the "
                f"{self._runtime.name} backend does not have; use 'destroy'"
            )
        vcpus, memory_mb, disk_mb, timeout_ms = self._resolve_config(request)
        project_id = principal.project_id or await self._default_project(principal.org_id)
        now = self._clock()
        row = SandboxRow(
            id=ids.new_sandbox_id(),
            org_id=principal.org_id,
            project_id=project_id,
            status=SandboxStatus.CREATING.value,
            template=template_name,
            vcpus=vcpus,
            memory_mb=memory_mb,
            disk_mb=disk_mb,
            metadata_json=request.metadata,
            cwd=request.cwd,
            timeout_ms=timeout_ms,
            timeout_action=request.timeout_action.value,
            runtime=self._runtime.name,
            created_at=now,
            oom_kills_seen=0,
        )
        async with self._db.session() as session:
            session.add(row)
        spec = LaunchSpec(
            sandbox_id=row.id,
            rootfs=template.rootfs,
            vcpus=vcpus,
            memory_mb=memory_mb,
            disk_mb=disk_mb,
            pids_max=self._settings.pids_max,
            cwd=request.cwd or "/home/user",
        )
        try:
            link = await self._runtime.launch(spec)
            await link.wait_connected(self._settings.agent_connect_timeout_s)
        except (SandcastleError, OSError) as exc:
            reason = f"start failed: {exc}"
            await self._set_status(row.id, SandboxStatus.ERROR, reason=reason)
            await self._runtime.destroy(row.id)
            log.warning("sandbox %s: %s", row.id, reason)
            raise
        except asyncio.CancelledError:
            await asyncio.shield(self._abandon(row.id, "create was cancelled"))
            raise
        started = self._clock()
        return await self._set_status(
            row.id,
            SandboxStatus.RUNNING,
            started_at=started,
            timeout_at=started + timedelta(milliseconds=timeout_ms),
        )

    async def _abandon(self, sandbox_id: str, reason: str) -> None:
        await self._set_status(sandbox_id, SandboxStatus.ERROR, reason=reason)
        await self._runtime.destroy(sandbox_id)

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

    # --- destroy ---------------------------------------------------------------------------

    async def destroy(self, principal: Principal, sandbox_id: str) -> Sandbox:
        sandbox = await self.get(principal, sandbox_id)
        if sandbox.status is SandboxStatus.DESTROYED:
            return sandbox
        return await self._destroy(sandbox_id, reason=None)

    async def _destroy(self, sandbox_id: str, reason: str | None) -> Sandbox:
        await self._runtime.destroy(sandbox_id)
        return await self._set_status(
            sandbox_id, SandboxStatus.DESTROYED, reason=reason, destroyed_at=self._clock()
        )

    # --- agent -----------------------------------------------------------------------------

    async def agent(self, sandbox: Sandbox, *, wait_s: float = 10.0) -> AgentLink:
        """The running sandbox's agent link, waiting briefly for an agent that is redialing."""
        sandbox.require_running()
        link = self._runtime.link(sandbox.id) or await self._runtime.adopt(sandbox.id)
        if link is None:
            await self._mark_dead(sandbox.id)
            raise ConflictError(f"sandbox {sandbox.id} is no longer running: its processes exited")
        if not link.connected:
            await link.wait_connected(wait_s)
        return link

    async def record_oom(self, sandbox_id: str) -> int | None:
        """Return the memory limit (MB) if the sandbox had an OOM kill not yet reported."""
        state = await self._runtime.poll(sandbox_id)
        async with self._db.session() as session:
            row = await session.get(SandboxRow, sandbox_id)
            if row is None or state.oom_kills <= row.oom_kills_seen:
                return None
            row.oom_kills_seen = state.oom_kills
            return row.memory_mb

    # --- start-up and reconciliation -------------------------------------------------------

    async def adopt_all(self) -> None:
        """At start-up: re-attach to every live sandbox; mark those whose processes died."""
        async with self._db.session() as session:
            rows = (
                await session.scalars(
                    select(SandboxRow).where(
                        SandboxRow.status.in_([s.value for s in LIVE_STATUSES])
                    )
                )
            ).all()
        for row in rows:
            link = await self._runtime.adopt(row.id)
            if row.status == SandboxStatus.CREATING.value:
                # The server died mid-create: nobody is waiting for it, so do not keep it.
                await self._abandon(
                    row.id, "the server restarted while the sandbox was being created"
                )
            elif link is None:
                await self._mark_dead(row.id)
            else:
                log.info("re-adopted sandbox %s", row.id)

    async def reconcile(self) -> None:
        """Apply deadlines and notice sandboxes whose processes are gone."""
        now = self._clock()
        async with self._db.session() as session:
            rows = (
                await session.scalars(
                    select(SandboxRow).where(SandboxRow.status == SandboxStatus.RUNNING.value)
                )
            ).all()
        for row in rows:
            if row.timeout_at is not None and row.timeout_at <= now:
                log.info("sandbox %s reached its timeout: destroying", row.id)
                await self._destroy(row.id, reason="timeout")
                continue
            if not (await self._runtime.poll(row.id)).alive:
                await self._mark_dead(row.id)

    async def _mark_dead(self, sandbox_id: str) -> None:
        reason = "the sandbox's processes exited unexpectedly"
        await self._runtime.destroy(sandbox_id)
        try:
            await self._set_status(sandbox_id, SandboxStatus.ERROR, reason=reason)
        except ConflictError:
            pass  # destroyed meanwhile
        log.warning("sandbox %s: %s", sandbox_id, reason)

    async def _set_status(
        self, sandbox_id: str, status: SandboxStatus, *, reason: str | None = None, **values: Any
    ) -> Sandbox:
        async with self._db.session() as session:
            row = await session.get(SandboxRow, sandbox_id, with_for_update=True)
            if row is None:
                raise NotFoundError(f"sandbox {sandbox_id} not found")
            current = SandboxStatus(row.status)
            if current is not status:
                check_transition(sandbox_id, current, status)
            row.status = status.value
            if reason is not None:
                row.status_reason = reason
            for key, value in values.items():
                setattr(row, key, value)
            return repo.to_sandbox(row)

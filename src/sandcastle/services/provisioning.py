"""Bringing a new sandbox up: shared by a create, a fork and a warm-pool refill.

A new sandbox is placed (project, workspace, the org's limits), admitted under its org's create
lock, recorded ``creating`` (committed before the runtime acts on it), launched or restored,
and ``running`` once its agent connects — or ``error`` with the reason. It never stays
``creating``: a failure or a cancellation abandons it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sandcastle.config import Settings
from sandcastle.domain import ids
from sandcastle.domain.clock import Clock
from sandcastle.domain.sandbox import Sandbox, SandboxStatus, TimeoutAction, normalise_cwd
from sandcastle.domain.tenancy import Placement
from sandcastle.errors import LimitExceededError
from sandcastle.runtime.base import LaunchSpec, Runtime
from sandcastle.runtime.channel import AgentLink
from sandcastle.services.admission import Admission
from sandcastle.services.auth import Principal
from sandcastle.services.limits import Resources, check_timeout
from sandcastle.services.states import SandboxStates
from sandcastle.store.models import SandboxRow
from sandcastle.store.sandboxes import SandboxRepository


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
    #: Environment variables every process and execution in the sandbox starts with.
    env: dict[str, str] = field(default_factory=dict)


class Provisioning:
    def __init__(
        self,
        settings: Settings,
        sandboxes: SandboxRepository,
        runtime: Runtime,
        states: SandboxStates,
        admission: Admission,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._sandboxes = sandboxes
        self._runtime = runtime
        self._states = states
        self._admission = admission
        self._clock = clock
        self._starting = asyncio.Semaphore(settings.starts_max_concurrent)

    # --- where it runs ---------------------------------------------------------------------

    def backend_of(self, name: str) -> Runtime:
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

    # --- admission -------------------------------------------------------------------------

    async def place(self, principal: Principal, request: CreateSandbox) -> Placement:
        return await self._admission.place(principal, request.project_id, request.workspace_id)

    @contextlib.asynccontextmanager
    async def admitted(self, org_id: str, placement: Placement) -> AsyncIterator[None]:
        """The org's capacity checked, under its create lock: commit the new row inside, so
        the next create's check counts it."""
        async with self._admission.creating(org_id, placement.limits):
            yield

    # --- the record ------------------------------------------------------------------------

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
            "env_json": dict(request.env),
        }

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
            envd_access_token=secrets.token_urlsafe(24),
            metadata_json=values.pop("metadata_json", {}),
            timeout_action=values.pop("timeout_action", TimeoutAction.DESTROY.value),
            **values,
        )

    async def record(self, row: SandboxRow) -> None:
        """Commit the new record (inside :meth:`admitted`, so the next create counts it)."""
        await self._sandboxes.insert(row)

    # --- start -----------------------------------------------------------------------------

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
        await self._sandboxes.insert(row)
        spec = self.launch_spec(row, rootfs)
        try:
            # The connect timeout counts from the launch, not from the wait for a turn.
            async with self._starting:
                link = await (start or self._runtime.launch)(spec)
                await link.wait_connected(self._settings.agent_connect_timeout_s)
            if connected is not None:
                await connected(link)
        except Exception as exc:
            # Whatever went wrong, the sandbox must not stay ``creating``.
            await self._states.abandon(row.id, f"start failed: {exc}")
            raise
        except asyncio.CancelledError:
            await asyncio.shield(self._states.abandon(row.id, "create was cancelled"))
            raise
        started = self._clock()
        deadline = (
            None if row.timeout_ms is None else started + timedelta(milliseconds=row.timeout_ms)
        )
        return await self._states.set_status(
            row.id, SandboxStatus.RUNNING, started_at=started, timeout_at=deadline
        )

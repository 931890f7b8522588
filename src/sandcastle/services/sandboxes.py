"""Sandbox lifecycle as tenants see it: create, get, list, pause, resume, timeout, destroy,
and the agent link every request into a sandbox goes through.

The pieces underneath have modules of their own: bringing a sandbox up (``provisioning.py``,
shared with forks and the warm pool), status changes (``states.py``), hibernation
(``hibernation.py``), deadlines, dead sandboxes and re-adoption (``reconciler.py``).
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from sandcastle.config import Settings
from sandcastle.domain.clock import Clock
from sandcastle.domain.metering import PauseReason
from sandcastle.domain.sandbox import (
    DEADLINE_STATUSES,
    ListFilter,
    Sandbox,
    SandboxStatus,
    TimeoutAction,
    check_transition,
)
from sandcastle.errors import (
    AgentUnavailableError,
    ConflictError,
    LimitExceededError,
    NotFoundError,
)
from sandcastle.runtime.base import Runtime
from sandcastle.runtime.channel import AgentLink
from sandcastle.runtime.templates.catalogue import resolve
from sandcastle.services.admission import Admission
from sandcastle.services.auth import Principal
from sandcastle.services.diskspace import ensure_free
from sandcastle.services.hibernation import Hibernation
from sandcastle.services.limits import check_timeout, org_resources
from sandcastle.services.pool import WarmPoolService
from sandcastle.services.provisioning import CreateSandbox, Provisioning
from sandcastle.services.states import SandboxStates
from sandcastle.store.sandboxes import SandboxRepository


class SandboxService:
    def __init__(
        self,
        settings: Settings,
        sandboxes: SandboxRepository,
        runtime: Runtime,
        provisioning: Provisioning,
        states: SandboxStates,
        admission: Admission,
        hibernation: Hibernation,
        pool: WarmPoolService,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._sandboxes = sandboxes
        self._runtime = runtime
        self._provisioning = provisioning
        self._states = states
        self._admission = admission
        self._hibernation = hibernation
        self._pool = pool
        self._clock = clock

    @property
    def runtime(self) -> Runtime:
        return self._runtime

    # --- queries ---------------------------------------------------------------------------

    async def get(self, principal: Principal, sandbox_id: str) -> Sandbox:
        return await self._sandboxes.owned(
            principal.org_id, sandbox_id, member_id=principal.sandbox_member
        )

    async def find_by_id(self, sandbox_id: str) -> Sandbox | None:
        """A tenant's sandbox by id alone, for a caller that proves its right to it another way
        (the sandbox's own access token, ``docs/E2B.md``); warm-pool entries are nobody's."""
        sandbox = await self._sandboxes.find(sandbox_id)
        return None if sandbox is None or not sandbox.org_id else sandbox

    async def list(
        self,
        principal: Principal,
        *,
        limit: int,
        cursor: str | None,
        where: ListFilter | None = None,
    ) -> tuple[list[Sandbox], str | None]:
        return await self._sandboxes.page(
            principal.org_id,
            where or ListFilter(),
            member_id=principal.sandbox_member,
            cursor=cursor,
            limit=limit,
        )

    # --- create ----------------------------------------------------------------------------

    async def create(self, principal: Principal, request: CreateSandbox) -> Sandbox:
        ensure_free(self._settings, "create a sandbox")
        asked = request.template or self._settings.default_template
        template = resolve(asked, principal.org_id, self._settings.resolved_templates_dir)
        if template is None:
            raise NotFoundError(f"template {asked!r} not found (build it first)")
        # The key: an org's own template is recorded as ``name+org`` (``catalogue.py``).
        template_name = template.name
        if template.env:
            # The template's environment (a Dockerfile's ENV) lies beneath the sandbox's own.
            request = dataclasses.replace(request, env={**template.env, **request.env})
        if template.defaults:
            # Its resources too, where the sandbox asked for none; bounds apply as to any.
            given = template.defaults
            request = dataclasses.replace(
                request,
                vcpus=request.vcpus or given.get("vcpus"),
                memory_mb=request.memory_mb or given.get("memory_mb"),
                disk_mb=request.disk_mb or given.get("disk_mb"),
            )
        provisioning = self._provisioning
        runtime = provisioning.template_runtime(template_name, template.runtime)
        if request.internet and not runtime.supports_internet:
            raise LimitExceededError(
                f"network.internet is not available on the {runtime.name} backend; "
                "run the server with SANDCASTLE_RUNTIME=bwrap for sandboxes that need it"
            )
        placement = await provisioning.place(principal, request)
        resources = org_resources(
            self._settings, request.vcpus, request.memory_mb, request.disk_mb, placement.limits
        )
        now = self._clock()
        tenancy = provisioning.row_values(
            principal,
            placement,
            request,
            build_id=template.build_id,
            cwd=request.cwd,
            now=now,
            runtime=runtime,
        )
        async with provisioning.admitted(principal.org_id, placement):
            pool_id, taken = await self._pool.checkout(
                template_name, resources, request.internet, tenancy, now, runtime.name
            )
            if taken is not None:
                return taken
            row = provisioning.new_row(
                template_name, resources, internet=request.internet, runtime=runtime, **tenancy
            )
            if pool_id is not None:
                row.warm_pool_hit, row.warm_pool_id = False, pool_id
            # Committed under the lock, so the next create's capacity check counts it;
            # ``boot`` re-attaches the row rather than inserting it again.
            await provisioning.record(row)
        return await provisioning.boot(row, template.rootfs)

    # --- pause, resume, timeout, destroy ----------------------------------------------------

    async def pause(self, principal: Principal, sandbox_id: str) -> Sandbox:
        sandbox = await self.get(principal, sandbox_id)
        check_transition(sandbox_id, sandbox.status, SandboxStatus.PAUSED)
        return await self.suspend(sandbox_id, PauseReason.USER)

    async def suspend(self, sandbox_id: str, reason: PauseReason) -> Sandbox:
        """Freeze a running sandbox in place, recording why: the user asked, its timeout, its
        org ran out of credits, or its creator is past the org's member limit."""
        current = await self._sandboxes.get(sandbox_id)
        check_transition(sandbox_id, current.status, SandboxStatus.PAUSED)
        await self._runtime.pause(sandbox_id)
        # The runtime also answers whoever waits on the frozen agent (``AgentLink.freeze``).
        now = self._clock()
        return await self._states.metered_move(
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
        if sandbox.hibernated:
            return await self._hibernation.wake(sandbox.id, sandbox.org_id)
        await self._admission.admit_resume(principal.org_id, sandbox_id)
        await self._runtime.resume(sandbox_id)
        return await self._states.resumed(sandbox_id, self._clock())

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
            self._provisioning.backend_of(sandbox.runtime),
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
        return await self._states.set_status(sandbox_id, sandbox.status, **values)

    async def destroy(self, principal: Principal, sandbox_id: str) -> Sandbox:
        sandbox = await self.get(principal, sandbox_id)
        if sandbox.status is SandboxStatus.DESTROYED:
            return sandbox
        return await self._states.end(sandbox_id, reason=None)

    def can_hibernate(self, sandbox: Sandbox) -> bool:
        """Whether the sandbox's backend can save its memory."""
        return self._hibernation.can_hibernate(sandbox)

    async def hibernate(self, principal: Principal, sandbox_id: str) -> Sandbox:
        """Save a running (or freezer-paused) sandbox's memory and end its processes."""
        return await self._hibernation.hibernate(await self.get(principal, sandbox_id))

    # --- agent -----------------------------------------------------------------------------

    async def agent_of(self, principal: Principal, sandbox_id: str) -> AgentLink:
        """The agent of the caller's running sandbox (``NotFoundError`` for other tenants')."""
        return await self.agent(await self.get(principal, sandbox_id))

    async def agent(self, sandbox: Sandbox, *, wait_s: float = 10.0) -> AgentLink:
        """The running sandbox's agent link, waiting briefly for an agent that is redialing.

        The choke point of every use of an agent: a hibernated sandbox with ``auto_resume`` is
        restored here first (once, however many requests arrive together)."""
        sandbox.require_running()
        if sandbox.hibernated:
            sandbox = await self._hibernation.wake(sandbox.id, sandbox.org_id)
        link = self._runtime.link(sandbox.id)
        if link is None:
            # No link: the sandbox may have ended since ``sandbox`` was read (its link goes
            # first); adopting it would wait for an agent that is gone.
            if self._states.ending(sandbox.id):
                raise ConflictError(f"sandbox {sandbox.id} is being destroyed")
            (await self._sandboxes.get(sandbox.id)).require_running()
            link = await self._runtime.adopt(sandbox.id)
        if (
            link is not None
            and not link.connected
            and not (await self._runtime.poll(sandbox.id)).alive
        ):
            link = None
        if link is None:
            await self._states.mark_dead(sandbox.id)
            raise ConflictError(f"sandbox {sandbox.id} is no longer running: its processes exited")
        if not link.connected:
            try:
                await link.wait_connected(wait_s)
            except AgentUnavailableError:
                # Its agent went away because the sandbox ended meanwhile (destroyed at its
                # deadline, say): that is the answer, not a failed gateway.
                if self._states.ending(sandbox.id):
                    raise ConflictError(f"sandbox {sandbox.id} is being destroyed") from None
                (await self._sandboxes.get(sandbox.id)).require_running()
                raise
        return link

    async def observe_oom(self, sandbox_id: str) -> int:
        """The sandbox's OOM-kill count now, recorded on its record."""
        return await self._states.observe_oom(sandbox_id)

"""Admission: whether a sandbox may be created, or resumed, now.

A create (:meth:`Admission.place`, then :meth:`Admission.creating`) checks, in this order:
the project and workspace exist in the caller's org (404) and the key's project scope allows
them (403); the org has credits (``usage_limit_exceeded_error``); the caller is within the org's
member limit (``member_limit_exceeded_error``); the org runs fewer sandboxes than its maximum
(``org_sandbox_capacity_exceeded_error``). A resume checks credits and the member limit of the
sandbox's creator.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from sandcastle.config import Settings
from sandcastle.domain.tenancy import OrgLimits, Placement
from sandcastle.errors import (
    FieldError,
    ForbiddenError,
    MemberLimitExceededError,
    NotFoundError,
    SandboxCapacityExceededError,
    UsageLimitExceededError,
)
from sandcastle.services.auth import Principal
from sandcastle.services.tenancy import effective_limits, over_limit_members
from sandcastle.store.models import OrgRow
from sandcastle.store.tenancy import TenancyStore, TenancyTx


class Admission:
    def __init__(self, settings: Settings, store: TenancyStore) -> None:
        self._settings = settings
        self._store = store
        self._create_locks: dict[str, asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def creating(self, org_id: str, limits: OrgLimits | None) -> AsyncIterator[None]:
        """The org's capacity checked (when it has ``limits``), held for the caller to commit
        its new row: the next create of the org, in this process or another on the same
        database, waits and then counts it."""
        async with (
            self._create_locks.setdefault(org_id, asyncio.Lock()),
            self._store.org_lock(org_id),
        ):
            if limits is not None:
                await self.check_capacity(org_id, limits)
            yield

    async def place(
        self, principal: Principal, project_id: str | None, workspace_id: str | None
    ) -> Placement:
        """Where a create by ``principal`` goes; raises if the org may not create now."""
        async with self._store.transaction() as tx:
            org = await tx.org(principal.org_id)
            if org is None:
                raise NotFoundError("the key's org no longer exists")
            workspace = None
            if workspace_id is not None:
                workspace = await tx.workspace(org.id, workspace_id)
            if project_id is not None:
                await tx.project(org.id, project_id)
            else:
                project_id = (
                    (workspace.project_id if workspace is not None else None)
                    or principal.project_id
                    or await tx.first_project(org.id)
                )
            if principal.project_id is not None and project_id != principal.project_id:
                raise ForbiddenError(f"this key is scoped to project {principal.project_id}")
            if workspace is not None and workspace.project_id != project_id:
                raise FieldError(
                    "workspace_id", f"workspace {workspace.id} belongs to another project"
                )
            await self._check_may_run(tx, org, principal.member_id)
        return Placement(project_id, workspace_id, effective_limits(org, self._settings))

    async def admit_resume(self, org_id: str, sandbox_id: str) -> None:
        """A paused sandbox may run again only while its org has credits and its creator is
        within the member limit."""
        async with self._store.transaction() as tx:
            org = await tx.org(org_id)
            found, creator = await tx.sandbox_creator(sandbox_id)
            if org is None or not found:
                raise NotFoundError(f"sandbox {sandbox_id} not found")
            await self._check_may_run(tx, org, creator)

    async def _check_may_run(self, tx: TenancyTx, org: OrgRow, member_id: str | None) -> None:
        if org.credit_balance <= 0:
            raise UsageLimitExceededError(
                f"org {org.slug!r} has no credits left (balance {org.credit_balance}); "
                "an owner or admin can top up with POST /v1/orgs/{org}/credits"
            )
        if member_id is not None and member_id in await over_limit_members(tx, org, self._settings):
            raise MemberLimitExceededError(
                f"org {org.slug!r} has more members than its limit allows, and this member is "
                "past it"
            )

    async def check_capacity(self, org_id: str, limits: OrgLimits) -> None:
        """Refuse a create when the org's live sandboxes (creating, running or paused: all hold
        resources) are at its maximum (see :meth:`creating`, which serialises creates)."""
        async with self._store.transaction() as tx:
            live = await tx.live_sandboxes(org_id)
        if live >= limits.max_concurrent_sandboxes:
            raise SandboxCapacityExceededError(
                f"the org runs {live} sandboxes, its maximum at once is "
                f"{limits.max_concurrent_sandboxes}; destroy some first"
            )

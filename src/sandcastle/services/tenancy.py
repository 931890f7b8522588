"""Tenancy: orgs, projects and workspaces; who may do what.

(Members and keys are ``services/members.py``; admission of sandbox creates and resumes is
``services/admission.py``.)

Every call is made by a :class:`~sandcastle.services.auth.Principal` (a key of one member of one
org). An org the key is not a member of does not exist for it (404, never 403); inside its own
org, what a member's role does not allow is a 403. Owners and admins manage projects,
workspaces, members, keys and credits; only owners make or change owners; a member manages
their own keys. Operators (owners of the org made at first start) may also create orgs and set
any org's limits and credits.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sandcastle.config import Settings
from sandcastle.domain.clock import Clock, utcnow
from sandcastle.domain.roles import Role
from sandcastle.domain.tenancy import (
    ApiKey,
    NewKey,
    Org,
    OrgLimits,
    Project,
    Workspace,
)
from sandcastle.errors import (
    AlreadyExistsError,
    FieldError,
    ForbiddenError,
    NotFoundError,
)
from sandcastle.services.auth import Principal, new_key_row
from sandcastle.store.models import (
    ApiKeyRow,
    MemberRow,
    OrgRow,
    ProjectRow,
    WorkspaceRow,
)
from sandcastle.store.tenancy import DuplicateError, TenancyStore, TenancyTx

#: Slugs and keys: lowercase letters, digits and inner hyphens, 1 to 64 characters.
SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
SANDBOX_KINDS = ("runtime", "task", "evaluation", "world")


LIMIT_FIELDS = (
    "max_concurrent_sandboxes",
    "max_members",
    "max_vcpus",
    "max_memory_mb",
    "rate_limit_per_s",
    "rate_limit_burst",
)


def effective_limits(org: OrgRow, settings: Settings) -> OrgLimits:
    return OrgLimits(
        max_concurrent_sandboxes=_pick(
            org.max_concurrent_sandboxes, settings.org_max_concurrent_sandboxes
        ),
        max_members=_pick(org.max_members, settings.org_max_members),
        # The host's bounds are hard: an org may have less, never more.
        max_vcpus=min(_pick(org.max_vcpus, settings.max_vcpus), settings.max_vcpus),
        max_memory_mb=min(_pick(org.max_memory_mb, settings.max_memory_mb), settings.max_memory_mb),
        rate_limit_per_s=(
            settings.rate_limit_per_s if org.rate_limit_per_s is None else org.rate_limit_per_s
        ),
        rate_limit_burst=_pick(org.rate_limit_burst, settings.rate_limit_burst),
    )


def _pick(override: int | None, default: int) -> int:
    return default if override is None else override


async def over_limit_members(tx: TenancyTx, org: OrgRow, settings: Settings) -> set[str]:
    """Members past the org's member limit: owners rank first, then by the time they joined."""
    return await tx.over_limit_members(org.id, _pick(org.max_members, settings.org_max_members))


def check_slug(field: str, value: str) -> None:
    if not SLUG.match(value):
        raise FieldError(field, f"{field} must be 1-64 lowercase letters, digits or inner hyphens")


class TenancyService:
    def __init__(self, settings: Settings, store: TenancyStore, clock: Clock = utcnow) -> None:
        self._settings = settings
        self._store = store
        self._clock = clock

    # --- access ---------------------------------------------------------------------------

    async def resolve_org(
        self, principal: Principal, slug: str, *, operator_ok: bool = False
    ) -> OrgRow:
        """The org ``slug`` if the key belongs to it (or, where ``operator_ok``, the caller is an
        operator); any other org is simply not found."""
        async with self._store.transaction() as tx:
            org = await tx.org_by_slug(slug)
        if org is None or (org.id != principal.org_id and not (operator_ok and principal.operator)):
            raise NotFoundError(f"org {slug!r} not found")
        return org

    async def own_org_id(self, principal: Principal, slug: str) -> str:
        """The id of org ``slug`` if it is the key's own (no lookup needed); else 404."""
        if principal.org_slug:
            if slug != principal.org_slug:
                raise NotFoundError(f"org {slug!r} not found")
            return principal.org_id
        return (await self.resolve_org(principal, slug)).id

    @staticmethod
    def require_admin(principal: Principal) -> None:
        if not principal.is_admin:
            raise ForbiddenError("only owners and admins of the org may do this")

    # --- orgs -----------------------------------------------------------------------------

    def _org(self, row: OrgRow, principal: Principal) -> Org:
        return Org(
            id=row.id,
            slug=row.slug,
            name=row.name,
            created_at=row.created_at,
            credit_balance=row.credit_balance,
            limits=effective_limits(row, self._settings),
            role=principal.role if row.id == principal.org_id else None,
        )

    async def list_orgs(self, principal: Principal) -> list[Org]:
        """The org the key acts in (a key belongs to one member of one org)."""
        async with self._store.transaction() as tx:
            row = await tx.org(principal.org_id)
        return [] if row is None else [self._org(row, principal)]

    async def get_org(self, principal: Principal, slug: str) -> Org:
        return self._org(await self.resolve_org(principal, slug, operator_ok=True), principal)

    async def create_org(
        self, principal: Principal, slug: str, name: str | None
    ) -> tuple[Org, NewKey]:
        """A new org owned by the caller's user, with project ``default`` and a key for the new
        membership (the caller's key acts only in its own org)."""
        if not (principal.operator or self._settings.allow_org_create):
            raise ForbiddenError(
                "only operators may create orgs on this server (SANDCASTLE_ALLOW_ORG_CREATE)"
            )
        if principal.user_id is None:
            raise ForbiddenError("this key belongs to no user, so it cannot own an org")
        check_slug("slug", slug)
        now = self._clock()
        org = OrgRow(
            id=str(uuid.uuid4()),
            slug=slug,
            name=name or slug,
            created_at=now,
            credit_balance=self._settings.initial_org_credits,
        )
        member = MemberRow(
            id=str(uuid.uuid4()),
            org_id=org.id,
            user_id=principal.user_id,
            role=Role.OWNER.value,
            created_at=now,
        )
        project = ProjectRow(
            id=str(uuid.uuid4()), org_id=org.id, key="default", name="Default", created_at=now
        )
        secret, key_row = new_key_row(
            org_id=org.id,
            project_id=None,
            name=f"{slug} owner",
            role=Role.OWNER.value,
            now=now,
            member_id=member.id,
        )
        try:
            async with self._store.inserting() as tx:
                if await tx.org_by_slug(slug) is not None:
                    raise AlreadyExistsError(f"org {slug!r} exists already")
                tx.add(org)
                await tx.flush()
                tx.add(member, project)
                await tx.flush()
                tx.add(key_row)
        except DuplicateError as exc:
            raise AlreadyExistsError(f"org {slug!r} exists already") from exc
        owner = Principal(
            key_id=key_row.id,
            org_id=org.id,
            project_id=None,
            role=Role.OWNER.value,
            member_id=member.id,
            user_id=principal.user_id,
        )
        return self._org(org, owner), NewKey(key_view(key_row), secret)

    async def set_limits(self, principal: Principal, slug: str, changes: dict[str, Any]) -> Org:
        """Override (or, with ``None``, reset to the server default) an org's quotas.

        Operators only: quotas bound what an org may use, so its own owners cannot lift them.
        """
        org = await self.resolve_org(principal, slug, operator_ok=True)
        if not principal.operator:
            raise ForbiddenError("only operators may change an org's limits")
        s = self._settings
        bounds: dict[str, tuple[float, float]] = {
            "max_concurrent_sandboxes": (1, 1_000_000),
            "max_members": (1, 1_000_000),
            "max_vcpus": (1, s.max_vcpus),
            "max_memory_mb": (s.min_memory_mb, s.max_memory_mb),
            "rate_limit_per_s": (0, 1_000_000),
            "rate_limit_burst": (1, 1_000_000),
        }
        for name, value in changes.items():
            low, high = bounds[name]
            if value is not None and not low <= value <= high:
                raise FieldError(name, f"{name} must be between {low:g} and {high:g}")
        async with self._store.transaction() as tx:
            row = await tx.set_org(org.id, changes)
        return self._org(row, principal)

    # --- projects and workspaces ----------------------------------------------------------

    async def list_projects(self, principal: Principal, slug: str) -> list[Project]:
        org = await self.resolve_org(principal, slug)
        async with self._store.transaction() as tx:
            rows = await tx.projects(org.id)
        return [_project(r) for r in rows]

    async def get_project(self, principal: Principal, slug: str, project_id: str) -> Project:
        org = await self.resolve_org(principal, slug)
        async with self._store.transaction() as tx:
            return _project(await tx.project(org.id, project_id))

    async def create_project(
        self, principal: Principal, slug: str, key: str, name: str | None
    ) -> Project:
        org = await self.resolve_org(principal, slug)
        self.require_admin(principal)
        check_slug("key", key)
        row = ProjectRow(
            id=str(uuid.uuid4()), org_id=org.id, key=key, name=name or key, created_at=self._clock()
        )
        await self._insert_unique(
            row,
            lambda tx: tx.project_key_taken(org.id, key),
            f"project {key!r} exists already",
        )
        return _project(row)

    async def list_workspaces(
        self, principal: Principal, slug: str, project_id: str | None = None
    ) -> list[Workspace]:
        org = await self.resolve_org(principal, slug)
        async with self._store.transaction() as tx:
            rows = await tx.workspaces(org.id, project_id)
        return [_workspace(r) for r in rows]

    async def get_workspace(self, principal: Principal, slug: str, workspace_id: str) -> Workspace:
        org = await self.resolve_org(principal, slug)
        async with self._store.transaction() as tx:
            return _workspace(await tx.workspace(org.id, workspace_id))

    async def create_workspace(
        self,
        principal: Principal,
        slug: str,
        key: str,
        name: str | None,
        project_id: str | None,
    ) -> Workspace:
        org = await self.resolve_org(principal, slug)
        self.require_admin(principal)
        check_slug("key", key)
        async with self._store.transaction() as tx:
            project_id = project_id or principal.project_id or await tx.first_project(org.id)
            await tx.project(org.id, project_id)
        row = WorkspaceRow(
            id=str(uuid.uuid4()),
            org_id=org.id,
            project_id=project_id,
            key=key,
            name=name or key,
            created_at=self._clock(),
        )
        await self._insert_unique(
            row,
            lambda tx: tx.workspace_key_taken(org.id, key),
            f"workspace {key!r} exists already",
        )
        return _workspace(row)

    async def _insert_unique(
        self, row: Any, taken: Callable[[TenancyTx], Awaitable[bool]], message: str
    ) -> None:
        try:
            async with self._store.inserting() as tx:
                if await taken(tx):
                    raise AlreadyExistsError(message)
                tx.add(row)
        except DuplicateError as exc:
            raise AlreadyExistsError(message) from exc


# --- rows to views, and lookups that are 404 across orgs ---------------------------------------


def _project(row: ProjectRow) -> Project:
    return Project(id=row.id, key=row.key, name=row.name, created_at=row.created_at)


def _workspace(row: WorkspaceRow) -> Workspace:
    return Workspace(
        id=row.id, key=row.key, name=row.name, project_id=row.project_id, created_at=row.created_at
    )


def key_view(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        member_id=row.member_id,
        project_id=row.project_id,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )

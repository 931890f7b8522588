"""Members and API keys of an org: who belongs, with which role, and their keys.

Owners and admins add, change and remove members and manage every key; only owners make, change
or remove owners; an org keeps at least one owner. A member manages their own keys. Removing a
member revokes their keys at once; their sandboxes stay the org's. A key shows once, at creation,
and is stored only as a hash (``services/auth.py``).
"""

from __future__ import annotations

import re
import uuid

from sandcastle.config import Settings
from sandcastle.domain.clock import Clock, utcnow
from sandcastle.domain.roles import Role
from sandcastle.domain.tenancy import ApiKey, Member, NewKey
from sandcastle.errors import (
    ConflictError,
    FieldError,
    ForbiddenError,
    MemberExistsError,
    MemberLimitExceededError,
    NotFoundError,
)
from sandcastle.services.auth import Principal, new_key_row
from sandcastle.services.tenancy import (
    TenancyService,
    effective_limits,
    key_view,
    over_limit_members,
)
from sandcastle.store.models import MemberRow, UserRow
from sandcastle.store.tenancy import TenancyStore, TenancyTx

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


class MemberService:
    def __init__(
        self,
        settings: Settings,
        store: TenancyStore,
        tenancy: TenancyService,
        clock: Clock = utcnow,
    ) -> None:
        self._settings = settings
        self._store = store
        self._tenancy = tenancy
        self._clock = clock

    # --- members --------------------------------------------------------------------------

    async def list_members(self, principal: Principal, slug: str) -> list[Member]:
        org = await self._tenancy.resolve_org(principal, slug)
        async with self._store.transaction() as tx:
            over = await over_limit_members(tx, org, self._settings)
            rows = await tx.members(org.id)
        return [_member(m, u, m.id in over) for m, u in rows]

    async def add_member(
        self, principal: Principal, slug: str, email: str, name: str | None, role: str
    ) -> Member:
        """Make the user with ``email`` (created if new) a member with ``role``."""
        org = await self._tenancy.resolve_org(principal, slug)
        self._check_role_change(principal, role, None)
        if not _EMAIL.match(email):
            raise FieldError("email", "email must look like name@host")
        now = self._clock()
        async with self._store.transaction() as tx:
            active = await tx.count_members(org.id)
            limit = effective_limits(org, self._settings).max_members
            user = await tx.user_by_email(email)
            if user is None:
                user = UserRow(
                    id=str(uuid.uuid4()), email=email, name=name or email, created_at=now
                )
                tx.add(user)
                await tx.flush()
            member = await tx.membership(org.id, user.id)
            if member is not None and member.removed_at is None:
                raise MemberExistsError(f"{email} is a member of org {slug!r} already")
            if active >= limit:
                raise MemberLimitExceededError(f"org {slug!r} has its maximum of {limit} members")
            if member is None:
                member = MemberRow(
                    id=str(uuid.uuid4()), org_id=org.id, user_id=user.id, role=role, created_at=now
                )
                tx.add(member)
            else:  # a former member rejoins, last in line for the member limit
                member.role, member.removed_at, member.created_at = role, None, now
        return _member(member, user, False)

    async def update_member(
        self, principal: Principal, slug: str, member_id: str, role: str
    ) -> Member:
        org = await self._tenancy.resolve_org(principal, slug)
        async with self._store.transaction() as tx:
            member, user = await tx.member(org.id, member_id)
            self._check_role_change(principal, role, member.role)
            if member.role == Role.OWNER.value and role != Role.OWNER.value:
                await _keep_an_owner(tx, org.id)
            member.role = role
            over = await over_limit_members(tx, org, self._settings)
        return _member(member, user, member.id in over)

    async def remove_member(self, principal: Principal, slug: str, member_id: str) -> None:
        """Remove the member and revoke every key of theirs; their sandboxes stay the org's."""
        org = await self._tenancy.resolve_org(principal, slug)
        now = self._clock()
        async with self._store.transaction() as tx:
            member, _user = await tx.member(org.id, member_id)
            self._check_role_change(principal, None, member.role)
            if member.role == Role.OWNER.value:
                await _keep_an_owner(tx, org.id)
            member.removed_at = now
            await tx.revoke_keys_of(member.id, now)

    @staticmethod
    def _check_role_change(principal: Principal, new: str | None, current: str | None) -> None:
        """Admins manage admins and members; only owners make, change or remove owners."""
        TenancyService.require_admin(principal)
        if new is not None and new not in {r.value for r in Role}:
            raise FieldError("role", "role must be owner, admin or member")
        if Role.OWNER.value in (new, current) and principal.role != Role.OWNER.value:
            raise ForbiddenError("only owners may make, change or remove owners")

    # --- keys -----------------------------------------------------------------------------

    async def list_keys(self, principal: Principal, slug: str) -> list[ApiKey]:
        """Every key of the org for owners and admins; a member's own keys otherwise."""
        org = await self._tenancy.resolve_org(principal, slug)
        async with self._store.transaction() as tx:
            if principal.is_admin:
                rows = await tx.keys(org.id)
            else:
                rows = await tx.keys_of_member(org.id, principal.member_id)
        return [key_view(r) for r in rows]

    async def create_key(
        self,
        principal: Principal,
        slug: str,
        name: str,
        *,
        member_id: str | None = None,
        project_id: str | None = None,
    ) -> NewKey:
        """A key for the caller (or, for owners and admins, for another member), optionally
        scoped to a project. A project-scoped key can only make keys of its own project."""
        org = await self._tenancy.resolve_org(principal, slug)
        target_id = member_id or principal.member_id
        if target_id is None:
            raise ForbiddenError("this key belongs to no member; name one with member_id")
        if principal.project_id is not None:
            if project_id not in (None, principal.project_id):
                raise ForbiddenError("a project-scoped key can only make keys of its project")
            project_id = principal.project_id
        async with self._store.transaction() as tx:
            target, _user = await tx.member(org.id, target_id)
            if target.id != principal.member_id:
                self._check_role_change(principal, None, target.role)
            if project_id is not None:
                await tx.project(org.id, project_id)
            secret, row = new_key_row(
                org_id=org.id,
                project_id=project_id,
                name=name,
                role=target.role,
                now=self._clock(),
                member_id=target.id,
            )
            tx.add(row)
        return NewKey(key_view(row), secret)

    async def revoke_key(self, principal: Principal, slug: str, key_id: str) -> None:
        """Revoke at once: the key's next request is a 401."""
        org = await self._tenancy.resolve_org(principal, slug)
        async with self._store.transaction() as tx:
            row = await tx.key(key_id)
            if row is None or row.org_id != org.id:
                raise NotFoundError(f"key {key_id} not found")
            if row.member_id != principal.member_id or principal.member_id is None:
                if not principal.is_admin:
                    raise NotFoundError(f"key {key_id} not found")  # others' keys are not listed
                holder = None
                if row.member_id is not None:
                    holder = await tx.member_by_id(row.member_id)
                self._check_role_change(principal, None, holder.role if holder else None)
            if row.revoked_at is None:
                row.revoked_at = self._clock()


def _member(row: MemberRow, user: UserRow, over: bool) -> Member:
    return Member(
        id=row.id,
        user_id=user.id,
        email=user.email,
        name=user.name,
        role=row.role,
        created_at=row.created_at,
        over_limit=over,
    )


async def _keep_an_owner(tx: TenancyTx, org_id: str) -> None:
    if await tx.count_members(org_id, role=Role.OWNER.value) <= 1:
        raise ConflictError("an org must keep at least one owner")

"""The tenancy records: orgs, projects, workspaces, users, members and keys.

The rules of tenancy (who may do what, the member limit, keeping an owner) interleave with
its reads and writes inside one transaction, so this store hands the services a unit of work:
``async with store.transaction() as tx`` gives a :class:`TenancyTx` whose methods read and
write in that transaction; it commits when the block ends and rolls back if it raises. Rows a
``tx`` returns may be changed in the block and are saved with it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from sqlalchemy import Select, case, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from sandcastle.domain.roles import Role
from sandcastle.domain.sandbox import LIVE_STATUSES
from sandcastle.errors import NotFoundError
from sandcastle.store.db import Database
from sandcastle.store.models import (
    ApiKeyRow,
    MemberRow,
    OrgRow,
    ProjectRow,
    SandboxRow,
    UserRow,
    WorkspaceRow,
)


class TenancyTx:
    """Reads and writes of one transaction (see the module's docstring)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    def add(self, *rows: Any) -> None:
        self._session.add_all(rows)

    async def flush(self) -> None:
        await self._session.flush()

    # --- orgs ------------------------------------------------------------------------------

    async def org(self, org_id: str) -> OrgRow | None:
        return await self._session.get(OrgRow, org_id)

    async def any_org(self) -> bool:
        return await self._session.scalar(select(OrgRow.id).limit(1)) is not None

    async def org_by_slug(self, slug: str) -> OrgRow | None:
        return await self._session.scalar(select(OrgRow).where(OrgRow.slug == slug))

    async def set_org(self, org_id: str, values: dict[str, Any]) -> OrgRow:
        """Change the org's columns in ``values``; none (a PATCH of ``{}``) changes nothing."""
        if values:
            await self._session.execute(update(OrgRow).where(OrgRow.id == org_id).values(**values))
        row = await self._session.get(OrgRow, org_id, populate_existing=True)
        assert row is not None
        return row

    # --- projects and workspaces -----------------------------------------------------------

    async def project(self, org_id: str, project_id: str) -> ProjectRow:
        """The org's project; another org's is not found."""
        row = await self._session.get(ProjectRow, project_id)
        if row is None or row.org_id != org_id:
            raise NotFoundError(f"project {project_id} not found")
        return row

    async def workspace(self, org_id: str, workspace_id: str) -> WorkspaceRow:
        """The org's workspace; another org's is not found."""
        row = await self._session.get(WorkspaceRow, workspace_id)
        if row is None or row.org_id != org_id:
            raise NotFoundError(f"workspace {workspace_id} not found")
        return row

    async def first_project(self, org_id: str) -> str:
        """The org's oldest project: where a sandbox goes when nothing else names one."""
        project_id = await self._session.scalar(
            select(ProjectRow.id)
            .where(ProjectRow.org_id == org_id)
            .order_by(ProjectRow.created_at, ProjectRow.id)
        )
        if project_id is None:
            raise NotFoundError("the organisation has no project to put the sandbox in")
        return project_id

    async def projects(self, org_id: str) -> list[ProjectRow]:
        return list(
            await self._session.scalars(
                select(ProjectRow)
                .where(ProjectRow.org_id == org_id)
                .order_by(ProjectRow.created_at, ProjectRow.id)
            )
        )

    async def workspaces(self, org_id: str, project_id: str | None) -> list[WorkspaceRow]:
        query = select(WorkspaceRow).where(WorkspaceRow.org_id == org_id)
        if project_id is not None:
            query = query.where(WorkspaceRow.project_id == project_id)
        return list(
            await self._session.scalars(query.order_by(WorkspaceRow.created_at, WorkspaceRow.id))
        )

    async def project_key_taken(self, org_id: str, key: str) -> bool:
        found = await self._session.scalar(
            select(ProjectRow.id).where(ProjectRow.org_id == org_id, ProjectRow.key == key)
        )
        return found is not None

    async def workspace_key_taken(self, org_id: str, key: str) -> bool:
        found = await self._session.scalar(
            select(WorkspaceRow.id).where(WorkspaceRow.org_id == org_id, WorkspaceRow.key == key)
        )
        return found is not None

    # --- users and members -----------------------------------------------------------------

    async def user_by_email(self, email: str) -> UserRow | None:
        return await self._session.scalar(select(UserRow).where(UserRow.email == email))

    async def membership(self, org_id: str, user_id: str) -> MemberRow | None:
        """The user's membership of the org, current or former."""
        return await self._session.scalar(
            select(MemberRow).where(MemberRow.org_id == org_id, MemberRow.user_id == user_id)
        )

    async def member(self, org_id: str, member_id: str) -> tuple[MemberRow, UserRow]:
        """A current member of the org and their user; anyone else is not found."""
        row = await self._session.get(MemberRow, member_id)
        if row is None or row.org_id != org_id or row.removed_at is not None:
            raise NotFoundError(f"member {member_id} not found")
        user = await self._session.get(UserRow, row.user_id)
        assert user is not None
        return row, user

    async def member_by_id(self, member_id: str) -> MemberRow | None:
        return await self._session.get(MemberRow, member_id)

    async def members(self, org_id: str) -> list[tuple[MemberRow, UserRow]]:
        """The org's current members with their users, in the order they joined."""
        rows = await self._session.execute(
            select(MemberRow, UserRow)
            .join(UserRow, UserRow.id == MemberRow.user_id)
            .where(MemberRow.org_id == org_id, MemberRow.removed_at.is_(None))
            .order_by(MemberRow.created_at, MemberRow.id)
        )
        return [(m, u) for m, u in rows]

    async def count_members(self, org_id: str, *, role: str | None = None) -> int:
        query = (
            select(func.count())
            .select_from(MemberRow)
            .where(MemberRow.org_id == org_id, MemberRow.removed_at.is_(None))
        )
        if role is not None:
            query = query.where(MemberRow.role == role)
        return int(await self._session.scalar(query) or 0)

    async def over_limit_members(self, org_id: str, limit: int) -> set[str]:
        """Members past the first ``limit``: owners rank first, then by the time they joined."""
        ranked = await self._session.scalars(
            select(MemberRow.id)
            .where(MemberRow.org_id == org_id, MemberRow.removed_at.is_(None))
            .order_by(
                case((MemberRow.role == Role.OWNER.value, 0), else_=1),
                MemberRow.created_at,
                MemberRow.id,
            )
        )
        return set(list(ranked)[limit:])

    # --- keys ------------------------------------------------------------------------------

    async def key_by_hash(self, key_hash: str) -> tuple[ApiKeyRow, MemberRow | None, OrgRow] | None:
        """The key with this hash (revoked or not), its member if any, and its org."""
        found = (
            await self._session.execute(
                select(ApiKeyRow, MemberRow, OrgRow)
                .join(OrgRow, OrgRow.id == ApiKeyRow.org_id)
                .outerjoin(MemberRow, MemberRow.id == ApiKeyRow.member_id)
                .where(ApiKeyRow.key_hash == key_hash)
            )
        ).first()
        return None if found is None else (found[0], found[1], found[2])

    async def key(self, key_id: str) -> ApiKeyRow | None:
        return await self._session.get(ApiKeyRow, key_id)

    async def keys(self, org_id: str) -> list[ApiKeyRow]:
        """The org's keys, oldest first."""
        return await self._keys(select(ApiKeyRow).where(ApiKeyRow.org_id == org_id))

    async def keys_of_member(self, org_id: str, member_id: str | None) -> list[ApiKeyRow]:
        """The member's keys in the org (None: the keys that belong to no member)."""
        return await self._keys(
            select(ApiKeyRow).where(ApiKeyRow.org_id == org_id, ApiKeyRow.member_id == member_id)
        )

    async def _keys(self, query: Select[ApiKeyRow]) -> list[ApiKeyRow]:
        return list(await self._session.scalars(query.order_by(ApiKeyRow.created_at, ApiKeyRow.id)))

    async def revoke_keys_of(self, member_id: str, now: datetime) -> None:
        await self._session.execute(
            update(ApiKeyRow)
            .where(ApiKeyRow.member_id == member_id, ApiKeyRow.revoked_at.is_(None))
            .values(revoked_at=now)
        )

    # --- sandboxes, as admission counts them -----------------------------------------------

    async def sandbox_creator(self, sandbox_id: str) -> tuple[bool, str | None]:
        """Whether the sandbox exists, and the member who created it."""
        row = await self._session.get(SandboxRow, sandbox_id)
        return (row is not None, None if row is None else row.member_id)

    async def live_sandboxes(self, org_id: str) -> int:
        """The org's sandboxes that hold resources: creating, running or paused."""
        count = await self._session.scalar(
            select(func.count())
            .select_from(SandboxRow)
            .where(
                SandboxRow.org_id == org_id,
                SandboxRow.status.in_([s.value for s in LIVE_STATUSES]),
            )
        )
        return int(count or 0)


#: The first key of every org's advisory lock (the second is a hash of its id), so that other
#: users of advisory locks on the same database cannot collide with ours.
_ORG_LOCKS = 0x5C0A


class TenancyStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        #: Counts the transactions that may have changed orgs, members or keys (every one but
        #: ``reading``'s), so that what was read before one is known to be stale after it
        #: (``services/principals.py``).
        self.generation = 0

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[TenancyTx]:
        try:
            async with self.reading() as tx:
                yield tx
        finally:
            # After the commit (or the rollback): a read that began before it has the old
            # generation and is discarded; one after it sees the change.
            self.generation += 1

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[TenancyTx]:
        """A transaction that only reads, and so leaves ``generation`` alone."""
        async with self._db.session() as session:
            yield TenancyTx(session)

    @contextlib.asynccontextmanager
    async def org_lock(self, org_id: str) -> AsyncIterator[None]:
        """Held across the steps of one change to ``org_id`` that must not interleave with
        another server process's (a create's capacity check and the commit of its row).

        On PostgreSQL, a transaction-scoped advisory lock on a connection of its own: the
        guarded steps run in their own transactions meanwhile. SQLite is one process's store
        (its writers are serialised anyway), so there the caller's in-process lock suffices."""
        if not self._db.is_postgresql:
            yield
            return
        async with self._db.session() as session:
            await session.execute(
                text("SELECT pg_advisory_xact_lock(:space, hashtext(:org_id))"),
                {"space": _ORG_LOCKS, "org_id": org_id},
            )
            yield

    @contextlib.asynccontextmanager
    async def inserting(self) -> AsyncIterator[TenancyTx]:
        """A transaction whose unique-key conflict (a race the caller's own check lost) is
        :class:`DuplicateError`."""
        try:
            async with self.transaction() as tx:
                yield tx
        except IntegrityError as exc:
            raise DuplicateError from exc


class DuplicateError(Exception):
    """A row with the same unique key exists (see :meth:`TenancyStore.inserting`)."""

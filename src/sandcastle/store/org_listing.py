"""An org's sandboxes with their usage, as ``GET /api/v1/org/{org}/sandboxes`` lists them.

Rows are loaded as plain columns, not ORM objects: a page of 100 hydrates several times faster
this way (``bench/bench_org_list.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, cast

from sqlalchemy import select

from sandcastle.domain.metering import Metered
from sandcastle.store import repositories as repo
from sandcastle.store.db import Database
from sandcastle.store.models import ProjectRow, SandboxRow, WorkspaceRow

#: The columns of :class:`~sandcastle.domain.metering.Metered`.
METERED_COLUMNS = tuple(
    getattr(SandboxRow, name)
    for name in (
        "org_id", "status", "vcpus", "memory_mb", "started_at", "last_started_at", "paused_at",
        "destroyed_at", "killed_at", "timeout_at", "meter_since", "meter_units",
        "billed_credits", "runtime_ms",
    )
)  # fmt: skip

#: What the list shows of a sandbox.
LISTED_COLUMNS = (
    *METERED_COLUMNS,
    SandboxRow.id,
    SandboxRow.uuid,
    SandboxRow.runtime,
    SandboxRow.build_id,
    SandboxRow.template,
    SandboxRow.created_at,
    SandboxRow.stopped_at,
    SandboxRow.pause_reason,
    SandboxRow.sandbox_kind,
    SandboxRow.project_id,
    SandboxRow.workspace_id,
    SandboxRow.last_credit_deduction_at,
)


class Listed(Metered, Protocol):
    """A row of :data:`LISTED_COLUMNS`, with its project's and workspace's names."""

    @property
    def id(self) -> str: ...
    @property
    def uuid(self) -> str: ...
    @property
    def runtime(self) -> str: ...
    @property
    def build_id(self) -> str | None: ...
    @property
    def template(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def stopped_at(self) -> datetime | None: ...
    @property
    def pause_reason(self) -> str | None: ...
    @property
    def sandbox_kind(self) -> str: ...
    @property
    def project_id(self) -> str | None: ...
    @property
    def workspace_id(self) -> str | None: ...
    @property
    def last_credit_deduction_at(self) -> datetime | None: ...
    @property
    def project_key(self) -> str | None: ...
    @property
    def project_name(self) -> str | None: ...
    @property
    def workspace_key(self) -> str | None: ...


class OrgSandboxListing:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def page(
        self,
        org_id: str,
        *,
        only_member: bool,
        member_id: str | None,
        project_scope: str | None,
        statuses: Sequence[str],
        project_id: str | None,
        cursor: str | None,
        limit: int,
    ) -> tuple[list[Listed], str | None]:
        """One page, newest first, and the next page's cursor; with ``only_member``, the
        sandboxes ``member_id`` created only. ``project_scope`` and ``project_id`` both
        filter."""
        query = (
            select(
                *LISTED_COLUMNS,
                ProjectRow.key.label("project_key"),
                ProjectRow.name.label("project_name"),
                WorkspaceRow.key.label("workspace_key"),
            )
            .outerjoin(ProjectRow, ProjectRow.id == SandboxRow.project_id)
            .outerjoin(WorkspaceRow, WorkspaceRow.id == SandboxRow.workspace_id)
            .where(SandboxRow.org_id == org_id)
        )
        if only_member:
            query = query.where(SandboxRow.member_id == member_id)
        if project_scope is not None:
            query = query.where(SandboxRow.project_id == project_scope)
        if statuses:
            query = query.where(SandboxRow.status.in_(statuses))
        if project_id is not None:
            query = query.where(SandboxRow.project_id == project_id)
        async with self._db.session() as session:
            page = repo.newest_first_page(query, cursor, limit)
            found = cast(list[Listed], list((await session.execute(page)).all()))
        return repo.split_page(found, limit)

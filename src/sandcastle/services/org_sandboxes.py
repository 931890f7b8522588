"""``GET /api/v1/org/{org}/sandboxes``: an org's sandboxes for the current user, with usage.

Owners and admins see every sandbox of the org; members see the sandboxes they created. A key
scoped to a project sees that project's only. States are the document's three, mapped from the
sandbox statuses: ``running`` ← running, creating; ``paused`` ← paused; ``killed`` ← destroyed,
error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, cast

from sqlalchemy import and_, or_, select

from sandcastle.domain.metering import Metered, Prices, Usage, usage
from sandcastle.domain.sandbox import SandboxStatus
from sandcastle.errors import FieldError
from sandcastle.services.accounting import METERED_COLUMNS
from sandcastle.services.auth import Principal
from sandcastle.services.tenancy import TenancyService
from sandcastle.store import repositories as repo
from sandcastle.store.db import Database
from sandcastle.store.models import ProjectRow, SandboxRow, WorkspaceRow

STATE_STATUSES: dict[str, tuple[str, ...]] = {
    "running": (SandboxStatus.RUNNING.value, SandboxStatus.CREATING.value),
    "paused": (SandboxStatus.PAUSED.value,),
    "killed": (SandboxStatus.DESTROYED.value, SandboxStatus.ERROR.value),
}
_STATE_OF = {status: state for state, statuses in STATE_STATUSES.items() for status in statuses}


def state_of(status: str) -> str:
    return _STATE_OF[status]


def parse_states(raw: list[str]) -> list[str]:
    """``state=running&state=paused,killed`` → the states, each one of the three."""
    states = [part.strip() for item in raw for part in item.split(",") if part.strip()]
    unknown = sorted(set(states) - set(STATE_STATUSES))
    if unknown:
        raise FieldError(
            "state",
            f"unknown state {', '.join(unknown)}; use running, paused or killed",
            location="query",
        )
    return states


#: What the list shows of a sandbox: loaded as plain columns, not ORM objects (a page of 100
#: hydrates several times faster this way; ``bench/bench_org_list.py``).
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
    """A row of :data:`LISTED_COLUMNS`."""

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


@dataclass(frozen=True)
class OrgSandbox:
    row: Listed
    state: str
    usage: Usage
    #: When metering settled the sandbox, or when it was destroyed if not settled yet.
    killed_at: datetime | None


class OrgSandboxes:
    def __init__(
        self,
        db: Database,
        tenancy: TenancyService,
        prices: Prices,
        clock: Callable[[], datetime],
    ) -> None:
        self._db = db
        self._tenancy = tenancy
        self._prices = prices
        self._clock = clock

    async def list(
        self,
        principal: Principal,
        slug: str,
        *,
        states: list[str],
        project_id: str | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[OrgSandbox], str | None]:
        org_id = await self._tenancy.own_org_id(principal, slug)
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
        if not principal.is_admin:
            query = query.where(SandboxRow.member_id == principal.member_id)
        if principal.project_id is not None:
            query = query.where(SandboxRow.project_id == principal.project_id)
        if states:
            query = query.where(
                SandboxRow.status.in_([s for state in states for s in STATE_STATUSES[state]])
            )
        if project_id is not None:
            query = query.where(SandboxRow.project_id == project_id)
        if cursor is not None:
            created, row_id = repo.decode_cursor(cursor)
            query = query.where(
                or_(
                    SandboxRow.created_at < created,
                    and_(SandboxRow.created_at == created, SandboxRow.id < row_id),
                )
            )
        query = query.order_by(SandboxRow.created_at.desc(), SandboxRow.id.desc()).limit(limit + 1)
        async with self._db.session() as session:
            found = cast(list[Listed], list((await session.execute(query)).all()))
        next_cursor = None
        if len(found) > limit:
            found = found[:limit]
            next_cursor = repo.encode_cursor(found[-1].created_at, found[-1].id)
        now = self._clock()
        items = []
        for row in found:
            state = state_of(row.status)
            items.append(
                OrgSandbox(
                    row=row,
                    state=state,
                    usage=usage(row, now, self._prices),
                    killed_at=(row.killed_at or row.destroyed_at) if state == "killed" else None,
                )
            )
        return items, next_cursor

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

from sandcastle.domain.metering import Prices, Usage, usage
from sandcastle.domain.sandbox import SandboxStatus
from sandcastle.errors import FieldError
from sandcastle.services.auth import Principal
from sandcastle.services.tenancy import TenancyService
from sandcastle.store.org_listing import Listed, OrgSandboxListing

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
        listing: OrgSandboxListing,
        tenancy: TenancyService,
        prices: Prices,
        clock: Callable[[], datetime],
    ) -> None:
        self._listing = listing
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
        found, next_cursor = await self._listing.page(
            org_id,
            only_member=not principal.is_admin,
            member_id=principal.member_id,
            project_scope=principal.project_id,
            statuses=[s for state in states for s in STATE_STATUSES[state]],
            project_id=project_id,
            cursor=cursor,
            limit=limit,
        )
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

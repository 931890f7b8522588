"""``GET /api/v1/org/{org}/sandboxes`` (``org-sandboxes-list.txt``): an org's sandboxes with
their state, running time and credits.

Owners and admins see every sandbox of the org, members the ones they created (a key scoped to a
project sees that project's only). ``state`` maps the sandbox statuses: ``running`` ← running,
creating; ``paused`` ← paused; ``killed`` ← destroyed, error.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from sandcastle.api.deps import PrincipalDep, ServicesDep
from sandcastle.api.schemas import rfc3339
from sandcastle.services.org_sandboxes import OrgSandbox, parse_states

router = APIRouter(prefix="/api/v1/org", tags=["org sandboxes"])

#: ``build_id`` of sandboxes recorded before build ids were (a uuid is required).
UNKNOWN_BUILD = "00000000-0000-0000-0000-000000000000"


class SandboxListItem(BaseModel):
    """Individual sandbox record for list views."""

    id: str = Field(description="The sandbox's uuid.")
    provider: str = Field(description="The runtime backend, e.g. bwrap.")
    provider_sandbox_id: str = Field(description="The backend's id: the sb_… of /v1/sandboxes.")
    build_id: str
    build_ref: str | None = Field(description="The template the build is of.")
    created_at: str
    last_started_at: str | None
    stopped_at: str | None
    killed_at: str | None
    expires_at: str | None
    last_credit_deduction_at: str | None
    total_runtime_seconds: int
    state: Literal["running", "paused", "killed"]
    pause_reason: Literal["timeout", "user", "insufficient_credits", "member_limit_exceeded"] | None
    sandbox_kind: Literal["runtime", "task", "evaluation", "world"]
    project_id: str | None
    project_key: str | None
    project_name: str | None
    workspace_id: str | None
    workspace_key: str | None
    billed_credits: int = 0
    running_credits: int = 0
    estimated_total_credits: int = 0


class SandboxListResponse(BaseModel):
    """Paginated sandbox list."""

    items: list[SandboxListItem]
    next_cursor: str | None


def item_out(item: OrgSandbox) -> dict[str, Any]:
    row, used = item.row, item.usage
    live = item.state != "killed"
    return {
        "id": row.uuid,
        "provider": row.runtime,
        "provider_sandbox_id": row.id,
        "build_id": row.build_id or UNKNOWN_BUILD,
        "build_ref": row.template,
        "created_at": rfc3339(row.created_at),
        "last_started_at": rfc3339(row.last_started_at or row.started_at),
        "stopped_at": rfc3339(row.stopped_at or item.killed_at),
        "killed_at": rfc3339(item.killed_at),
        "expires_at": rfc3339(row.timeout_at) if live else None,
        "last_credit_deduction_at": rfc3339(row.last_credit_deduction_at),
        "total_runtime_seconds": used.total_runtime_seconds,
        "state": item.state,
        "pause_reason": row.pause_reason if item.state == "paused" else None,
        "sandbox_kind": row.sandbox_kind,
        "project_id": row.project_id,
        "project_key": row.project_key,
        "project_name": row.project_name,
        "workspace_id": row.workspace_id,
        "workspace_key": row.workspace_key,
        "billed_credits": used.billed_credits,
        "running_credits": used.running_credits,
        "estimated_total_credits": used.estimated_total_credits,
    }


@router.get("/{org}/sandboxes", response_model=SandboxListResponse, response_class=JSONResponse)
async def list_org_sandboxes(
    org: Annotated[str, Path(description="Organization slug")],
    principal: PrincipalDep,
    services: ServicesDep,
    state: Annotated[
        list[str],
        Query(description="Filter by sandbox state (repeatable or comma-separated)."),
    ] = [],  # noqa: B006 - FastAPI copies query defaults
    project_id: Annotated[uuid.UUID | None, Query(description="Filter by project ID")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query()] = None,
) -> JSONResponse:
    """List sandboxes for the current user within an organization, newest first."""
    items, next_cursor = await services.org_sandboxes.list(
        principal,
        org,
        states=parse_states(state),
        project_id=None if project_id is None else str(project_id),
        limit=limit,
        cursor=cursor,
    )
    # Built to the model's shape by ``item_out`` (the tests check every field), so it is sent as
    # is rather than validated again field by field.
    return JSONResponse({"items": [item_out(i) for i in items], "next_cursor": next_cursor})

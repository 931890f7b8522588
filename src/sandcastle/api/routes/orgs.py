"""``/v1/orgs``: orgs, their projects, workspaces, members, API keys, credits and limits.

An org the key does not belong to is a 404 on every route here (operators may also reach any
org's ``limits`` and ``credits``). Who may do what is in ``docs/TENANCY.md``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from sandcastle.api.deps import PrincipalDep, ServicesDep
from sandcastle.api.org_schemas import (
    CreditsOut,
    ItemsOut,
    KeyCreateBody,
    KeyOut,
    LimitsBody,
    MemberCreateBody,
    MemberOut,
    MemberUpdateBody,
    NewKeyOut,
    OrgCreateBody,
    OrgCreatedOut,
    OrgListOut,
    OrgOut,
    ProjectCreateBody,
    ProjectOut,
    TopUpBody,
    WorkspaceCreateBody,
    WorkspaceOut,
    credits_out,
    key_out,
    member_out,
    new_key_out,
    org_out,
    project_out,
    workspace_out,
)

router = APIRouter(prefix="/v1/orgs", tags=["orgs"])

# --- orgs -------------------------------------------------------------------------------------


@router.get("", response_model=OrgListOut)
async def list_orgs(principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    """The org the key acts in (a key belongs to one member of one org)."""
    return {"items": [org_out(o) for o in await services.tenancy.list_orgs(principal)]}


@router.post("", status_code=201, response_model=OrgCreatedOut)
async def create_org(
    body: OrgCreateBody, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Create an org owned by the caller's user, with a ``default`` project; the answer holds
    a key for the new org (shown once). Operators only, unless the server allows everyone
    (``SANDCASTLE_ALLOW_ORG_CREATE``)."""
    org, key = await services.tenancy.create_org(principal, body.slug, body.name)
    return {"org": org_out(org), "key": new_key_out(key)}


@router.get("/{org}", response_model=OrgOut)
async def get_org(org: str, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    """The org, its credit balance and its effective limits."""
    return org_out(await services.tenancy.get_org(principal, org))


@router.patch("/{org}/limits", response_model=OrgOut)
async def set_limits(
    org: str, body: LimitsBody, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Override the org's quotas (operators only); they apply at once: sandboxes of members
    now past the member limit are paused (``member_limit_exceeded``)."""
    updated = await services.tenancy.set_limits(principal, org, body.model_dump(exclude_unset=True))
    await services.accounting.enforce()
    return org_out(updated)


# --- projects and workspaces ------------------------------------------------------------------


@router.get("/{org}/projects", response_model=ItemsOut[ProjectOut])
async def list_projects(org: str, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    """The org's projects, oldest first."""
    return {"items": [project_out(p) for p in await services.tenancy.list_projects(principal, org)]}


@router.post("/{org}/projects", status_code=201, response_model=ProjectOut)
async def create_project(
    org: str, body: ProjectCreateBody, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Create a project (owners and admins); its ``key`` is unique in the org."""
    return project_out(await services.tenancy.create_project(principal, org, body.key, body.name))


@router.get("/{org}/projects/{project_id}", response_model=ProjectOut)
async def get_project(
    org: str, project_id: str, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """One project."""
    return project_out(await services.tenancy.get_project(principal, org, project_id))


@router.get("/{org}/workspaces", response_model=ItemsOut[WorkspaceOut])
async def list_workspaces(
    org: str,
    principal: PrincipalDep,
    services: ServicesDep,
    project_id: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    """The org's workspaces (of one project with ``project_id``), oldest first."""
    found = await services.tenancy.list_workspaces(principal, org, project_id)
    return {"items": [workspace_out(w) for w in found]}


@router.post("/{org}/workspaces", status_code=201, response_model=WorkspaceOut)
async def create_workspace(
    org: str, body: WorkspaceCreateBody, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Create a workspace in a project (owners and admins); its ``key`` is unique in the org."""
    created = await services.tenancy.create_workspace(
        principal, org, body.key, body.name, body.project_id
    )
    return workspace_out(created)


@router.get("/{org}/workspaces/{workspace_id}", response_model=WorkspaceOut)
async def get_workspace(
    org: str, workspace_id: str, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """One workspace."""
    return workspace_out(await services.tenancy.get_workspace(principal, org, workspace_id))


# --- members ----------------------------------------------------------------------------------


@router.get("/{org}/members", response_model=ItemsOut[MemberOut])
async def list_members(org: str, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    """The org's members, in the order they joined."""
    return {"items": [member_out(m) for m in await services.members.list_members(principal, org)]}


@router.post("/{org}/members", status_code=201, response_model=MemberOut)
async def add_member(
    org: str, body: MemberCreateBody, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Add the user with ``email`` (created if new) to the org (owners and admins; only owners
    add owners). ``member_limit_exceeded_error`` when the org is full."""
    member = await services.members.add_member(principal, org, body.email, body.name, body.role)
    return member_out(member)


@router.patch("/{org}/members/{member_id}", response_model=MemberOut)
async def update_member(
    org: str,
    member_id: str,
    body: MemberUpdateBody,
    principal: PrincipalDep,
    services: ServicesDep,
) -> dict[str, Any]:
    """Change a member's role; the member's keys act with the new role at once."""
    return member_out(await services.members.update_member(principal, org, member_id, body.role))


@router.delete("/{org}/members/{member_id}", status_code=204)
async def remove_member(
    org: str, member_id: str, principal: PrincipalDep, services: ServicesDep
) -> Response:
    """Remove a member and revoke their keys; an org keeps at least one owner."""
    await services.members.remove_member(principal, org, member_id)
    return Response(status_code=204)


# --- keys -------------------------------------------------------------------------------------


@router.get("/{org}/keys", response_model=ItemsOut[KeyOut])
async def list_keys(org: str, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    """Every key of the org for owners and admins, the caller's own for members. Keys
    themselves are never shown again, only their ``prefix``."""
    return {"items": [key_out(k) for k in await services.members.list_keys(principal, org)]}


@router.post("/{org}/keys", status_code=201, response_model=NewKeyOut)
async def create_key(
    org: str, body: KeyCreateBody, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Make a key; the answer is the only time the key itself is shown."""
    new = await services.members.create_key(
        principal, org, body.name, member_id=body.member_id, project_id=body.project_id
    )
    return new_key_out(new)


@router.delete("/{org}/keys/{key_id}", status_code=204)
async def revoke_key(
    org: str, key_id: str, principal: PrincipalDep, services: ServicesDep
) -> Response:
    """Revoke a key at once: its next request is a 401."""
    await services.members.revoke_key(principal, org, key_id)
    return Response(status_code=204)


# --- credits ----------------------------------------------------------------------------------


@router.get("/{org}/credits", response_model=CreditsOut)
async def get_credits(
    org: str,
    principal: PrincipalDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """The org's balance and its latest ledger entries (top-ups and metered usage)."""
    return credits_out(await services.accounting.statement(principal, org, limit=limit))


@router.post("/{org}/credits", response_model=CreditsOut)
async def top_up(
    org: str, body: TopUpBody, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Add credits (owners and admins, or an operator). Sandboxes paused for
    ``insufficient_credits`` can then be resumed."""
    return credits_out(await services.accounting.top_up(principal, org, body.amount))

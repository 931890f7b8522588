"""``/v1/orgs``: orgs, their projects, workspaces, members, API keys, credits and limits.

An org the key does not belong to is a 404 on every route here (operators may also reach any
org's ``limits`` and ``credits``). Who may do what is in ``docs/TENANCY.md``.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from sandcastle.api.deps import PrincipalDep, ServicesDep
from sandcastle.api.schemas import rfc3339
from sandcastle.services.accounting import CreditStatement
from sandcastle.services.tenancy import (
    ApiKey,
    Member,
    NewKey,
    Org,
    Project,
    Workspace,
)

router = APIRouter(prefix="/v1/orgs", tags=["orgs"])

RoleName = Literal["owner", "admin", "member"]
T = TypeVar("T")
SlugField = Field(min_length=1, max_length=64, description="Lowercase letters, digits, hyphens.")


# --- bodies -----------------------------------------------------------------------------------


class OrgCreateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slug: str = SlugField
    name: str | None = Field(default=None, min_length=1, max_length=200)


class LimitsBody(BaseModel):
    """Only the fields sent change; ``null`` resets one to the server's default."""

    model_config = ConfigDict(extra="forbid")

    max_concurrent_sandboxes: int | None = None
    max_members: int | None = None
    max_vcpus: int | None = None
    max_memory_mb: int | None = None
    rate_limit_per_s: float | None = Field(default=None, description="0: no limit.")
    rate_limit_burst: int | None = None


class ProjectCreateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = SlugField
    name: str | None = Field(default=None, min_length=1, max_length=200)


class WorkspaceCreateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = SlugField
    name: str | None = Field(default=None, min_length=1, max_length=200)
    project_id: str | None = Field(
        default=None, description="Default: the key's project, else the org's first."
    )


class MemberCreateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=3, max_length=320)
    name: str | None = Field(default=None, min_length=1, max_length=200)
    role: RoleName = "member"


class MemberUpdateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: RoleName


class KeyCreateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="key", min_length=1, max_length=200)
    member_id: str | None = Field(
        default=None, description="Owners and admins may make keys for other members."
    )
    project_id: str | None = Field(default=None, description="Scope the key to one project.")


class TopUpBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: int = Field(ge=1, description="Credits to add.")


# --- responses --------------------------------------------------------------------------------


class LimitsOut(BaseModel):
    max_concurrent_sandboxes: int
    max_members: int
    max_vcpus: int
    max_memory_mb: int
    rate_limit_per_s: float
    rate_limit_burst: int


class OrgOut(BaseModel):
    id: str
    slug: str
    name: str
    created_at: str
    role: RoleName | None = Field(description="The caller's role (null for an operator).")
    credit_balance: int
    limits: LimitsOut


class OrgListOut(BaseModel):
    items: list[OrgOut]


class ProjectOut(BaseModel):
    id: str
    key: str
    name: str
    created_at: str


class WorkspaceOut(BaseModel):
    id: str
    key: str
    name: str
    project_id: str
    created_at: str


class MemberOut(BaseModel):
    id: str
    user_id: str
    email: str
    name: str
    role: RoleName
    created_at: str
    over_limit: bool = Field(description="Past the org's member limit: may not run sandboxes.")


class KeyOut(BaseModel):
    id: str
    name: str
    prefix: str = Field(description="The key's first characters, to tell keys apart.")
    member_id: str | None
    project_id: str | None
    created_at: str
    revoked_at: str | None


class NewKeyOut(KeyOut):
    key: str = Field(description="The key itself: shown this once, stored only as a hash.")


class OrgCreatedOut(BaseModel):
    org: OrgOut
    key: NewKeyOut = Field(description="A key of the new org's owner (you).")


class TransactionOut(BaseModel):
    id: str
    kind: Literal["topup", "usage"]
    amount: int
    balance_after: int
    created_at: str


class CreditsOut(BaseModel):
    balance: int
    transactions: list[TransactionOut]


class ItemsOut(BaseModel, Generic[T]):
    items: list[T]


def org_out(org: Org) -> dict[str, Any]:
    limits = org.limits
    return {
        "id": org.id,
        "slug": org.slug,
        "name": org.name,
        "created_at": rfc3339(org.created_at),
        "role": org.role,
        "credit_balance": org.credit_balance,
        "limits": {
            "max_concurrent_sandboxes": limits.max_concurrent_sandboxes,
            "max_members": limits.max_members,
            "max_vcpus": limits.max_vcpus,
            "max_memory_mb": limits.max_memory_mb,
            "rate_limit_per_s": limits.rate_limit_per_s,
            "rate_limit_burst": limits.rate_limit_burst,
        },
    }


def project_out(p: Project) -> dict[str, Any]:
    return {"id": p.id, "key": p.key, "name": p.name, "created_at": rfc3339(p.created_at)}


def workspace_out(w: Workspace) -> dict[str, Any]:
    return {
        "id": w.id,
        "key": w.key,
        "name": w.name,
        "project_id": w.project_id,
        "created_at": rfc3339(w.created_at),
    }


def member_out(m: Member) -> dict[str, Any]:
    return {
        "id": m.id,
        "user_id": m.user_id,
        "email": m.email,
        "name": m.name,
        "role": m.role,
        "created_at": rfc3339(m.created_at),
        "over_limit": m.over_limit,
    }


def key_out(k: ApiKey) -> dict[str, Any]:
    return {
        "id": k.id,
        "name": k.name,
        "prefix": k.prefix,
        "member_id": k.member_id,
        "project_id": k.project_id,
        "created_at": rfc3339(k.created_at),
        "revoked_at": rfc3339(k.revoked_at),
    }


def new_key_out(new: NewKey) -> dict[str, Any]:
    return {**key_out(new.key), "key": new.secret}


def credits_out(statement: CreditStatement) -> dict[str, Any]:
    return {
        "balance": statement.balance,
        "transactions": [
            {
                "id": t.id,
                "kind": t.kind,
                "amount": t.amount,
                "balance_after": t.balance_after,
                "created_at": rfc3339(t.created_at),
            }
            for t in statement.transactions
        ],
    }


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

"""Request and response models of ``/v1/orgs`` (``routes/orgs.py``), and the conversions of
the tenancy and accounting services' views into them."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field

from sandcastle.api.request_body import Integer, RequestBody
from sandcastle.api.schemas import rfc3339
from sandcastle.domain.tenancy import ApiKey, Member, NewKey, Org, Project, Workspace
from sandcastle.services.accounting import CreditStatement

RoleName = Literal["owner", "admin", "member"]
T = TypeVar("T")
SlugField = Field(min_length=1, max_length=64, description="Lowercase letters, digits, hyphens.")


# --- bodies -----------------------------------------------------------------------------------


class OrgCreateBody(RequestBody):
    slug: str = SlugField
    name: str | None = Field(default=None, min_length=1, max_length=200)


class LimitsBody(RequestBody):
    """Only the fields sent change; ``null`` resets one to the server's default."""

    max_concurrent_sandboxes: Integer | None = None
    max_members: Integer | None = None
    max_vcpus: Integer | None = None
    max_memory_mb: Integer | None = None
    rate_limit_per_s: float | None = Field(default=None, description="0: no limit.")
    rate_limit_burst: Integer | None = None


class ProjectCreateBody(RequestBody):
    key: str = SlugField
    name: str | None = Field(default=None, min_length=1, max_length=200)


class WorkspaceCreateBody(RequestBody):
    key: str = SlugField
    name: str | None = Field(default=None, min_length=1, max_length=200)
    project_id: str | None = Field(
        default=None, description="Default: the key's project, else the org's first."
    )


class MemberCreateBody(RequestBody):
    email: str = Field(min_length=3, max_length=320)
    name: str | None = Field(default=None, min_length=1, max_length=200)
    role: RoleName = "member"


class MemberUpdateBody(RequestBody):
    role: RoleName


class KeyCreateBody(RequestBody):
    name: str = Field(default="key", min_length=1, max_length=200)
    member_id: str | None = Field(
        default=None, description="Owners and admins may make keys for other members."
    )
    project_id: str | None = Field(default=None, description="Scope the key to one project.")


class TopUpBody(RequestBody):
    amount: Integer = Field(ge=1, description="Credits to add.")


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

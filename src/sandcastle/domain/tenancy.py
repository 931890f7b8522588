"""What the tenancy services hand out: orgs with their effective limits, projects, workspaces,
members, keys, and where an admitted create goes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class OrgLimits:
    """An org's effective quotas: its overrides, or the server's defaults."""

    max_concurrent_sandboxes: int
    max_members: int
    max_vcpus: int
    max_memory_mb: int
    rate_limit_per_s: float
    rate_limit_burst: int


@dataclass(frozen=True)
class Org:
    id: str
    slug: str
    name: str
    created_at: datetime
    credit_balance: int
    limits: OrgLimits
    #: The caller's role in the org (None for an operator looking at another org).
    role: str | None


@dataclass(frozen=True)
class Project:
    id: str
    key: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class Workspace:
    id: str
    key: str
    name: str
    project_id: str
    created_at: datetime


@dataclass(frozen=True)
class Member:
    id: str
    user_id: str
    email: str
    name: str
    role: str
    created_at: datetime
    #: Past the org's member limit: cannot create or resume, their sandboxes are paused.
    over_limit: bool


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    member_id: str | None
    project_id: str | None
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class NewKey:
    """A key just made: ``secret`` is shown this once and stored only as a hash."""

    key: ApiKey
    secret: str


@dataclass(frozen=True)
class Placement:
    """Where an admitted create goes, and the org limits it must respect."""

    project_id: str
    workspace_id: str | None
    #: None when the create is not bound by an org's limits.
    limits: OrgLimits | None

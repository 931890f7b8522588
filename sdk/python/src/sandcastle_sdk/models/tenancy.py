"""Orgs, their projects, workspaces, members, keys and credits."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sandcastle_sdk.models.base import Model

Role = Literal["owner", "admin", "member"]


class Limits(Model):
    max_concurrent_sandboxes: int | None = None
    max_members: int | None = None
    max_vcpus: int | None = None
    max_memory_mb: int | None = None
    rate_limit_per_s: float | None = None
    rate_limit_burst: int | None = None


class Org(Model):
    id: str
    slug: str
    name: str
    role: Role | None = None
    credit_balance: int
    limits: Limits
    created_at: datetime


class Project(Model):
    id: str
    key: str
    name: str
    created_at: datetime


class Workspace(Model):
    id: str
    key: str
    name: str
    project_id: str | None = None
    created_at: datetime


class Member(Model):
    id: str
    user_id: str
    email: str
    name: str
    role: Role
    over_limit: bool
    created_at: datetime


class Key(Model):
    id: str
    name: str
    prefix: str
    member_id: str | None = None
    project_id: str | None = None
    created_at: datetime
    revoked_at: datetime | None = None


class NewKey(Key):
    """A key just made: ``key`` is its secret, shown this once."""

    key: str


class OrgCreated(Model):
    org: Org
    key: NewKey


class Transaction(Model):
    id: str
    kind: Literal["topup", "usage"]
    amount: int
    balance_after: int
    created_at: datetime


class Credits(Model):
    balance: int
    transactions: list[Transaction]

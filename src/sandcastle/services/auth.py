"""API keys: minting and hashing them, and the principal a key stands for.

A key belongs to a member of one org (and may be scoped to one of its projects); the caller's
role is the member's, read again after any change to orgs, members or keys, so a demotion or
removal takes effect at once (``principals.py`` resolves a presented key).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from sandcastle.domain.roles import Role
from sandcastle.store.models import ApiKeyRow

KEY_PREFIX = "sc_"
#: The org made at first start; its owners are the server's operators.
OPERATOR_ORG_SLUG = "default"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's org, its project (if scoped), its member and role."""

    key_id: str
    org_id: str
    project_id: str | None
    role: str
    member_id: str | None = None
    user_id: str | None = None
    #: An owner of the org made at first start: may create orgs and set any org's limits.
    operator: bool = False
    #: The org's overrides of the per-key rate limit (null: the server's).
    rate_limit_per_s: float | None = None
    rate_limit_burst: int | None = None
    #: The slug of ``org_id`` (empty when unknown), so org routes need no lookup for the own org.
    org_slug: str = ""

    @property
    def is_admin(self) -> bool:
        """Owners and admins manage the org; members only their own keys and sandboxes."""
        return self.role in (Role.OWNER, Role.ADMIN)

    @property
    def sandbox_member(self) -> str | None:
        """The member whose sandboxes (and their snapshots) alone this caller may see and use;
        None: every sandbox of the org (owners and admins). A member's are those it created.
        A key with no member (there are none since tenancy) may use none."""
        return None if self.is_admin else (self.member_id or "")


def hash_key(key: str) -> str:
    # Keys carry 256 bits of randomness, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def mint_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_key_row(
    *,
    org_id: str,
    project_id: str | None,
    name: str,
    role: str,
    now: datetime,
    member_id: str | None = None,
) -> tuple[str, ApiKeyRow]:
    """A fresh key and the row that stores only its hash; the key is shown once and dropped."""
    key = mint_key()
    row = ApiKeyRow(
        id=str(uuid.uuid4()),
        org_id=org_id,
        project_id=project_id,
        name=name,
        prefix=key[:10],
        key_hash=hash_key(key),
        role=role,
        created_at=now,
        revoked_at=None,
        member_id=member_id,
    )
    return key, row

"""API keys: minting, hashing, and resolving a presented key to a principal."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from sandcastle.errors import AuthenticationError
from sandcastle.store.db import Database
from sandcastle.store.models import ApiKeyRow

KEY_PREFIX = "sc_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's org, its project (if scoped) and its role."""

    key_id: str
    org_id: str
    project_id: str | None
    role: str


def hash_key(key: str) -> str:
    # Keys carry 256 bits of randomness, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def mint_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_key_row(
    *, org_id: str, project_id: str | None, name: str, role: str, now: datetime
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
    )
    return key, row


async def authenticate(db: Database, presented: str | None) -> Principal:
    if not presented:
        raise AuthenticationError(
            "Authentication failed: missing API key (Authorization: Bearer <key>)"
        )
    async with db.session() as session:
        row = await session.scalar(
            select(ApiKeyRow).where(ApiKeyRow.key_hash == hash_key(presented))
        )
    if row is None or row.revoked_at is not None:
        raise AuthenticationError("Authentication failed: unknown or revoked API key")
    return Principal(key_id=row.id, org_id=row.org_id, project_id=row.project_id, role=row.role)

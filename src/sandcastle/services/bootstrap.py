"""First start: the default org and project, its owner, and their key written once to disk."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sandcastle.domain.roles import Role
from sandcastle.services.auth import OPERATOR_ORG_SLUG, new_key_row
from sandcastle.store.models import MemberRow, OrgRow, ProjectRow, UserRow
from sandcastle.store.tenancy import TenancyStore

DEFAULT_SLUG = OPERATOR_ORG_SLUG
#: The user who owns the default org: the server's operator.
ADMIN_EMAIL = "admin@localhost"


async def ensure_defaults(
    store: TenancyStore, admin_key_path: Path, *, initial_credits: int = 1_000_000_000
) -> str | None:
    """Create org and project ``default``, a user who owns the org, and that owner's key, if
    there is no org yet.

    Returns the new key (to print once) or ``None`` when the server was set up before.
    """
    now = datetime.now(UTC)
    async with store.transaction() as tx:
        if await tx.any_org():
            return None
        org = OrgRow(
            id=str(uuid.uuid4()),
            slug=DEFAULT_SLUG,
            name="Default",
            created_at=now,
            credit_balance=initial_credits,
        )
        project = ProjectRow(
            id=str(uuid.uuid4()), org_id=org.id, key=DEFAULT_SLUG, name="Default", created_at=now
        )
        user = UserRow(id=str(uuid.uuid4()), email=ADMIN_EMAIL, name="admin", created_at=now)
        member = MemberRow(
            id=str(uuid.uuid4()), org_id=org.id, user_id=user.id, role=Role.OWNER, created_at=now
        )
        # Not scoped to a project: the owner's key works across the org's projects.
        key, key_row = new_key_row(
            org_id=org.id,
            project_id=None,
            name="admin",
            role=Role.OWNER,
            now=now,
            member_id=member.id,
        )
        tx.add(org, project, user)
        await tx.flush()
        tx.add(member)
        await tx.flush()
        tx.add(key_row)
    admin_key_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(admin_key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    os.chmod(admin_key_path, 0o600)
    return key

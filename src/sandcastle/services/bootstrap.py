"""First start: the default org and project, and an admin key written once to disk."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from sandcastle.services.auth import new_key_row
from sandcastle.store.db import Database
from sandcastle.store.models import OrgRow, ProjectRow

DEFAULT_SLUG = "default"


async def ensure_defaults(db: Database, admin_key_path: Path) -> str | None:
    """Create org and project ``default`` and an admin key if there is no org yet.

    Returns the new key (to print once) or ``None`` when the server was set up before.
    """
    now = datetime.now(UTC)
    async with db.session() as session:
        if await session.scalar(select(OrgRow.id).limit(1)) is not None:
            return None
        org = OrgRow(id=str(uuid.uuid4()), slug=DEFAULT_SLUG, name="Default", created_at=now)
        project = ProjectRow(
            id=str(uuid.uuid4()), org_id=org.id, key=DEFAULT_SLUG, name="Default", created_at=now
        )
        key, key_row = new_key_row(
            org_id=org.id, project_id=project.id, name="admin", role="owner", now=now
        )
        session.add_all([org, project])
        await session.flush()
        session.add(key_row)
    admin_key_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(admin_key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    os.chmod(admin_key_path, 0o600)
    return key

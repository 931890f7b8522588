"""Conversions between rows and domain objects, and the queries the services share."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import Result, Select, String, and_, cast, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from sandcastle.domain.sandbox import (
    Sandbox,
    SandboxConfig,
    SandboxStatus,
    TimeoutAction,
    WarmPoolCheckout,
)
from sandcastle.domain.snapshot import Snapshot, SnapshotContext
from sandcastle.errors import InvalidRequestError, NotFoundError
from sandcastle.store.models import SandboxRow, SnapshotRow


class _Keyed(Protocol):
    """A row paged newest first by ``(created_at, id)``."""

    @property
    def created_at(self) -> datetime: ...
    @property
    def id(self) -> str: ...


#: A query of such rows (whole rows, or some of their columns), and one of its rows.
Paged = TypeVar("Paged", bound=Select[Any])
Row = TypeVar("Row", bound=_Keyed)


def rowcount(result: Result[Any]) -> int:
    """Rows an ``UPDATE`` or ``DELETE`` matched."""
    return int(getattr(result, "rowcount", 0))


def to_sandbox(row: SandboxRow) -> Sandbox:
    return Sandbox(
        id=row.id,
        org_id=row.org_id or "",
        project_id=row.project_id or "",
        status=SandboxStatus(row.status),
        config=SandboxConfig(vcpus=row.vcpus, memory_mb=row.memory_mb, disk_mb=row.disk_mb),
        template=row.template,
        created_at=row.created_at,
        metadata=dict(row.metadata_json or {}),
        started_at=row.started_at,
        timeout_ms=row.timeout_ms,
        timeout_at=row.timeout_at,
        timeout_action=TimeoutAction(row.timeout_action),
        cwd=row.cwd,
        status_reason=row.status_reason,
        destroyed_at=row.destroyed_at,
        paused_at=row.paused_at,
        internet=row.internet,
        traffic_access_token=row.traffic_access_token,
        envd_access_token=row.envd_access_token,
        env=dict(row.env_json or {}),
        warm_pool_checkout=(
            None
            if row.warm_pool_hit is None or row.warm_pool_id is None
            else WarmPoolCheckout(hit=row.warm_pool_hit, pool_id=row.warm_pool_id)
        ),
        oom_kills=row.oom_kills_seen,
        snapshot_id=row.snapshot_id,
        auto_resume=row.auto_resume,
        source_snapshot_id=row.source_snapshot_id,
        runtime=row.runtime,
    )


def to_snapshot(row: SnapshotRow) -> Snapshot:
    return Snapshot(
        id=row.id,
        org_id=row.org_id,
        project_id=row.project_id,
        sandbox_id=row.sandbox_id,
        template=row.template,
        build_id=row.build_id,
        runtime=row.runtime,
        config=SandboxConfig(vcpus=row.vcpus, memory_mb=row.memory_mb, disk_mb=row.disk_mb),
        cwd=row.cwd,
        internet=row.internet,
        size_bytes=row.size_bytes,
        created_at=row.created_at,
        contexts=tuple(
            SnapshotContext(id=str(c["id"]), language=str(c["language"]), cwd=c.get("cwd"))
            for c in row.contexts or []
        ),
        metadata=dict(row.metadata_json or {}),
    )


def snapshot_row(snapshot: Snapshot) -> SnapshotRow:
    return SnapshotRow(
        id=snapshot.id,
        org_id=snapshot.org_id,
        project_id=snapshot.project_id,
        sandbox_id=snapshot.sandbox_id,
        template=snapshot.template,
        build_id=snapshot.build_id,
        runtime=snapshot.runtime,
        vcpus=snapshot.config.vcpus,
        memory_mb=snapshot.config.memory_mb,
        disk_mb=snapshot.config.disk_mb,
        cwd=snapshot.cwd,
        internet=snapshot.internet,
        size_bytes=snapshot.size_bytes,
        contexts=[{"id": c.id, "language": c.language, "cwd": c.cwd} for c in snapshot.contexts],
        metadata_json=dict(snapshot.metadata),
        created_at=snapshot.created_at,
    )


async def get_sandbox_row(
    session: AsyncSession, org_id: str, sandbox_id: str, *, member_id: str | None = None
) -> SandboxRow:
    """The row, if it belongs to ``org_id`` (and, given ``member_id``, to that member);
    another tenant's sandbox, or another member's for a caller limited to its own, is simply
    not found."""
    row = await session.get(SandboxRow, sandbox_id)
    if (
        row is None
        or row.org_id != org_id
        or (member_id is not None and row.member_id != member_id)
    ):
        raise NotFoundError(f"sandbox {sandbox_id} not found")
    return row


async def get_snapshot_row(
    session: AsyncSession, org_id: str, snapshot_id: str, *, member_id: str | None = None
) -> SnapshotRow:
    """The snapshot, if it belongs to ``org_id`` (and, given ``member_id``, was taken of one of
    that member's sandboxes): a snapshot holds its sandbox's files and memory."""
    row = await session.get(SnapshotRow, snapshot_id)
    if row is None or row.org_id != org_id:
        raise NotFoundError(f"snapshot {snapshot_id} not found")
    if member_id is not None:
        source = await session.get(SandboxRow, row.sandbox_id)
        if source is None or source.member_id != member_id:
            raise NotFoundError(f"snapshot {snapshot_id} not found")
    return row


def snapshots_of(org_id: str, *, member_id: str | None = None) -> Select[SnapshotRow]:
    """An org's snapshots (given ``member_id``: of that member's sandboxes only)."""
    query = select(SnapshotRow).where(SnapshotRow.org_id == org_id)
    if member_id is not None:
        mine = select(SandboxRow.id).where(
            SandboxRow.org_id == org_id, SandboxRow.member_id == member_id
        )
        query = query.where(SnapshotRow.sandbox_id.in_(mine))
    return query


def pack_cursor(*key: str | int) -> str:
    """A page's position, opaque to clients: the sort key of its last row."""
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def unpack_cursor(cursor: str) -> list[Any]:
    """The key :func:`pack_cursor` packed; ValueError for anything this server did not issue."""
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ValueError("not a cursor") from exc
    if not isinstance(key, list):
        raise ValueError("not a cursor")
    return key


def encode_cursor(created_at: datetime, row_id: str) -> str:
    return pack_cursor(created_at.isoformat(), row_id)


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, row_id = unpack_cursor(cursor)
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            raise ValueError("naive timestamp")
        return when, str(row_id)
    except (ValueError, TypeError) as exc:
        raise InvalidRequestError("cursor is not one this server issued") from exc


def newest_first_page(
    query: Paged,
    cursor: str | None,
    limit: int,
    table: type[SandboxRow | SnapshotRow] = SandboxRow,
) -> Paged:
    """Keyset pagination on (created_at, id) descending: stable while rows are inserted.
    Fetches ``limit + 1`` rows: the extra one says there is a next page."""
    if cursor is not None:
        created, row_id = decode_cursor(cursor)
        query = query.where(
            or_(
                table.created_at < created,
                and_(table.created_at == created, table.id < row_id),
            )
        )
    return query.order_by(table.created_at.desc(), table.id.desc()).limit(limit + 1)


def split_page(rows: list[Row], limit: int) -> tuple[list[Row], str | None]:
    """A page fetched by :func:`newest_first_page`: its rows, and the next page's cursor."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].created_at, rows[-1].id)


def sandboxes_of(
    org_id: str,
    *,
    statuses: list[str] | None = None,
    template: str | None = None,
    metadata: dict[str, str] | None = None,
    member_id: str | None = None,
) -> Select[SandboxRow]:
    """An org's sandboxes (given ``member_id``: that member's only), optionally filtered;
    warm-pool entries belong to no org."""
    query = select(SandboxRow).where(SandboxRow.org_id == org_id)
    if member_id is not None:
        query = query.where(SandboxRow.member_id == member_id)
    if statuses:
        query = query.where(SandboxRow.status.in_(statuses))
    if template is not None:
        query = query.where(SandboxRow.template == template)
    for key, value in (metadata or {}).items():
        # Metadata values are free-form JSON; the filter matches string values (and the string
        # form of numbers and booleans), as query strings can only carry strings.
        query = query.where(cast(SandboxRow.metadata_json[key].as_string(), String) == value)
    return query

"""The snapshot records: saved memory and writable layers, owned by an org."""

from __future__ import annotations

from sqlalchemy import func, select

from sandcastle.domain.snapshot import Snapshot
from sandcastle.store import repositories as repo
from sandcastle.store.db import Database
from sandcastle.store.models import SnapshotRow


class SnapshotRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def owned(self, org_id: str, snapshot_id: str, *, member_id: str | None) -> Snapshot:
        """The snapshot if the org (and, given ``member_id``, that member) owns it."""
        async with self._db.session() as session:
            row = await repo.get_snapshot_row(session, org_id, snapshot_id, member_id=member_id)
            return repo.to_snapshot(row)

    async def page(
        self, org_id: str, *, member_id: str | None, cursor: str | None, limit: int
    ) -> tuple[list[Snapshot], str | None]:
        """One page of the org's snapshots, newest first, and the next page's cursor."""
        query = repo.snapshots_of(org_id, member_id=member_id)
        page = repo.newest_first_page(query, cursor, limit, SnapshotRow)
        async with self._db.session() as session:
            rows = list((await session.scalars(page)).all())
        rows, next_cursor = repo.split_page(rows, limit)
        return [repo.to_snapshot(row) for row in rows], next_cursor

    async def usage(self, org_id: str) -> tuple[int, int]:
        """How many snapshots the org keeps, and their bytes."""
        async with self._db.session() as session:
            count, total = (
                await session.execute(
                    select(
                        func.count(SnapshotRow.id),
                        func.coalesce(func.sum(SnapshotRow.size_bytes), 0),
                    ).where(SnapshotRow.org_id == org_id)
                )
            ).one()
        return int(count), int(total)

    async def per_template(self, org_id: str, *, member_id: str | None) -> dict[str, int]:
        """How many snapshots of each template the org (given ``member_id``: of that member's
        sandboxes) keeps."""
        mine = repo.snapshots_of(org_id, member_id=member_id)
        async with self._db.session() as session:
            rows = await session.execute(
                select(SnapshotRow.template, func.count())
                .where(SnapshotRow.id.in_(mine.with_only_columns(SnapshotRow.id)))
                .group_by(SnapshotRow.template)
            )
            return {template: int(count) for template, count in rows}

    async def of_template(self, template: str) -> int:
        """How many snapshots of ``template`` any org keeps."""
        async with self._db.session() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(SnapshotRow)
                .where(SnapshotRow.template == template)
            )
        return int(count or 0)

    async def builds(self) -> set[tuple[str, str]]:
        """(template, build id) of every snapshot any org keeps."""
        async with self._db.session() as session:
            rows = await session.execute(
                select(SnapshotRow.template, SnapshotRow.build_id).distinct()
            )
        return {(template, build) for template, build in rows if build is not None}

    async def insert(self, snapshot: Snapshot) -> None:
        async with self._db.session() as session:
            session.add(repo.snapshot_row(snapshot))

    async def delete(self, snapshot_id: str) -> None:
        async with self._db.session() as session:
            row = await session.get(SnapshotRow, snapshot_id)
            if row is not None:
                await session.delete(row)

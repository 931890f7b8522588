"""The sandbox records: every read and write of ``SandboxRow`` the lifecycle services make.

Status changes are compare-and-set UPDATEs (``move``, ``move_metered``): the row changes only
from the state the caller read, so two writers acting on stale reads (the reconciler racing a
DELETE, a deduction racing a pause) never overwrite each other. A warm-pool entry is a row with
``pool`` set and no org; taking one is a compare-and-set on ``pool IS NOT NULL``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, func, select, update

from sandcastle.domain.sandbox import LIVE_STATUSES, ListFilter, Sandbox, SandboxStatus
from sandcastle.errors import NotFoundError
from sandcastle.store import repositories as repo
from sandcastle.store.db import Database
from sandcastle.store.models import SandboxRow


def _values(statuses: Iterable[SandboxStatus]) -> list[str]:
    return [s.value for s in statuses]


class SandboxRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    # --- reads -----------------------------------------------------------------------------

    async def find(self, sandbox_id: str) -> Sandbox | None:
        """A sandbox by id, whoever owns it (for the server's own loops, never a tenant)."""
        async with self._db.session() as session:
            row = await session.get(SandboxRow, sandbox_id)
            return None if row is None else repo.to_sandbox(row)

    async def row(self, sandbox_id: str) -> SandboxRow:
        """The record itself (detached), for what only it carries: the meter, the build."""
        async with self._db.session() as session:
            row = await session.get(SandboxRow, sandbox_id)
        if row is None:
            raise NotFoundError(f"sandbox {sandbox_id} not found")
        return row

    async def get(self, sandbox_id: str) -> Sandbox:
        return repo.to_sandbox(await self.row(sandbox_id))

    async def owned(self, org_id: str, sandbox_id: str, *, member_id: str | None) -> Sandbox:
        """The sandbox if the org (and, given ``member_id``, that member) owns it; another
        tenant's is simply not found."""
        async with self._db.session() as session:
            row = await repo.get_sandbox_row(session, org_id, sandbox_id, member_id=member_id)
            return repo.to_sandbox(row)

    async def page(
        self,
        org_id: str,
        where: ListFilter,
        *,
        member_id: str | None,
        cursor: str | None,
        limit: int,
    ) -> tuple[list[Sandbox], str | None]:
        """One page of the org's sandboxes, newest first, and the next page's cursor."""
        query = repo.sandboxes_of(
            org_id,
            statuses=where.statuses,
            template=where.template,
            metadata=where.metadata,
            member_id=member_id,
        )
        async with self._db.session() as session:
            rows = list((await session.scalars(repo.newest_first_page(query, cursor, limit))).all())
        rows, next_cursor = repo.split_page(rows, limit)
        return [repo.to_sandbox(row) for row in rows], next_cursor

    async def with_status(self, statuses: Iterable[SandboxStatus]) -> list[Sandbox]:
        async with self._db.session() as session:
            rows = await session.scalars(
                select(SandboxRow).where(SandboxRow.status.in_(_values(statuses)))
            )
            return [repo.to_sandbox(row) for row in rows]

    async def live_among(
        self, sandbox_ids: Sequence[str], live: Iterable[SandboxStatus]
    ) -> set[str]:
        """Which of ``sandbox_ids`` have a record in one of the ``live`` states."""
        async with self._db.session() as session:
            found = await session.scalars(
                select(SandboxRow.id).where(
                    SandboxRow.id.in_(sandbox_ids), SandboxRow.status.in_(_values(live))
                )
            )
            return set(found)

    async def live_of_template(self, template: str) -> int:
        """Live sandboxes of ``template`` (hibernated ones and warm-pool entries included)."""
        async with self._db.session() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(SandboxRow)
                .where(
                    SandboxRow.template == template,
                    SandboxRow.status.in_(_values(LIVE_STATUSES)),
                )
            )
        return int(count or 0)

    async def live_builds(self) -> set[tuple[str, str]]:
        """(template, build id) of every live sandbox (hibernated ones, pool entries too)."""
        async with self._db.session() as session:
            rows = await session.execute(
                select(SandboxRow.template, SandboxRow.build_id)
                .where(SandboxRow.status.in_(_values(LIVE_STATUSES)))
                .distinct()
            )
        return {(template, build) for template, build in rows if build is not None}

    # --- writes ----------------------------------------------------------------------------

    async def insert(self, row: SandboxRow) -> None:
        """Commit a new record (or re-attach one already committed, with its changes)."""
        async with self._db.session() as session:
            session.add(row)

    async def move(
        self,
        sandbox_id: str,
        sources: Sequence[SandboxStatus],
        target: SandboxStatus,
        values: dict[str, Any],
    ) -> tuple[bool, Sandbox]:
        """Set ``target`` (and ``values``) if the status is one of ``sources``: whether it
        moved, and the sandbox as it is now."""
        async with self._db.session() as session:
            changed = await session.execute(
                update(SandboxRow)
                .where(SandboxRow.id == sandbox_id, SandboxRow.status.in_(_values(sources)))
                .values(status=target.value, **values)
            )
            row = await session.get(SandboxRow, sandbox_id, populate_existing=True)
            if row is None:
                raise NotFoundError(f"sandbox {sandbox_id} not found")
            return repo.rowcount(changed) == 1, repo.to_sandbox(row)

    async def move_metered(
        self,
        read: SandboxRow,
        target: SandboxStatus,
        values: dict[str, Any],
    ) -> Sandbox | None:
        """Set ``target`` if neither the status nor the meter changed since ``read``; None if
        they did (the caller reads again and recomputes ``values``)."""
        async with self._db.session() as session:
            changed = await session.execute(
                update(SandboxRow)
                .where(
                    SandboxRow.id == read.id,
                    SandboxRow.status == read.status,
                    SandboxRow.meter_units == read.meter_units,
                    SandboxRow.meter_since.is_not_distinct_from(read.meter_since),
                )
                .values(status=target.value, **values)
            )
            if repo.rowcount(changed) != 1:
                return None
            moved = await session.get(SandboxRow, read.id, populate_existing=True)
            assert moved is not None
            return repo.to_sandbox(moved)

    async def record_oom(self, sandbox_id: str, kills: int) -> None:
        """Raise the OOM-kill count seen to ``kills`` (never lower it)."""
        async with self._db.session() as session:
            await session.execute(
                update(SandboxRow)
                .where(SandboxRow.id == sandbox_id, SandboxRow.oom_kills_seen < kills)
                .values(oom_kills_seen=kills)
            )

    async def clear_image(self, sandbox_id: str, image_id: str) -> None:
        """Forget the memory image ``image_id`` the sandbox was hibernated into."""
        async with self._db.session() as session:
            await session.execute(
                update(SandboxRow)
                .where(SandboxRow.id == sandbox_id, SandboxRow.snapshot_id == image_id)
                .values(snapshot_id=None)
            )

    # --- warm-pool entries -----------------------------------------------------------------

    async def forget_pool_entry(self, sandbox_id: str) -> bool:
        """Delete the record if it is a warm-pool entry nobody took; whether it was one."""
        async with self._db.session() as session:
            gone = await session.execute(
                delete(SandboxRow).where(SandboxRow.id == sandbox_id, SandboxRow.pool.is_not(None))
            )
            return repo.rowcount(gone) == 1

    async def checkout_pool_entry(
        self, template: str, runtime: str, values: dict[str, Any]
    ) -> Sandbox | None:
        """Take the oldest running entry of ``template``'s pool booted on ``runtime``, giving
        it ``values`` (its owner, its deadline); None if there is none to take."""
        async with self._db.session() as session:
            candidate = await session.scalar(
                select(SandboxRow.id)
                .where(
                    SandboxRow.pool == template,
                    SandboxRow.status == SandboxStatus.RUNNING.value,
                    SandboxRow.runtime == runtime,
                )
                .order_by(SandboxRow.created_at)
                .limit(1)
            )
            if candidate is None:
                return None
            taken = await session.execute(
                update(SandboxRow)
                .where(SandboxRow.id == candidate, SandboxRow.pool.is_not(None))
                .values(pool=None, **values)
            )
            if repo.rowcount(taken) != 1:
                return None
            row = await session.get(SandboxRow, candidate, populate_existing=True)
            assert row is not None
            return repo.to_sandbox(row)

    async def count_pool(self, template: str, statuses: Iterable[SandboxStatus]) -> int:
        async with self._db.session() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(SandboxRow)
                .where(SandboxRow.pool == template, SandboxRow.status.in_(_values(statuses)))
            )
        return int(count or 0)

    async def pool_entries_not_on(self, template: str, runtime: str) -> list[str]:
        """Running entries of ``template``'s pool booted on another backend than ``runtime``."""
        async with self._db.session() as session:
            found = await session.scalars(
                select(SandboxRow.id).where(
                    SandboxRow.pool == template,
                    SandboxRow.status == SandboxStatus.RUNNING.value,
                    SandboxRow.runtime != runtime,
                )
            )
            return list(found)

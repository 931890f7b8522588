"""The code-run records and their artifacts: the run queue is this table, not memory.

Every status change is a conditional UPDATE on the status the caller expects, so two writers
(a cancel and the dispatcher, a sandbox's end and a run's end) never both win.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update

from sandcastle.domain.execution import output_size
from sandcastle.domain.runs import TERMINAL_STATUSES, Artifact, RunStatus
from sandcastle.domain.sandbox import SandboxStatus
from sandcastle.errors import FieldError
from sandcastle.store import repositories as repo
from sandcastle.store.db import Database
from sandcastle.store.models import ArtifactRow, RunRow, SandboxRow
from sandcastle.store.repositories import rowcount

_OPEN = (RunStatus.QUEUED.value, RunStatus.RUNNING.value)


def to_artifact(row: ArtifactRow) -> Artifact:
    return Artifact(
        id=row.id,
        run_id=row.run_id,
        sandbox_id=row.sandbox_id,
        context_id=row.context_id,
        name=row.name,
        mime_type=row.mime_type,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        created_at=row.created_at,
        execution_count=row.execution_count,
        expires_at=row.expires_at,
        metadata=dict(row.metadata_json or {}),
        org_id=row.org_id or "",
        stored_bytes=row.stored_bytes,
    )


def artifact_row(artifact: Artifact) -> ArtifactRow:
    return ArtifactRow(
        id=artifact.id,
        run_id=artifact.run_id,
        sandbox_id=artifact.sandbox_id,
        context_id=artifact.context_id,
        name=artifact.name,
        mime_type=artifact.mime_type,
        size_bytes=artifact.size_bytes,
        sha256=artifact.sha256,
        created_at=artifact.created_at,
        execution_count=artifact.execution_count,
        expires_at=artifact.expires_at,
        metadata_json=artifact.metadata,
        org_id=artifact.org_id or None,
        stored_bytes=artifact.stored_bytes,
    )


def run_cursor(seq: int) -> str:
    """The cursor of the page after the run numbered ``seq``."""
    return repo.pack_cursor("run", seq)


def seq_of(cursor: str) -> int:
    try:
        kind, seq = repo.unpack_cursor(cursor)
    except ValueError as exc:
        raise _bad_cursor() from exc
    if kind != "run" or not isinstance(seq, int):
        raise _bad_cursor()
    return seq


def _bad_cursor() -> FieldError:
    return FieldError("cursor", "cursor is not one this server issued", location="query")


class RunRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    # --- the queue -------------------------------------------------------------------------

    async def enqueue(self, row: RunRow, *, max_queued: int) -> int | None:
        """Commit a ``queued`` run unless its sandbox has ``max_queued`` waiting already; None
        if queued, else how many wait (counted and inserted in one transaction)."""
        async with self._db.session() as session:
            waiting = await session.scalar(
                select(func.count())
                .select_from(RunRow)
                .where(
                    RunRow.sandbox_id == row.sandbox_id,
                    RunRow.status == RunStatus.QUEUED.value,
                )
            )
            if (waiting or 0) >= max_queued:
                return int(waiting or 0)
            session.add(row)
        return None

    async def startable_heads(self) -> list[RunRow]:
        """The first queued run of every lane (a context, or a run that gets a new one) whose
        sandbox runs, or is hibernated with ``auto_resume``; in submission order."""
        lane = func.coalesce(RunRow.context_id, RunRow.id)
        heads = (
            select(func.min(RunRow.seq))
            .where(RunRow.status == RunStatus.QUEUED.value)
            .group_by(RunRow.sandbox_id, lane)
        )
        query = (
            select(RunRow)
            .join(SandboxRow, SandboxRow.id == RunRow.sandbox_id)
            .where(
                RunRow.seq.in_(heads),
                RunRow.status == RunStatus.QUEUED.value,
                or_(
                    SandboxRow.status == SandboxStatus.RUNNING.value,
                    and_(
                        SandboxRow.status == SandboxStatus.PAUSED.value,
                        SandboxRow.snapshot_id.is_not(None),
                        SandboxRow.auto_resume.is_(True),
                    ),
                ),
            )
            .order_by(RunRow.seq)
        )
        async with self._db.session() as session:
            return list((await session.scalars(query)).all())

    async def claim(self, run_id: str, now: datetime) -> bool:
        """``queued`` (and no cancel asked) → ``running``; whether this caller won."""
        async with self._db.session() as session:
            claimed = await session.execute(
                update(RunRow)
                .where(
                    RunRow.id == run_id,
                    RunRow.status == RunStatus.QUEUED.value,
                    RunRow.cancel_requested_at.is_(None),
                )
                .values(status=RunStatus.RUNNING.value, started_at=now)
            )
            return rowcount(claimed) == 1

    async def requeue(self, run_id: str) -> None:
        async with self._db.session() as session:
            await session.execute(
                update(RunRow)
                .where(RunRow.id == run_id, RunRow.status == RunStatus.RUNNING.value)
                .values(status=RunStatus.QUEUED.value, started_at=None)
            )

    async def set_context(self, run_id: str, context_id: str) -> None:
        async with self._db.session() as session:
            await session.execute(
                update(RunRow).where(RunRow.id == run_id).values(context_id=context_id)
            )

    async def settle(
        self, run_id: str, values: dict[str, Any], artifacts: Sequence[Artifact]
    ) -> bool:
        """End a ``running`` run with ``values`` and its artifacts, in one transaction;
        False (nothing written) if it is no longer running."""
        async with self._db.session() as session:
            settled = await session.execute(
                update(RunRow)
                .where(RunRow.id == run_id, RunRow.status == RunStatus.RUNNING.value)
                .values(**values)
            )
            if rowcount(settled) != 1:
                return False
            session.add_all(artifact_row(a) for a in artifacts)
        return True

    async def cancel(self, run_id: str, now: datetime, ended: dict[str, Any]) -> None:
        """A queued run ends with ``ended``; a running one gets ``cancel_requested_at`` (once).
        Conditional updates, not read-then-write: the dispatcher may claim it meanwhile."""
        async with self._db.session() as session:
            cancelled = await session.execute(
                update(RunRow)
                .where(RunRow.id == run_id, RunRow.status == RunStatus.QUEUED.value)
                .values(cancel_requested_at=now, **ended)
            )
            if rowcount(cancelled) == 0:
                await session.execute(
                    update(RunRow)
                    .where(
                        RunRow.id == run_id,
                        RunRow.status == RunStatus.RUNNING.value,
                        RunRow.cancel_requested_at.is_(None),
                    )
                    .values(cancel_requested_at=now)
                )

    async def end_open_runs_of(
        self, sandbox_id: str, values: dict[str, Any], *, except_ids: Iterable[str]
    ) -> None:
        """End the sandbox's queued runs, and its running ones but ``except_ids``."""
        async with self._db.session() as session:
            await session.execute(
                update(RunRow)
                .where(RunRow.sandbox_id == sandbox_id, RunRow.status == RunStatus.QUEUED.value)
                .values(**values)
            )
            await session.execute(
                update(RunRow)
                .where(
                    RunRow.sandbox_id == sandbox_id,
                    RunRow.status == RunStatus.RUNNING.value,
                    RunRow.id.not_in(list(except_ids)),
                )
                .values(**values)
            )

    async def fail_running(self, values: dict[str, Any]) -> list[str]:
        """End every ``running`` run with ``values`` (at start-up: nobody runs them)."""
        async with self._db.session() as session:
            ids = list(
                await session.scalars(
                    select(RunRow.id).where(RunRow.status == RunStatus.RUNNING.value)
                )
            )
            if ids:
                await session.execute(
                    update(RunRow)
                    .where(RunRow.id.in_(ids), RunRow.status == RunStatus.RUNNING.value)
                    .values(**values)
                )
        return ids

    # --- reads -----------------------------------------------------------------------------

    async def get(self, run_id: str) -> RunRow | None:
        async with self._db.session() as session:
            return await session.scalar(select(RunRow).where(RunRow.id == run_id))

    async def sandboxes_with_open_runs(self) -> list[str]:
        async with self._db.session() as session:
            return list(
                await session.scalars(
                    select(RunRow.sandbox_id).where(RunRow.status.in_(_OPEN)).distinct()
                )
            )

    async def page(
        self,
        sandbox_id: str,
        *,
        status: RunStatus | None,
        context_id: str | None,
        cursor: str | None,
        limit: int,
        max_bytes: int,
    ) -> tuple[list[RunRow], str | None]:
        """Newest first (by submission), at most ``limit`` runs and (past the first)
        ``max_bytes`` of output; the next page's cursor if more follow."""
        query = select(RunRow).where(RunRow.sandbox_id == sandbox_id)
        if status is not None:
            query = query.where(RunRow.status == status.value)
        if context_id is not None:
            query = query.where(RunRow.context_id == context_id)
        if cursor is not None:
            query = query.where(RunRow.seq < seq_of(cursor))
        query = query.order_by(RunRow.seq.desc()).limit(limit + 1)
        # Rows are read a few at a time: each carries up to MAX_OUTPUT_BYTES of output, and
        # neither the answer nor the server's memory may grow with ``limit``.
        rows: list[RunRow] = []
        held = 0
        more = False
        async with self._db.session() as session:
            result = await session.stream_scalars(query.execution_options(yield_per=8))
            async for row in result:
                size = output_size(row.execution)
                if len(rows) == limit or (rows and held + size > max_bytes):
                    more = True
                    break
                rows.append(row)
                held += size
            await result.close()
        return rows, run_cursor(rows[-1].seq) if more else None

    # --- retention -------------------------------------------------------------------------

    async def purge_batch(self, now: datetime, batch: int) -> list[str]:
        """Delete up to ``batch`` finished runs past ``expires_at`` and their artifacts' rows;
        their ids (the caller removes their files)."""
        async with self._db.session() as session:
            ids = list(
                await session.scalars(
                    select(RunRow.id)
                    .where(
                        RunRow.expires_at <= now,
                        RunRow.status.in_([s.value for s in TERMINAL_STATUSES]),
                    )
                    .limit(batch)
                )
            )
            if ids:
                await session.execute(delete(ArtifactRow).where(ArtifactRow.run_id.in_(ids)))
                await session.execute(delete(RunRow).where(RunRow.id.in_(ids)))
        return ids

    # --- artifacts -------------------------------------------------------------------------

    async def artifacts_of(self, run_ids: Sequence[str]) -> dict[str, list[Artifact]]:
        """The artifacts of each run, in the order they were collected (by path)."""
        found: dict[str, list[Artifact]] = {run_id: [] for run_id in run_ids}
        if not run_ids:
            return found
        query = (
            select(ArtifactRow)
            .where(ArtifactRow.run_id.in_(list(run_ids)))
            .order_by(ArtifactRow.run_id, ArtifactRow.name)
        )
        async with self._db.session() as session:
            for row in await session.scalars(query):
                found[row.run_id].append(to_artifact(row))
        return found

    async def artifact(self, artifact_id: str) -> Artifact | None:
        async with self._db.session() as session:
            row = await session.get(ArtifactRow, artifact_id)
            return None if row is None else to_artifact(row)

    async def delete_artifact(self, artifact_id: str, sandbox_id: str) -> Artifact | None:
        """Forget the sandbox's artifact; what it was, or None if the sandbox has none such."""
        async with self._db.session() as session:
            row = await session.get(ArtifactRow, artifact_id)
            if row is None or row.sandbox_id != sandbox_id:
                return None
            artifact = to_artifact(row)
            await session.delete(row)
        return artifact

    async def stored_bytes(self, org_id: str) -> int:
        """The bytes the org's artifacts hold on the host."""
        async with self._db.session() as session:
            used = await session.scalar(
                select(func.coalesce(func.sum(ArtifactRow.stored_bytes), 0)).where(
                    ArtifactRow.org_id == org_id
                )
            )
        return int(used or 0)

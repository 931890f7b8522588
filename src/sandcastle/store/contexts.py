"""The context records: a sandbox's REPL contexts as the control plane keeps them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import select, update

from sandcastle.domain.context import Context, ContextStatus
from sandcastle.store.db import Database
from sandcastle.store.models import ContextRow


def to_context(row: ContextRow) -> Context:
    return Context(
        id=row.id,
        sandbox_id=row.sandbox_id,
        language=row.language,
        cwd=row.cwd,
        status=ContextStatus(row.status),
        created_at=row.created_at,
        label=row.label,
    )


def _row(context: Context) -> ContextRow:
    return ContextRow(
        id=context.id,
        sandbox_id=context.sandbox_id,
        language=context.language,
        cwd=context.cwd,
        status=context.status.value,
        created_at=context.created_at,
        label=context.label,
    )


class ContextRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, contexts: Iterable[Context]) -> None:
        async with self._db.session() as session:
            session.add_all(_row(c) for c in contexts)

    async def find(self, context_id: str) -> Context | None:
        async with self._db.session() as session:
            row = await session.get(ContextRow, context_id)
            return None if row is None else to_context(row)

    async def of_sandbox(self, sandbox_id: str, statuses: Iterable[ContextStatus]) -> list[Context]:
        """The sandbox's contexts in ``statuses``, oldest first."""
        query = (
            select(ContextRow)
            .where(
                ContextRow.sandbox_id == sandbox_id,
                ContextRow.status.in_([s.value for s in statuses]),
            )
            .order_by(ContextRow.created_at, ContextRow.id)
        )
        async with self._db.session() as session:
            return [to_context(row) for row in await session.scalars(query)]

    async def set_status(self, context_ids: Sequence[str], status: ContextStatus) -> None:
        async with self._db.session() as session:
            await session.execute(
                update(ContextRow)
                .where(ContextRow.id.in_(list(context_ids)))
                .values(status=status.value)
            )

    async def mark_ready(self, context_id: str, cwd: str | None) -> Context:
        """``ready``, in the directory the kernel really runs in if the agent said (else the
        one recorded)."""
        async with self._db.session() as session:
            row = await session.get(ContextRow, context_id)
            assert row is not None
            row.status = ContextStatus.READY.value
            if cwd is not None:
                row.cwd = cwd
            return to_context(row)

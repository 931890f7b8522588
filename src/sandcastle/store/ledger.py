"""The credit records: org balances, the ledger of credit transactions, and the metering columns
of the sandboxes the deductions read and write.

A deduction writes every sandbox of one org with a compare-and-set on its meter and debits the
org in the same transaction: if any sandbox changed since it was read, nothing of the org is
written and the caller reads again (``deduct`` returns False).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from sandcastle.domain.metering import KILLED_STATUSES
from sandcastle.domain.sandbox import SandboxStatus
from sandcastle.store.db import Database
from sandcastle.store.models import CreditTransactionRow, MemberRow, OrgRow, SandboxRow
from sandcastle.store.repositories import rowcount
from sandcastle.store.tenancy import TenancyTx


class _Stale(Exception):
    """A sandbox changed since it was read: the org's deduction rolls back."""


class LedgerStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # --- the ledger ------------------------------------------------------------------------

    async def transactions(self, org_id: str, limit: int) -> list[CreditTransactionRow]:
        """The org's latest ledger entries, newest first."""
        async with self._db.session() as session:
            return list(
                await session.scalars(
                    select(CreditTransactionRow)
                    .where(CreditTransactionRow.org_id == org_id)
                    .order_by(CreditTransactionRow.created_at.desc(), CreditTransactionRow.id)
                    .limit(limit)
                )
            )

    async def credit(
        self, org_id: str, amount: int, *, kind: str, member_id: str | None, now: datetime
    ) -> CreditTransactionRow:
        """Add ``amount`` (negative: debit) to the org's balance, with its ledger entry."""
        async with self._db.session() as session:
            return await _credit(session, org_id, amount, kind, member_id, now)

    # --- metering --------------------------------------------------------------------------

    async def metered(self, org_id: str | None = None) -> list[SandboxRow]:
        """Sandboxes that cost credits now (running or paused), and killed ones whose last
        segment is not settled yet; given ``org_id``, that org's only."""
        query = select(SandboxRow).where(
            SandboxRow.org_id.is_not(None),
            or_(
                SandboxRow.status.in_([SandboxStatus.RUNNING.value, SandboxStatus.PAUSED.value]),
                and_(SandboxRow.killed_at.is_(None), SandboxRow.status.in_(KILLED_STATUSES)),
            ),
        )
        if org_id is not None:
            query = query.where(SandboxRow.org_id == org_id)
        async with self._db.session() as session:
            return list(await session.scalars(query))

    async def deduct(
        self,
        org_id: str,
        charges: Sequence[tuple[SandboxRow, dict[str, Any]]],
        total: int,
        now: datetime,
    ) -> bool:
        """Write each ``(sandbox as read, new meter values)`` and debit the org ``total``, all
        or nothing; False if a sandbox changed since it was read (nothing written)."""
        try:
            async with self._db.session() as session:
                for row, values in charges:
                    changed = await session.execute(
                        update(SandboxRow)
                        .where(
                            SandboxRow.id == row.id,
                            SandboxRow.status == row.status,
                            SandboxRow.meter_units == row.meter_units,
                            SandboxRow.meter_since.is_not_distinct_from(row.meter_since),
                            SandboxRow.killed_at.is_(None),
                        )
                        .values(**values)
                    )
                    if rowcount(changed) != 1:
                        raise _Stale(row.id)  # rolls the whole org back
                if total:
                    await _credit(session, org_id, -total, "usage", None, now)
        except _Stale:
            return False
        return True

    # --- enforcement -----------------------------------------------------------------------

    async def running_without_credits(self) -> list[str]:
        """Running sandboxes of orgs whose balance is zero or less."""
        async with self._db.session() as session:
            return list(
                await session.scalars(
                    select(SandboxRow.id)
                    .join(OrgRow, OrgRow.id == SandboxRow.org_id)
                    .where(
                        OrgRow.credit_balance <= 0,
                        SandboxRow.status == SandboxStatus.RUNNING.value,
                    )
                )
            )

    async def running_past_member_limit(self, default_max_members: int) -> list[str]:
        """Running sandboxes whose creator is past their org's member limit."""
        found: list[str] = []
        async with self._db.session() as session:
            # Only orgs with more members than their limit need the ranking.
            limit = func.coalesce(OrgRow.max_members, default_max_members)
            crowded = (
                select(OrgRow)
                .join(MemberRow, MemberRow.org_id == OrgRow.id)
                .where(MemberRow.removed_at.is_(None))
                .group_by(OrgRow.id)
                .having(func.count(MemberRow.id) > limit)
            )
            tenancy = TenancyTx(session)
            for org in list(await session.scalars(crowded)):
                members = await tenancy.over_limit_members(
                    org.id, default_max_members if org.max_members is None else org.max_members
                )
                if members:
                    found += await session.scalars(
                        select(SandboxRow.id).where(
                            SandboxRow.org_id == org.id,
                            SandboxRow.member_id.in_(members),
                            SandboxRow.status == SandboxStatus.RUNNING.value,
                        )
                    )
        return found


async def _credit(
    session: AsyncSession,
    org_id: str,
    amount: int,
    kind: str,
    member_id: str | None,
    now: datetime,
) -> CreditTransactionRow:
    balance = (
        await session.execute(
            update(OrgRow)
            .where(OrgRow.id == org_id)
            .values(credit_balance=OrgRow.credit_balance + amount)
            .returning(OrgRow.credit_balance)
        )
    ).scalar_one()
    row = CreditTransactionRow(
        id=str(uuid.uuid4()),
        org_id=org_id,
        kind=kind,
        amount=amount,
        balance_after=balance,
        member_id=member_id,
        created_at=now,
    )
    session.add(row)
    return row

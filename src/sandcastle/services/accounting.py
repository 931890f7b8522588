"""Credits: metering sandboxes, deducting from org balances, and acting on an empty balance.

**Unit.** Credits are whole numbers. A running sandbox costs ``credits_per_vcpu_second`` per
vCPU-second plus ``credits_per_gib_second`` per GiB-second of memory; a paused one costs
``paused_memory_percent`` % of its memory price and nothing for CPU. Internally, cost is kept in
*units* of 1/102,400,000 credit (milliseconds × MiB-per-GiB × percent), in which every
segment's cost is an exact integer, so nothing is lost to rounding: a sandbox's billed credits are
always ``floor(units / UNITS_PER_CREDIT)`` of its exact cost so far.

**Metering.** A sandbox's life is cut into *segments* of one state (running or paused). A segment
is costed (``meter_units`` grows, ``meter_since`` moves to its end) when the state changes
(pause, resume, settlement after a kill) and at each deduction. Everything is a timestamp or a
sum in the sandbox's row, written with compare-and-set, so a restart loses nothing and bills
nothing twice: the next pass simply costs the time since ``meter_since``, whoever was running then.

**Deduction.** Every ``credit_interval_s`` each org's metered sandboxes have their unbilled cost
moved into ``billed_credits`` and the org's balance debited by the same amount, in one
transaction. An org whose balance is zero or less has its running sandboxes paused
(``pause_reason: insufficient_credits``); members past the org's member limit have theirs paused
(``member_limit_exceeded``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, or_, select, update

from sandcastle.config import Settings
from sandcastle.domain.clock import Clock, utcnow
from sandcastle.domain.metering import (
    KILLED_STATUSES,
    UNITS_PER_CREDIT,
    PauseReason,
    Prices,
    meter_values,
    open_segment,
    stop_values,
)
from sandcastle.domain.sandbox import SandboxStatus
from sandcastle.errors import ConflictError, FieldError, SandcastleError
from sandcastle.services.auth import Principal
from sandcastle.services.sandboxes import SandboxService
from sandcastle.services.tenancy import TenancyService, over_limit_members
from sandcastle.store.db import Database
from sandcastle.store.models import CreditTransactionRow, MemberRow, OrgRow, SandboxRow

log = logging.getLogger("sandcastle.accounting")


#: The columns of :class:`Metered`, for queries that load only those.
METERED_COLUMNS = tuple(
    getattr(SandboxRow, name)
    for name in (
        "org_id", "status", "vcpus", "memory_mb", "started_at", "last_started_at", "paused_at",
        "destroyed_at", "killed_at", "timeout_at", "meter_since", "meter_units",
        "billed_credits", "runtime_ms",
    )
)  # fmt: skip


@dataclass(frozen=True)
class Deduction:
    """One pass: credits moved per org, and sandboxes paused because of it."""

    debited: dict[str, int]
    paused: list[str]


@dataclass(frozen=True)
class CreditTransaction:
    id: str
    kind: str
    amount: int
    balance_after: int
    created_at: datetime


@dataclass(frozen=True)
class CreditStatement:
    balance: int
    transactions: list[CreditTransaction]


class _Stale(Exception):
    """A sandbox row changed between the read and the compare-and-set: do the org again."""


class AccountingService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        tenancy: TenancyService,
        sandboxes: SandboxService,
        clock: Clock = utcnow,
    ) -> None:
        self._settings = settings
        self._db = db
        self._tenancy = tenancy
        self._sandboxes = sandboxes
        self._clock = clock
        self.prices = Prices.from_settings(settings)

    # --- credits --------------------------------------------------------------------------

    async def statement(
        self, principal: Principal, slug: str, *, limit: int = 50
    ) -> CreditStatement:
        """The org's balance and its latest ledger entries."""
        org = await self._tenancy.resolve_org(principal, slug, operator_ok=True)
        async with self._db.session() as session:
            rows = (
                await session.scalars(
                    select(CreditTransactionRow)
                    .where(CreditTransactionRow.org_id == org.id)
                    .order_by(CreditTransactionRow.created_at.desc(), CreditTransactionRow.id)
                    .limit(limit)
                )
            ).all()
        return CreditStatement(
            balance=org.credit_balance,
            transactions=[
                CreditTransaction(r.id, r.kind, r.amount, r.balance_after, r.created_at)
                for r in rows
            ],
        )

    async def top_up(self, principal: Principal, slug: str, amount: int) -> CreditStatement:
        """Add credits (owners and admins of the org, or an operator)."""
        org = await self._tenancy.resolve_org(principal, slug, operator_ok=True)
        if not principal.operator:
            self._tenancy.require_admin(principal)
        if amount <= 0:
            raise FieldError("amount", "amount must be a positive number of credits")
        async with self._db.session() as session:
            balance = (
                await session.execute(
                    update(OrgRow)
                    .where(OrgRow.id == org.id)
                    .values(credit_balance=OrgRow.credit_balance + amount)
                    .returning(OrgRow.credit_balance)
                )
            ).scalar_one()
            row = CreditTransactionRow(
                id=str(uuid.uuid4()),
                org_id=org.id,
                kind="topup",
                amount=amount,
                balance_after=balance,
                member_id=principal.member_id,
                created_at=self._clock(),
            )
            session.add(row)
        log.info("org %s topped up by %d credits: balance %d", org.slug, amount, balance)
        entry = CreditTransaction(row.id, row.kind, row.amount, row.balance_after, row.created_at)
        return CreditStatement(balance=balance, transactions=[entry])

    # --- the periodic pass ----------------------------------------------------------------

    async def run_pass(self) -> Deduction:
        """Deduct, then pause what an empty balance or the member limit no longer allows."""
        debited = await self.deduct()
        paused = await self.enforce()
        return Deduction(debited=debited, paused=paused)

    async def deduct(self) -> dict[str, int]:
        """Move every metered sandbox's unbilled cost into ``billed_credits`` and debit its org,
        one transaction per org. Returns the credits debited per org id."""
        now = self._clock()
        by_org: dict[str, list[SandboxRow]] = defaultdict(list)
        for row in await self._metered_rows(None):
            assert row.org_id is not None
            by_org[row.org_id].append(row)
        debited: dict[str, int] = {}
        for org_id, rows in by_org.items():
            for _attempt in range(20):
                try:
                    debited[org_id] = await self._deduct_org(org_id, rows, now)
                    break
                except _Stale:
                    rows = await self._metered_rows(org_id)
            else:
                log.warning("org %s: sandboxes kept changing; deduction left for next pass", org_id)
        return debited

    async def _metered_rows(self, org_id: str | None) -> list[SandboxRow]:
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
            return list((await session.scalars(query)).all())

    async def _deduct_org(self, org_id: str, rows: list[SandboxRow], now: datetime) -> int:
        total = 0
        async with self._db.session() as session:
            for row in rows:
                if row.status in KILLED_STATUSES:
                    values = stop_values(row, now, self.prices)
                    values["killed_at"] = open_segment(row, now).end
                else:
                    values = meter_values(row, now, self.prices)
                billed = values["meter_units"] // UNITS_PER_CREDIT
                total += billed - row.billed_credits
                values.update(billed_credits=billed, last_credit_deduction_at=now)
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
                if changed.rowcount != 1:  # type: ignore[attr-defined]
                    raise _Stale(row.id)  # rolls the whole org back
            if total:
                balance = (
                    await session.execute(
                        update(OrgRow)
                        .where(OrgRow.id == org_id)
                        .values(credit_balance=OrgRow.credit_balance - total)
                        .returning(OrgRow.credit_balance)
                    )
                ).scalar_one()
                session.add(
                    CreditTransactionRow(
                        id=str(uuid.uuid4()),
                        org_id=org_id,
                        kind="usage",
                        amount=-total,
                        balance_after=balance,
                        member_id=None,
                        created_at=now,
                    )
                )
        return total

    async def enforce(self) -> list[str]:
        """Pause running sandboxes of orgs without credits, and of members past the limit."""
        paused: list[str] = []
        async with self._db.session() as session:
            broke = list(
                (
                    await session.scalars(
                        select(SandboxRow.id)
                        .join(OrgRow, OrgRow.id == SandboxRow.org_id)
                        .where(
                            OrgRow.credit_balance <= 0,
                            SandboxRow.status == SandboxStatus.RUNNING.value,
                        )
                    )
                ).all()
            )
            over: list[str] = []
            # Only orgs with more members than their limit need the ranking.
            crowded = (
                select(OrgRow)
                .join(MemberRow, MemberRow.org_id == OrgRow.id)
                .where(MemberRow.removed_at.is_(None))
                .group_by(OrgRow.id)
                .having(
                    func.count(MemberRow.id)
                    > func.coalesce(OrgRow.max_members, self._settings.org_max_members)
                )
            )
            for org in (await session.scalars(crowded)).all():
                members = await over_limit_members(session, org, self._settings)
                if members:
                    over += (
                        await session.scalars(
                            select(SandboxRow.id).where(
                                SandboxRow.org_id == org.id,
                                SandboxRow.member_id.in_(members),
                                SandboxRow.status == SandboxStatus.RUNNING.value,
                            )
                        )
                    ).all()
        for sandbox_id in broke:
            if await self._suspend(sandbox_id, PauseReason.INSUFFICIENT_CREDITS):
                paused.append(sandbox_id)
        for sandbox_id in over:
            if sandbox_id not in paused and await self._suspend(
                sandbox_id, PauseReason.MEMBER_LIMIT_EXCEEDED
            ):
                paused.append(sandbox_id)
        return paused

    async def _suspend(self, sandbox_id: str, reason: PauseReason) -> bool:
        try:
            await self._sandboxes.suspend(sandbox_id, reason)
        except ConflictError:
            return False  # no longer running: nothing to pause
        except SandcastleError as exc:
            log.warning("could not pause sandbox %s (%s): %s", sandbox_id, reason.value, exc)
            return False
        log.info("paused sandbox %s: %s", sandbox_id, reason.value)
        return True

    async def run_forever(self) -> None:
        """Deduct and enforce every ``credit_interval_s``."""
        while True:
            await asyncio.sleep(self._settings.credit_interval_s)
            try:
                await self.run_pass()
            except Exception:  # one bad pass must not stop metering
                log.exception("credit deduction failed")

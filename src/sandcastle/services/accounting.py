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
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

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
from sandcastle.errors import ConflictError, FieldError, SandcastleError
from sandcastle.services.auth import Principal
from sandcastle.services.sandboxes import SandboxService
from sandcastle.services.tenancy import TenancyService
from sandcastle.store.ledger import LedgerStore
from sandcastle.store.models import SandboxRow

log = logging.getLogger("sandcastle.accounting")


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


class AccountingService:
    def __init__(
        self,
        settings: Settings,
        ledger: LedgerStore,
        tenancy: TenancyService,
        sandboxes: SandboxService,
        clock: Clock = utcnow,
    ) -> None:
        self._settings = settings
        self._ledger = ledger
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
        rows = await self._ledger.transactions(org.id, limit)
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
        row = await self._ledger.credit(
            org.id, amount, kind="topup", member_id=principal.member_id, now=self._clock()
        )
        balance = row.balance_after
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
        for row in await self._ledger.metered():
            assert row.org_id is not None
            by_org[row.org_id].append(row)
        debited: dict[str, int] = {}
        for org_id, rows in by_org.items():
            for _attempt in range(20):
                total = await self._deduct_org(org_id, rows, now)
                if total is not None:
                    debited[org_id] = total
                    break
                rows = await self._ledger.metered(org_id)
            else:
                log.warning("org %s: sandboxes kept changing; deduction left for next pass", org_id)
        return debited

    async def _deduct_org(self, org_id: str, rows: list[SandboxRow], now: datetime) -> int | None:
        """The credits debited, or None if a sandbox changed meanwhile (nothing written)."""
        total = 0
        charges = []
        for row in rows:
            if row.status in KILLED_STATUSES:
                values = stop_values(row, now, self.prices)
                values["killed_at"] = open_segment(row, now).end
            else:
                values = meter_values(row, now, self.prices)
            billed = values["meter_units"] // UNITS_PER_CREDIT
            total += billed - row.billed_credits
            values.update(billed_credits=billed, last_credit_deduction_at=now)
            charges.append((row, values))
        if not await self._ledger.deduct(org_id, charges, total, now):
            return None
        return total

    async def enforce(self) -> list[str]:
        """Pause running sandboxes of orgs without credits, and of members past the limit."""
        paused: list[str] = []
        broke = await self._ledger.running_without_credits()
        over = await self._ledger.running_past_member_limit(self._settings.org_max_members)
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

"""Metering arithmetic: what a sandbox's life costs, in exact integer units.

Pure functions over a sandbox's metering fields (:class:`Metered`): no I/O, no clock. The
service that writes them is ``services/accounting.py``, whose docstring tells the whole story
(units, segments, deductions).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sandcastle.domain.sandbox import SandboxStatus

if TYPE_CHECKING:
    from sandcastle.config import Settings

#: Units per credit: 1000 ms × 1024 MiB per GiB × 100 percent.
UNITS_PER_CREDIT = 1000 * 1024 * 100
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Statuses of a sandbox that is over: nothing more to cost after its end.
KILLED_STATUSES = (SandboxStatus.DESTROYED.value, SandboxStatus.ERROR.value)


class PauseReason(enum.StrEnum):
    USER = "user"
    TIMEOUT = "timeout"
    INSUFFICIENT_CREDITS = "insufficient_credits"
    MEMBER_LIMIT_EXCEEDED = "member_limit_exceeded"


@dataclass(frozen=True)
class Prices:
    vcpu_second: int
    gib_second: int
    paused_memory_percent: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Prices:
        return cls(
            vcpu_second=settings.credits_per_vcpu_second,
            gib_second=settings.credits_per_gib_second,
            paused_memory_percent=settings.paused_memory_percent,
        )

    def running_rate(self, vcpus: int, memory_mb: int) -> int:
        """Units per millisecond of a running sandbox."""
        return vcpus * self.vcpu_second * 1024 * 100 + memory_mb * self.gib_second * 100

    def paused_rate(self, memory_mb: int) -> int:
        """Units per millisecond of a paused sandbox: its memory only."""
        return memory_mb * self.gib_second * self.paused_memory_percent


def epoch_ms(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(milliseconds=1)


def ms_between(start: datetime, end: datetime) -> int:
    """Whole milliseconds as a difference of floored epoch milliseconds: consecutive segments
    add up exactly (``a→b`` plus ``b→c`` is ``a→c``), so cutting time never loses any."""
    return max(0, epoch_ms(end) - epoch_ms(start))


class Metered(Protocol):
    """The columns metering reads: a :class:`SandboxRow`, or a row of just these columns."""

    @property
    def org_id(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def vcpus(self) -> int: ...
    @property
    def memory_mb(self) -> int: ...
    @property
    def started_at(self) -> datetime | None: ...
    @property
    def last_started_at(self) -> datetime | None: ...
    @property
    def paused_at(self) -> datetime | None: ...
    @property
    def destroyed_at(self) -> datetime | None: ...
    @property
    def killed_at(self) -> datetime | None: ...
    @property
    def timeout_at(self) -> datetime | None: ...
    @property
    def meter_since(self) -> datetime | None: ...
    @property
    def meter_units(self) -> int: ...
    @property
    def billed_credits(self) -> int: ...
    @property
    def runtime_ms(self) -> int: ...


@dataclass(frozen=True)
class Segment:
    """The part of a sandbox's life not yet costed: its state, start and end."""

    state: str | None  # "running", "paused", or None (nothing to cost)
    start: datetime | None
    end: datetime


def _latest(*values: datetime | None) -> datetime | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def open_segment(row: Metered, now: datetime) -> Segment:
    """What ``row`` has used since ``meter_since`` (``now`` for a live sandbox; for a killed one
    not yet settled, until it was destroyed, or until now if it failed)."""
    if row.org_id is None or row.started_at is None:
        return Segment(None, None, now)  # a warm-pool entry, or never started
    status = row.status
    if status in KILLED_STATUSES:
        if row.killed_at is not None:
            return Segment(None, None, row.killed_at)  # settled
        end = row.destroyed_at or now
        state = "paused" if row.paused_at is not None else "running"
    elif status == SandboxStatus.RUNNING.value:
        end, state = now, "running"
    elif status == SandboxStatus.PAUSED.value:
        end, state = now, "paused"
    else:
        return Segment(None, None, now)
    if state == "running":
        start = _latest(row.meter_since, row.started_at, row.last_started_at)
    else:
        start = row.meter_since or row.paused_at
    if start is None:
        return Segment(None, None, end)
    return Segment(state, start, max(start, end))


def segment_units(row: Metered, segment: Segment, prices: Prices) -> int:
    if segment.state is None or segment.start is None:
        return 0
    ms = ms_between(segment.start, segment.end)
    if segment.state == "running":
        return ms * prices.running_rate(row.vcpus, row.memory_mb)
    return ms * prices.paused_rate(row.memory_mb)


def running_ms_since_start(row: Metered, end: datetime) -> int:
    """Running time of the current running interval (0 unless the sandbox is, or was last,
    running and that interval is not closed)."""
    if row.org_id is None or row.started_at is None or row.killed_at is not None:
        return 0
    if row.status == SandboxStatus.RUNNING.value or (
        row.status in KILLED_STATUSES and row.paused_at is None
    ):
        return ms_between(row.last_started_at or row.started_at, end)
    return 0


def meter_values(row: Metered, now: datetime, prices: Prices) -> dict[str, Any]:
    """Column values that cost the open segment up to ``now`` and start the next one there."""
    segment = open_segment(row, now)
    end = segment.end
    return {
        "meter_units": row.meter_units + segment_units(row, segment, prices),
        "meter_since": max(end, row.meter_since) if row.meter_since else end,
    }


def stop_values(row: Metered, now: datetime, prices: Prices) -> dict[str, Any]:
    """:func:`meter_values`, and the running interval (if one is open) closed into
    ``runtime_ms``: for a pause, and for settling a killed sandbox."""
    values = meter_values(row, now, prices)
    end = open_segment(row, now).end
    running = running_ms_since_start(row, end)
    if running or row.status == SandboxStatus.RUNNING.value:
        values["runtime_ms"] = row.runtime_ms + running
        values["stopped_at"] = end
    return values


@dataclass(frozen=True)
class Usage:
    """A sandbox's credit fields and running time at one moment."""

    total_runtime_seconds: int
    billed_credits: int
    running_credits: int
    estimated_total_credits: int


def usage(row: Metered, now: datetime, prices: Prices) -> Usage:
    segment = open_segment(row, now)
    units = row.meter_units + segment_units(row, segment, prices)
    total = units // UNITS_PER_CREDIT
    running_ms = row.runtime_ms + running_ms_since_start(row, segment.end)
    estimate = units
    if (
        segment.state is not None
        and row.status not in KILLED_STATUSES
        and row.timeout_at is not None
    ):
        rest = ms_between(segment.end, row.timeout_at)
        rate = (
            prices.running_rate(row.vcpus, row.memory_mb)
            if segment.state == "running"
            else prices.paused_rate(row.memory_mb)
        )
        estimate += rest * rate
    return Usage(
        total_runtime_seconds=running_ms // 1000,
        billed_credits=row.billed_credits,
        running_credits=max(0, total - row.billed_credits),
        estimated_total_credits=estimate // UNITS_PER_CREDIT,
    )

"""Metering arithmetic: exact units, segments that add up, usage in every state."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest

from sandcastle.domain.metering import (
    UNITS_PER_CREDIT,
    Prices,
    meter_values,
    ms_between,
    open_segment,
    segment_units,
    stop_values,
    usage,
)
from sandcastle.store.models import SandboxRow

T0 = datetime(2030, 1, 1, tzinfo=UTC)
PRICES = Prices(vcpu_second=10, gib_second=5, paused_memory_percent=40)


def row(**values: object) -> SandboxRow:
    defaults: dict[str, object] = {
        "id": "sb_00000001",
        "org_id": "org",
        "status": "running",
        "vcpus": 2,
        "memory_mb": 512,
        "created_at": T0,
        "started_at": T0,
        "meter_since": T0,
        "meter_units": 0,
        "billed_credits": 0,
        "runtime_ms": 0,
        "timeout_at": T0 + timedelta(hours=1),
    }
    defaults.update(values)
    return SandboxRow(**defaults)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_rates_are_exact_integers_per_millisecond() -> None:
    # 2 vCPU × 10 + 0.5 GiB × 5 = 22.5 credits a second running; 0.5 × 5 × 40 % = 1 paused.
    assert PRICES.running_rate(2, 512) * 1000 == 22.5 * UNITS_PER_CREDIT
    assert PRICES.paused_rate(512) * 1000 == 1 * UNITS_PER_CREDIT


def test_cutting_time_into_segments_loses_and_adds_nothing() -> None:
    rng = random.Random(7)
    start, end = at(0), at(3600)
    cuts = sorted(at(rng.uniform(0, 3600)) for _ in range(500))
    edges = [start, *cuts, end]
    pieces = sum(ms_between(a, b) for a, b in itertools.pairwise(edges))
    assert pieces == ms_between(start, end) == 3_600_000


def test_deducting_often_bills_the_same_as_deducting_once() -> None:
    once = meter_values(row(), at(100), PRICES)["meter_units"] // UNITS_PER_CREDIT
    current = row()
    billed = 0
    for step in range(1, 301):  # every third of a second: 7.5 credits, never a whole number
        values = meter_values(current, at(step / 3), PRICES)
        total = values["meter_units"] // UNITS_PER_CREDIT
        billed += total - current.billed_credits
        current = row(**{**values, "billed_credits": total})
    assert billed == once == 2250


def test_usage_of_a_running_sandbox_projects_to_its_deadline() -> None:
    got = usage(row(billed_credits=10, meter_units=10 * UNITS_PER_CREDIT), at(100), PRICES)
    assert got.total_runtime_seconds == 100
    assert got.billed_credits == 10
    assert got.running_credits == 2250
    assert got.estimated_total_credits == 10 + 22.5 * 3600


def test_paused_time_costs_memory_and_adds_no_runtime() -> None:
    paused = row(**stop_values(row(), at(10), PRICES))
    paused.status, paused.paused_at = "paused", at(10)
    assert paused.runtime_ms == 10_000 and paused.stopped_at == at(10)
    got = usage(paused, at(60), PRICES)
    assert got.total_runtime_seconds == 10
    assert got.running_credits == 225 + 50
    assert got.estimated_total_credits == 225 + 3590


def test_a_killed_sandbox_is_costed_until_it_was_destroyed() -> None:
    killed = row(status="destroyed", destroyed_at=at(30))
    segment = open_segment(killed, at(500))
    assert (segment.state, segment.end) == ("running", at(30))
    assert segment_units(killed, segment, PRICES) // UNITS_PER_CREDIT == 675
    settled = row(status="destroyed", destroyed_at=at(30), killed_at=at(30))
    assert open_segment(settled, at(500)).state is None
    got = usage(killed, at(500), PRICES)
    assert got.total_runtime_seconds == 30 and got.estimated_total_credits == 675


@pytest.mark.parametrize(
    "values",
    [
        {"org_id": None},  # a warm-pool entry
        {"started_at": None, "status": "creating"},
        {"started_at": None, "status": "error"},  # never started
    ],
)
def test_what_never_ran_for_a_tenant_costs_nothing(values: dict[str, object]) -> None:
    assert usage(row(**values), at(1000), PRICES).running_credits == 0


def test_a_clock_that_goes_back_never_rebills() -> None:
    ahead = row(meter_since=at(100))
    values = meter_values(ahead, at(50), PRICES)
    assert values["meter_units"] == 0 and values["meter_since"] == at(100)

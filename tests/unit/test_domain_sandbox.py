"""The sandbox lifecycle state machine: every move, legal or not."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from sandcastle.domain.sandbox import (
    LIVE_STATUSES,
    Sandbox,
    SandboxConfig,
    SandboxStatus,
    can_transition,
    check_transition,
)
from sandcastle.errors import ConflictError

S = SandboxStatus

# Written out by hand, not derived from the module: this is the specification.
LEGAL = {
    (S.CREATING, S.RUNNING),
    (S.CREATING, S.ERROR),
    (S.CREATING, S.DESTROYED),
    (S.RUNNING, S.PAUSED),
    (S.RUNNING, S.ERROR),
    (S.RUNNING, S.DESTROYED),
    (S.PAUSED, S.RUNNING),
    (S.PAUSED, S.ERROR),
    (S.PAUSED, S.DESTROYED),
    (S.ERROR, S.DESTROYED),
}
ALL_PAIRS = list(itertools.product(SandboxStatus, repeat=2))
ILLEGAL = [pair for pair in ALL_PAIRS if pair not in LEGAL]


def test_the_statuses_are_the_documented_ones() -> None:
    assert [s.value for s in SandboxStatus] == [
        "creating",
        "running",
        "paused",
        "destroyed",
        "error",
    ]
    assert len(ALL_PAIRS) == 25 and len(ILLEGAL) == 15


@pytest.mark.parametrize(("current", "target"), sorted(LEGAL))
def test_legal_moves(current: SandboxStatus, target: SandboxStatus) -> None:
    assert can_transition(current, target)
    check_transition("sb_00000001", current, target)  # does not raise


@pytest.mark.parametrize(("current", "target"), ILLEGAL)
def test_illegal_moves_are_conflicts(current: SandboxStatus, target: SandboxStatus) -> None:
    assert not can_transition(current, target)
    with pytest.raises(ConflictError) as caught:
        check_transition("sb_00000001", current, target)
    assert caught.value.message == (
        f"sandbox sb_00000001 is {current.value} and cannot become {target.value}"
    )


def test_destroyed_is_final_and_error_only_cleans_up() -> None:
    assert not any(can_transition(S.DESTROYED, t) for t in SandboxStatus)
    assert [t for t in SandboxStatus if can_transition(S.ERROR, t)] == [S.DESTROYED]


def test_live_statuses() -> None:
    assert LIVE_STATUSES == {S.CREATING, S.RUNNING, S.PAUSED}


def _sandbox(status: SandboxStatus, reason: str | None = None) -> Sandbox:
    return Sandbox(
        id="sb_00000001",
        org_id="org",
        project_id="project",
        status=status,
        config=SandboxConfig(vcpus=1, memory_mb=512, disk_mb=1024),
        template="python",
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
        status_reason=reason,
    )


def test_require_running_passes_only_when_running() -> None:
    _sandbox(S.RUNNING).require_running()
    for status in set(SandboxStatus) - {S.RUNNING}:
        with pytest.raises(ConflictError, match=f"is {status.value}; it must be running"):
            _sandbox(status).require_running()


def test_require_running_names_the_reason() -> None:
    with pytest.raises(ConflictError) as caught:
        _sandbox(S.ERROR, "start failed: boom").require_running()
    assert caught.value.message == (
        "sandbox sb_00000001 is error (start failed: boom); it must be running"
    )

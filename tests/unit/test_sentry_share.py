"""What the host grants a gVisor sandbox, and the budget it gives the agent's memory guard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandcastle.runtime import sentry
from sandcastle.runtime.base import LaunchSpec


def _spec(memory_mb: int, pids_max: int) -> LaunchSpec:
    return LaunchSpec("sb_1", Path("/"), 1, memory_mb, 1024, pids_max, "/")


@pytest.mark.parametrize(("memory_mb", "pids_max"), [(256, 64), (512, 512), (8192, 4096)])
def test_a_full_process_table_at_the_guards_cap_stays_below_the_host_limit(
    tmp_path: Path, memory_mb: int, pids_max: int
) -> None:
    spec = _spec(memory_mb, pids_max)
    sentry.write_guard_budget(spec, tmp_path)
    budget = json.loads((tmp_path / "limits.json").read_text())
    # What the host sees when the sandbox's own count sits at the cap with every task alive:
    # the count, plus what each task costs the host unseen from inside.
    host_use_mb = budget["cap_mb"] + pids_max * sentry.SENTRY_KB_PER_TASK // 1024
    assert host_use_mb + sentry.GUARD_HEADROOM_MB <= sentry.sentry_memory_mb(spec)
    # And the guard's own allowance reaches the cap only past the sandbox's memory_mb.
    assert budget["budget_mb"] > memory_mb
    assert budget["cap_mb"] > budget["budget_mb"]
    assert budget["process_kb"] == sentry.GUARD_KB_PER_PROCESS


def test_the_host_grants_each_task_more_than_the_guard_allows_it() -> None:
    small, large = sentry.sentry_memory_mb(_spec(512, 64)), sentry.sentry_memory_mb(_spec(512, 512))
    per_task_kb = (large - small) * 1024 // (512 - 64)
    assert per_task_kb >= sentry.GUARD_KB_PER_PROCESS + sentry.SENTRY_KB_PER_TASK

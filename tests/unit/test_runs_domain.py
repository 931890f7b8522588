"""Code runs: the status machine, the stored execution, artifact diffing, cursors, previews."""

from __future__ import annotations

import pytest

from sandcastle.api.routes.artifacts import CSV_PREVIEW_ROWS, csv_table
from sandcastle.config import Settings
from sandcastle.domain.clock import utcnow
from sandcastle.domain.execution import ExecutionResult
from sandcastle.domain.runs import (
    TERMINAL_STATUSES,
    Reasons,
    RunExecution,
    RunStatus,
    can_transition,
    check_transition,
)
from sandcastle.errors import ConflictError, FieldError
from sandcastle.services.artifacts import previewable
from sandcastle.services.files import FilesSnapshot
from sandcastle.store.repositories import encode_cursor
from sandcastle.store.runs import run_cursor, seq_of


def test_runs_move_forward_only_and_terminal_statuses_are_final() -> None:
    assert can_transition(RunStatus.QUEUED, RunStatus.RUNNING)
    assert can_transition(RunStatus.QUEUED, RunStatus.CANCELLED)
    assert can_transition(RunStatus.RUNNING, RunStatus.SUCCEEDED)
    assert can_transition(RunStatus.RUNNING, RunStatus.CANCELLED)
    assert not can_transition(RunStatus.QUEUED, RunStatus.SUCCEEDED)
    assert not can_transition(RunStatus.RUNNING, RunStatus.QUEUED)
    for done in TERMINAL_STATUSES:
        for target in RunStatus:
            assert not can_transition(done, target)
    with pytest.raises(ConflictError, match="run_x is succeeded and cannot become running"):
        check_transition("run_x", RunStatus.SUCCEEDED, RunStatus.RUNNING)


def test_the_stored_execution_keeps_the_raw_bundle_and_round_trips() -> None:
    result = ExecutionResult()
    for event in (
        {"kind": "execution_count", "value": 3},
        {"kind": "stdout", "text": "hi\n"},
        {"kind": "result", "is_primary": True, "data": {"text/plain": "1", "x/custom": [1]}},
        {"kind": "error", "name": "E", "value": "v", "traceback": ["\x1b[0;31mline\x1b[0m"]},
    ):
        result.add_event(event)
    execution = RunExecution.from_result(result)
    (item,) = execution.results
    assert item.is_main_result is True
    assert item.data == {"text/plain": "1", "x/custom": [1]}
    assert item.fields() == {"text": "1"}
    assert execution.error == {"name": "E", "value": "v", "traceback": "line"}
    assert RunExecution.from_json(execution.to_json()) == execution


def test_reasons_are_words() -> None:
    assert Reasons.timeout(5).startswith("timeout")
    assert Reasons.sandbox_ended("destroyed", None) == "the sandbox was destroyed"
    assert "timeout" in Reasons.sandbox_ended("destroyed", "timeout")
    assert Reasons.sandbox_ended("error", "oom") == "the sandbox failed: oom"
    assert Reasons.raised("KeyError", "'k'") == "the code raised KeyError: 'k'"


def _changed(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], taken: int | None = None
) -> list[str]:
    return FilesSnapshot(after, False).changed_since(FilesSnapshot(before, False, taken))


def test_changed_files_are_new_or_different_ones() -> None:
    ms = 1_000_000
    before = {"same": (1, 10), "grew": (1, 10), "touched": (1, 10), "gone": (1, 10)}
    after = {"same": (1, 10), "grew": (2, 10), "touched": (1, 10 + 5 * ms), "new": (0, 1)}
    assert _changed(before, after) == ["grew", "new", "touched"]
    # A few microseconds of drift is not a change (gVisor moves mtimes on close).
    assert _changed({"f": (1, 10)}, {"f": (1, 10 + 7_000)}) == []


def test_an_mtime_no_newer_than_the_snapshot_is_not_a_change() -> None:
    ms = 1_000_000
    taken = 100 * ms
    # Moved (either way) by gVisor's clocks, but still no newer than the snapshot: unchanged.
    assert _changed({"f": (1, 10 * ms)}, {"f": (1, 60 * ms)}, taken) == []
    assert _changed({"f": (1, 60 * ms)}, {"f": (1, 10 * ms)}, taken) == []
    # Written after the snapshot: newer than it, a change, even at the same size.
    assert _changed({"f": (1, 10 * ms)}, {"f": (1, taken + 1)}, taken) == ["f"]
    # Without the snapshot's time (an older agent), only the small tolerance applies.
    assert _changed({"f": (1, 10 * ms)}, {"f": (1, 60 * ms)}) == ["f"]


def test_cursors_round_trip_and_foreign_ones_are_refused() -> None:
    assert seq_of(run_cursor(42)) == 42
    for bad in ("", "garbage", run_cursor(1).swapcase(), encode_cursor(utcnow(), "sb_1")):
        with pytest.raises(FieldError):
            seq_of(bad)


def test_csv_preview_escapes_every_cell_and_bounds_the_rows() -> None:
    page = csv_table(b'a,b\n"<script>",&\n', "t.csv")
    assert "<th>a</th><th>b</th>" in page
    assert "<td>&lt;script&gt;</td><td>&amp;</td>" in page
    assert "<script>" not in page and "truncated" not in page
    many = ("n\n" + "1\n" * (CSV_PREVIEW_ROWS + 10)).encode()
    long_page = csv_table(many, "<t>")
    assert long_page.count("<tr>") == CSV_PREVIEW_ROWS + 1
    assert "Preview truncated" in long_page
    assert "<title>&lt;t&gt;</title>" in long_page


def test_only_images_text_and_json_have_previews() -> None:
    assert previewable("image/png") and previewable("text/csv") and previewable("application/json")
    assert not previewable("application/octet-stream") and not previewable("application/pdf")


def test_run_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="run_default_timeout_secs"):
        Settings(run_default_timeout_secs=100, run_max_timeout_secs=10)

"""The agent's memory guard against real processes (its end-to-end test is the gVisor half of
``tests/e2e/test_isolation.py``): the budget file, the victim choice, the kill of a whole tree."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandcastle.agent import memguard
from sandcastle.agent.memguard import MemoryGuard, Victim, process_children, tree_rss


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def _spawn(procs: list[subprocess.Popen[bytes]], script: str) -> subprocess.Popen[bytes]:
    # A session of its own, as jupyter_client starts kernels.
    proc = subprocess.Popen(["python3", "-c", script], start_new_session=True)
    procs.append(proc)
    return proc


def _guard(tmp_path: Path, victims: list[Victim], budget_mb: int | None) -> MemoryGuard:
    limits = tmp_path / "limits.json"
    if budget_mb is not None:
        limits.write_text(json.dumps({"budget_mb": budget_mb}))
    return MemoryGuard(lambda: victims, limits_file=str(limits), kills_file=str(tmp_path / "k"))


def _gone(proc: subprocess.Popen[bytes]) -> bool:
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_without_a_budget_the_guard_kills_nothing(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    proc = _spawn(procs, "import time; time.sleep(60)")
    guard = _guard(tmp_path, [Victim(proc.pid, lambda: None)], budget_mb=None)
    assert guard.check() is False
    assert proc.poll() is None


def test_under_budget_nothing_dies(tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    proc = _spawn(procs, "import time; time.sleep(60)")
    guard = _guard(tmp_path, [Victim(proc.pid, lambda: None)], budget_mb=10**9)
    assert guard.check() is False
    assert proc.poll() is None and guard.kills == 0


def test_over_budget_the_largest_tree_dies_and_is_counted_first(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    small = _spawn(procs, "import time; time.sleep(60)")
    # The big one holds its memory in a child: the tree is what counts, and its whole process
    # group dies.
    big = _spawn(
        procs,
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', "
        "'import time; b = bytearray(200 << 20); time.sleep(60)'])\n"
        "time.sleep(60)",
    )
    kills_file = tmp_path / "k"
    order: list[str] = []
    deadline = time.monotonic() + 10
    while tree_rss(big.pid, process_children()) < 150 << 20:
        assert time.monotonic() < deadline, "the child did not allocate"
        time.sleep(0.05)
    grandchild = process_children()[big.pid][0]

    def on_kill() -> None:
        order.append(kills_file.read_text())

    guard = _guard(
        tmp_path, [Victim(small.pid, lambda: None), Victim(big.pid, on_kill)], budget_mb=1
    )
    assert guard.check() is True
    assert _gone(big)
    assert small.poll() is None
    assert order == ["1"] and kills_file.read_text() == "1"
    deadline = time.monotonic() + 5
    while Path(f"/proc/{grandchild}").exists() and _state(grandchild) != "Z":
        assert time.monotonic() < deadline, "the grandchild survived"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


def test_a_new_budget_file_is_read_again(tmp_path: Path) -> None:
    guard = _guard(tmp_path, [], budget_mb=10**9)
    guard.check()
    assert guard.budget == 10**9 * 2**20
    limits = tmp_path / "limits.json"
    limits.unlink()
    limits.write_text(json.dumps({"budget_mb": 5}))
    guard.check()
    assert guard.budget == 5 * 2**20
    limits.write_text("not json")
    time.sleep(0.01)
    limits.touch()
    guard.check()
    assert guard.budget is None


MB = 2**20


def test_each_kernel_brings_its_own_size_up_to_the_cap(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The budget is for the code's data: a kernel's resident size when first seen is allowed
    on top (several idle Deno kernels must not look like an overrun), never past the cap."""
    kernel = _spawn(procs, "import time; time.sleep(60)")
    sizes = {kernel.pid: 450 * MB}
    in_use = [500 * MB]
    monkeypatch.setattr(memguard, "rss", lambda pid: sizes.get(pid, 0))
    monkeypatch.setattr(memguard, "memory_in_use", lambda fd=None: in_use[0])
    limits = tmp_path / "limits.json"
    limits.write_text(json.dumps({"budget_mb": 100}))
    guard = MemoryGuard(
        lambda: [Victim(kernel.pid, lambda: None)],
        limits_file=str(limits),
        kills_file=str(tmp_path / "k"),
    )
    assert guard.check() is False  # 500 MB in use, 100 + 450 allowed
    assert kernel.poll() is None
    limits.write_text(json.dumps({"budget_mb": 100, "cap_mb": 300}))
    assert guard.check() is True  # capped at 300 MB
    assert _gone(kernel)


def test_the_kernel_is_sized_when_first_seen_and_its_growth_counts(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = _spawn(procs, "import time; time.sleep(60)")
    sizes = {kernel.pid: 450 * MB}
    in_use = [500 * MB]
    monkeypatch.setattr(memguard, "rss", lambda pid: sizes.get(pid, 0))
    monkeypatch.setattr(memguard, "memory_in_use", lambda fd=None: in_use[0])
    guard = _guard(tmp_path, [Victim(kernel.pid, lambda: None)], budget_mb=100)
    assert guard.check() is False
    sizes[kernel.pid], in_use[0] = 600 * MB, 650 * MB  # its code allocated 150 MB: over
    assert guard.check() is True
    assert _gone(kernel)


def test_the_guard_looks_often_near_the_budget_and_seldom_far_below_it(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """However far below the budget, the next look comes before growth at the rate a look
    every POLL_S stops could reach the host's limit."""
    kernel = _spawn(procs, "import time; time.sleep(60)")
    in_use = [0]
    monkeypatch.setattr(memguard, "rss", lambda pid: 0)
    monkeypatch.setattr(memguard, "memory_in_use", lambda fd=None: in_use[0])
    guard = _guard(tmp_path, [Victim(kernel.pid, lambda: None)], budget_mb=2048)
    for used_mb in (0, 512, 1024, 1536, 2000, 2048):
        in_use[0] = used_mb * MB
        assert guard.check() is False
        room = (2048 - used_mb) * MB + memguard.HOST_MARGIN
        assert memguard.POLL_S <= guard.next_look_s() <= memguard.IDLE_POLL_S
        assert guard.next_look_s() * memguard.GROWTH_PER_S <= room
    in_use[0] = 2047 * MB
    guard.check()
    assert guard.next_look_s() == pytest.approx(memguard.POLL_S, rel=0.01)
    in_use[0] = 0
    guard.check()
    assert guard.next_look_s() > 4 * memguard.POLL_S  # far below: a quarter of the looks, or fewer


def test_without_a_budget_the_guard_only_looks_for_one_seldom(tmp_path: Path) -> None:
    guard = MemoryGuard(
        lambda: [], limits_file=str(tmp_path / "absent.json"), kills_file=str(tmp_path / "k")
    )
    assert guard.check() is False
    assert guard.next_look_s() == memguard.IDLE_POLL_S


def test_memory_in_use_reads_the_same_through_a_kept_descriptor() -> None:
    fd = os.open("/proc/meminfo", os.O_RDONLY)
    try:
        assert abs(memguard.memory_in_use(fd) - memguard.memory_in_use()) < 512 * MB
        assert memguard.memory_in_use(fd) > 0
    finally:
        os.close(fd)

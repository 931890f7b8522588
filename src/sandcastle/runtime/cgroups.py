"""cgroup v1 groups for sandboxes: limits, membership, freezing, killing, accounting.

One group per sandbox under ``sandcastle/<instance>/<id>`` in each controller we use, where the
instance names one server's data directory (so two servers on a host never touch each other's
sandboxes). The group, not a pid, is the truth about whether a sandbox's processes live: the
server may restart, but the group and its members remain.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from sandcastle.errors import RuntimeBackendError

CGROUP_ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "freezer")
PARENT = "sandcastle"
_CFS_PERIOD_US = 100_000


@dataclass(frozen=True)
class Limits:
    vcpus: int
    memory_mb: int
    pids_max: int


class SandboxCgroup:
    """The cgroup v1 groups of one sandbox."""

    def __init__(self, sandbox_id: str, instance: str, root: Path = CGROUP_ROOT) -> None:
        self.sandbox_id = sandbox_id
        self._parent = f"{PARENT}/{instance}"
        self._root = root

    def path(self, controller: str) -> Path:
        return self._root / controller / self._parent / self.sandbox_id

    def create(self, limits: Limits) -> None:
        try:
            for controller in CONTROLLERS:
                self.path(controller).mkdir(parents=True, exist_ok=True)
            memory = limits.memory_mb * 1024 * 1024
            self._write("memory", "memory.limit_in_bytes", memory)
            # Without swap accounting the file is absent; with it, forbid swapping past the limit.
            if (self.path("memory") / "memory.memsw.limit_in_bytes").exists():
                self._write("memory", "memory.memsw.limit_in_bytes", memory)
            self._write("cpu", "cpu.cfs_period_us", _CFS_PERIOD_US)
            quota = limits.vcpus * _CFS_PERIOD_US
            self._write("cpu", "cpu.cfs_quota_us", quota)
            if (self.path("cpu") / "cpu.cfs_burst_us").exists():
                self._write("cpu", "cpu.cfs_burst_us", quota)
            self._write("pids", "pids.max", limits.pids_max)
        except OSError as exc:
            raise RuntimeBackendError(
                f"cannot set up cgroups for {self.sandbox_id}: {exc}"
            ) from exc

    def procs_files(self) -> list[str]:
        """Paths a freshly forked child writes its pid into, before exec, to join."""
        # Where controllers share a hierarchy (``cpu,cpuacct``), one write is enough.
        unique = {os.path.realpath(self.path(c)): c for c in CONTROLLERS}
        return [str(Path(p) / "cgroup.procs") for p in unique]

    def pids(self) -> list[int]:
        try:
            text = (self.path("pids") / "cgroup.procs").read_text()
        except FileNotFoundError:
            return []
        return [int(line) for line in text.split()]

    def exists(self) -> bool:
        return self.path("pids").exists()

    def _counter(self, file: str, name: str) -> int:
        """One ``name value`` line of a memory controller file (0 if absent)."""
        try:
            text = (self.path("memory") / file).read_text()
        except FileNotFoundError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == name:
                return int(value)
        return 0

    def oom_kills(self) -> int:
        return self._counter("memory.oom_control", "oom_kill")

    def cpu_seconds(self) -> float:
        try:
            return int((self.path("cpuacct") / "cpuacct.usage").read_text()) / 1e9
        except FileNotFoundError:
            return 0.0

    def is_frozen(self) -> bool:
        try:
            return (self.path("freezer") / "freezer.state").read_text().strip() == "FROZEN"
        except FileNotFoundError:
            return False

    def memory_bytes(self) -> int:
        try:
            return int((self.path("memory") / "memory.usage_in_bytes").read_text())
        except FileNotFoundError:
            return 0

    def memory_cache_bytes(self) -> int:
        """Of :meth:`memory_bytes`, the page cache (files read and written, tmpfs): memory the
        kernel may take back, unlike the processes' own."""
        return self._counter("memory.stat", "total_cache")

    def freeze(self) -> None:
        self._write("freezer", "freezer.state", "FROZEN")
        self._wait_freezer("FROZEN")

    def thaw(self) -> None:
        self._write("freezer", "freezer.state", "THAWED")
        self._wait_freezer("THAWED")

    def kill_all(self, timeout: float = 5.0) -> None:
        """SIGKILL every member; freezing first so nothing forks away mid-kill."""
        if not self.exists():
            return
        with contextlib.suppress(OSError):
            self.freeze()
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.thaw()
        end = time.monotonic() + timeout
        while self.pids() and time.monotonic() < end:
            time.sleep(0.01)

    def remove(self) -> None:
        for path in {Path(os.path.realpath(self.path(c))) for c in CONTROLLERS}:
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)  # members still exiting

    def _write(self, controller: str, name: str, value: object) -> None:
        (self.path(controller) / name).write_text(str(value))

    def _wait_freezer(self, state: str) -> None:
        path = self.path("freezer") / "freezer.state"
        end = time.monotonic() + 5.0
        while path.read_text().strip() != state:
            if time.monotonic() > end:
                raise RuntimeBackendError(f"freezer of {self.sandbox_id} stuck before {state}")
            time.sleep(0.001)


def list_sandbox_groups(instance: str, root: Path = CGROUP_ROOT) -> list[str]:
    """Ids of every sandbox of ``instance`` that has a group (alive or not yet removed)."""
    parent = root / "pids" / PARENT / instance
    if not parent.is_dir():
        return []
    return sorted(p.name for p in parent.iterdir() if p.is_dir())


def join_groups(procs_files: list[str]) -> None:
    """Move the calling process into the groups; meant for a child between fork and exec."""
    pid = str(os.getpid()).encode()
    for name in procs_files:
        fd = os.open(name, os.O_WRONLY)
        try:
            os.write(fd, pid)
        finally:
            os.close(fd)

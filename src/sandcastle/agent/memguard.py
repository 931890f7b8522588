"""The sandbox's own out-of-memory killer, for backends whose host limit would kill everything.

Under gVisor the host cgroup is the only memory enforcer, and its OOM kill takes the Sentry:
every context, the agent, the sandbox. So there the host asks the agent (``limits.json`` in the
channel directory, written before each start or restore) to hold the sandbox to its budget
itself, as the cgroup does under bwrap: when the sandbox's memory in use passes it, the kernel
whose memory grew most dies (with its descendants) and its context reports the kill.

Memory in use is what gVisor's ``/proc/meminfo`` counts (``MemTotal - MemFree``: anonymous
memory, page cache, tmpfs and ``/dev/shm`` alike). The budget is for what the sandbox's code
holds, not for the kernels themselves: each started kernel adds its resident size when first
seen ready (gVisor counts a Deno kernel at ~140 MB where bwrap charges ~88 MB, so a fixed budget
killed idle kernels of a sandbox with a few TypeScript contexts), up to the host's ``cap_mb``,
which stays clear of the host limit; and, once over, ``process_kb`` for every process (as the
host's share has for every task). A kernel being restarted is not a candidate. Each kill is
counted in ``KILLS_FILE`` before the signal, which the host reads as the sandbox's OOM-kill
count. Without a budget file (bwrap) the guard does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sandcastle.agent import layout

log = logging.getLogger("sandcastle.agent.memguard")

LIMITS_FILE = f"{layout.CHANNEL_DIR}/limits.json"
#: In the writable layer, where the host finds it; a file there also keeps runsc from mounting
#: a tmpfs over an empty /tmp.
KILLS_FILE = "/tmp/.sandcastle"
POLL_S = 0.05
#: Without a budget (bwrap, or the guard off) only the budget file is looked for, seldom; and
#: never less often than this when far below the budget.
IDLE_POLL_S = 1.0
#: The host limit lies at least ``HOST_MARGIN`` above what the guard allows (``cap_mb`` is set
#: that far below it). Checking every ``POLL_S`` therefore stops growth of up to
#: ``GROWTH_PER_S`` before the host's OOM killer would; further below the budget, the guard
#: checks less often with the same guarantee (the next look is due before growth at that rate
#: could cross the remaining room).
HOST_MARGIN = 256 * 2**20
GROWTH_PER_S = HOST_MARGIN / POLL_S
#: After a kill, a pause before the next look (and no next victim while this one lives).
SETTLE_S = 0.25


@dataclass(frozen=True)
class Victim:
    """A kernel the guard may kill: ``on_kill`` runs before the signal."""

    pid: int
    on_kill: Callable[[], None]


def memory_in_use(fd: int | None = None) -> int:
    """Bytes in use in the sandbox, as its ``/proc/meminfo`` counts them (read through ``fd``,
    an open ``/proc/meminfo``, when given: one system call instead of three)."""
    if fd is None:
        with open("/proc/meminfo", "rb") as meminfo:
            text = meminfo.read()
    else:
        text = os.pread(fd, 8192, 0)
    fields: dict[bytes, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(b":")
        if key in (b"MemTotal", b"MemFree"):
            fields[key] = int(value.split()[0]) * 1024
    return fields[b"MemTotal"] - fields[b"MemFree"]


def rss(pid: int) -> int:
    """Resident bytes of one process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def tree_rss(pid: int, children: dict[int, list[int]]) -> int:
    """Resident bytes of ``pid`` and all its descendants."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        total += rss(current)
        stack.extend(children.get(current, []))
    return total


def process_children() -> dict[int, list[int]]:
    """Parent pid → child pids, for every process in the sandbox."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{entry}/stat") as stat:
                # The command name may hold spaces and parentheses: the fields follow its last ')'.
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    return children


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie has freed its memory: not alive)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def kill_group(pid: int) -> None:
    """Kill a kernel and everything it started: it leads a session and a process group of its
    own (jupyter_client starts kernels with ``start_new_session``). By group, not by a list of
    pids taken earlier: under churn (a fork bomb) a listed pid may be reused by then, even by
    a thread of the agent itself."""
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signal.SIGKILL)


class MemoryGuard:
    def __init__(
        self,
        victims: Callable[[], list[Victim]],
        *,
        limits_file: str = LIMITS_FILE,
        kills_file: str = KILLS_FILE,
    ) -> None:
        self._victims = victims
        self._limits_file = Path(limits_file)
        self._kills_file = Path(kills_file)
        self._limits_seen: tuple[int, int] | None = None
        #: Never allow more than this in use, however many kernels run (None: no cap).
        self.cap: int | None = None
        #: Allowed for each process in the sandbox, on top of the budget.
        self.per_process = 0
        #: The last kernel killed: no other dies until it is gone and its memory freed.
        self._last_victim: int | None = None
        #: Each kernel's resident size when first seen. The victim is the one that grew most,
        #: not the largest: an idle Deno kernel is ~280 MB resident (its binary) from the start.
        self._first_seen: dict[int, int] = {}
        self.budget: int | None = None
        self.kills = 0
        #: Room left below what is allowed at the last look (None: not known).
        self.room: int | None = None
        self._meminfo: int | None = None

    def _refresh_budget(self) -> None:
        """Re-read the budget when the host wrote a new one (a restore brings a new file)."""
        try:
            st = self._limits_file.stat()
        except OSError:
            self.budget, self._limits_seen = None, None
            return
        if (st.st_ino, st.st_mtime_ns) == self._limits_seen:
            return
        self._limits_seen = (st.st_ino, st.st_mtime_ns)
        try:
            limits = json.loads(self._limits_file.read_text())
            self.budget = int(limits["budget_mb"]) * 2**20
            self.cap = int(limits["cap_mb"]) * 2**20 if "cap_mb" in limits else None
            self.per_process = int(limits.get("process_kb", 0)) * 1024
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self.budget, self.cap, self.per_process = None, None, 0

    def check(self) -> bool:
        """One look: over budget, kill the kernel that grew most (with its descendants), once
        the previous victim is gone. True if it killed."""
        self._refresh_budget()
        self.room = None
        if self.budget is None:
            return False
        victims = self._victims()
        # Kernels gone since are forgotten (and a reused pid is sized anew).
        self._first_seen = {
            v.pid: self._first_seen[v.pid] if v.pid in self._first_seen else rss(v.pid)
            for v in victims
        }
        if self._last_victim is not None and _alive(self._last_victim):
            return False
        in_use = self._in_use()
        allowed = self._capped(self.budget + sum(self._first_seen.values()))
        self.room = max(0, allowed - in_use)
        if in_use <= allowed or not victims:
            return False
        children = process_children()
        # Every process costs gVisor memory of its own (a fork bomb's 500 lean children, ~1.2
        # GB): allowed per process, as the host's share is, so the process limit stops a bomb.
        processes = sum(map(len, children.values()))
        allowed = self._capped(allowed + processes * self.per_process)
        if in_use <= allowed:
            return False
        sizes = {v.pid: tree_rss(v.pid, children) for v in victims}
        victim = max(victims, key=lambda v: (sizes[v.pid] - self._first_seen[v.pid], sizes[v.pid]))
        size = sizes[victim.pid]
        self.kills += 1
        # Counted first: the host reads the count once the context reports its kernel died.
        # Synced, or gVisor may hold the write in its own page cache where the host cannot see.
        with contextlib.suppress(OSError), open(self._kills_file, "w") as kills:
            kills.write(str(self.kills))
            kills.flush()
            os.fsync(kills.fileno())
        victim.on_kill()
        kill_group(victim.pid)
        self._last_victim = victim.pid
        log.warning(
            "%d MB in use, over the %d MB allowed: killed kernel %d (%d MB resident)",
            in_use >> 20, allowed >> 20, victim.pid, size >> 20,
        )  # fmt: skip
        return True

    def _in_use(self) -> int:
        if self._meminfo is None:
            self._meminfo = os.open("/proc/meminfo", os.O_RDONLY | os.O_CLOEXEC)
        try:
            return memory_in_use(self._meminfo)
        except OSError:
            os.close(self._meminfo)
            self._meminfo = None
            raise

    def next_look_s(self) -> float:
        """When to look again: soon near the budget, seldom far below it or without one."""
        if self.budget is None:
            return IDLE_POLL_S
        if self.room is None:
            return POLL_S
        return min(IDLE_POLL_S, max(POLL_S, (self.room + HOST_MARGIN) / GROWTH_PER_S))

    def _capped(self, allowed: int) -> int:
        return allowed if self.cap is None else min(allowed, self.cap)

    async def run_forever(self) -> None:
        # In the event loop itself: victims' callbacks touch the kernels' state, and a look is
        # a read of /proc/meminfo (the process table only when over budget).
        while True:
            try:
                killed = self.check()
            except OSError:
                killed = False
            await asyncio.sleep(SETTLE_S if killed else self.next_look_s())


#: The ``oom_score_adj`` of what the agent starts (kernels, processes): when the sandbox's memory
#: is full, the kernel's OOM killer takes the process with the highest score, and this bonus
#: (half the sandbox's memory, in its units) makes that one of them, never the agent, even while
#: the agent is momentarily the larger (reading a big output, starting a spare). Raising a score
#: needs no privilege.
EXPENDABLE_OOM_SCORE_ADJ = 500


def expendable(pid: int | None) -> None:
    """Mark ``pid`` as what the OOM killer should take before the agent."""
    if pid is None:
        return
    try:
        with open(f"/proc/{pid}/oom_score_adj", "w") as out:
            out.write(str(EXPENDABLE_OOM_SCORE_ADJ))
    except OSError as exc:  # it died already, or this /proc has no such file
        log.info("cannot raise %s's oom_score_adj: %s", pid, exc)

"""What a gVisor sandbox gets from the host beyond its ``config``, and what its agent is told.

The host cgroup is the only enforcer of memory under gVisor and its OOM kill takes the Sentry,
the whole sandbox: so the host grants the Sentry its own share on top of ``memory_mb`` (and
room for its threads in the pids limit), and the agent's memory guard (``agent/memguard.py``)
holds the sandbox's own use to a budget well inside it, counting its kills where the host
reads them. The flags every runsc of ours is started with, and the OCI binds, are here too: a
template build's untrusted steps (``templates/isolated.py``) are gVisor sandboxes as well.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sandcastle.agent import memguard
from sandcastle.runtime import beneath, cgroups
from sandcastle.runtime.base import LaunchSpec

#: The Sentry's own threads count against the host's pids limit: below ~1024 it breaks.
SENTRY_PIDS_MAX = 4096
#: Memory the host grants a sandbox beyond its ``memory_mb``: the Sentry's own heap (~100 MB)
#: and the pages of files its kernels have mapped (the Deno binary alone is ~200 MB), which
#: gVisor keeps in the sandbox's memory file where bwrap shares the host's page cache. Measured
#: after a first execution: 376 MB in use under gVisor, 99 MB under bwrap.
SENTRY_MEMORY_MB = 320
#: What the guard lets each guest process hold, in the sandbox's own count of memory in use:
#: a fork bomb of lean Python children reached ~2.8 MB per task there (1935 MB, 476 tasks).
GUARD_KB_PER_PROCESS = 3072
#: What each task costs the host beyond that, which the sandbox's count does not see (host stub
#: processes, the Sentry's bookkeeping): 0.5-1.1 MB per task in the same bomb (host usage
#: 245-530 MB above the sandbox's count at ~470 tasks, 70 MB at rest). The host grants it on
#: top of the guard's per-process allowance, and the guard's cap leaves it out, so a bomb the
#: guard lets run to ``pids_max`` stays below the host's limit.
SENTRY_KB_PER_TASK = 1024
#: What the agent's memory guard lets the sandbox hold beyond ``memory_mb`` and its kernels'
#: own resident size (which the guard adds itself): the agent and what gVisor keeps in use
#: outside any process (at rest ~260 MB anonymous, of which the kernels are most).
GUARD_BASE_MB = 128
#: However many kernels run, the guard acts this far below the host limit.
GUARD_HEADROOM_MB = 256


def runsc_argv(runsc: str, state: Path, network: str, *extra: str) -> list[str]:
    """How every gVisor sandbox of ours is started, a sandbox's or a build step's: the systrap
    platform, writes to the root going to its directory (``--overlay2=none``), our cgroups (not
    runsc's) and our seccomp list, with ``state`` holding runsc's records."""
    return [
        runsc,
        f"--root={state}",
        "--platform=systrap",
        f"--network={network}",
        *extra,
        "--overlay2=none",
        "--ignore-cgroups",
        "--oci-seccomp",
    ]


def oci_bind(source: Path, destination: str) -> dict[str, Any]:
    """A read-only bind mount of host ``source`` at ``destination``, as an OCI spec has it."""
    return {
        "destination": destination,
        "type": "bind",
        "source": str(source),
        "options": ["rbind", "ro"],
    }


def host_limits(spec: LaunchSpec) -> cgroups.Limits:
    return cgroups.Limits(
        vcpus=spec.vcpus,
        memory_mb=sentry_memory_mb(spec),
        pids_max=max(spec.pids_max, SENTRY_PIDS_MAX),
    )


def sentry_memory_mb(spec: LaunchSpec) -> int:
    """The host memory limit of a gVisor sandbox: its ``memory_mb`` and the Sentry's share.

    The host cgroup is the only enforcer, and hitting it kills the Sentry (the whole sandbox,
    not one process as under bwrap): the share must cover what the sandbox's own limits allow.
    """
    per_task_kb = GUARD_KB_PER_PROCESS + SENTRY_KB_PER_TASK
    return spec.memory_mb + SENTRY_MEMORY_MB + spec.pids_max * per_task_kb // 1024


def guard_cap_mb(spec: LaunchSpec) -> int:
    """The most the guard lets the sandbox's own count reach: the host limit less the headroom
    and what a full process table costs the host unseen from inside."""
    unseen_mb = spec.pids_max * SENTRY_KB_PER_TASK // 1024
    return sentry_memory_mb(spec) - GUARD_HEADROOM_MB - unseen_mb


def _read_count(layer_upper: Path, inner: str) -> int:
    """A small decimal count the sandbox wrote, read without trusting it: no links followed
    (on the way either), no FIFO waited on, only a regular file's first bytes; 0 when absent or
    not a count."""
    try:
        fd = beneath.open_read(layer_upper, inner)
    except (OSError, ValueError):
        return 0
    try:
        text = os.read(fd, 32)
    except OSError:
        return 0
    finally:
        os.close(fd)
    return int(text) if text.strip().isdigit() else 0


def write_guard_budget(spec: LaunchSpec, channel_dir: Path) -> None:
    """The guard's budget, in the channel directory (read-only inside): written before every
    start and restore, so a restored agent finds the new sandbox's."""
    budget = {
        "budget_mb": spec.memory_mb + GUARD_BASE_MB,
        "cap_mb": guard_cap_mb(spec),
        "process_kb": GUARD_KB_PER_PROCESS,
    }
    (channel_dir / Path(memguard.LIMITS_FILE).name).write_text(json.dumps(budget))


def guard_kills(layer_upper: Path) -> int:
    """How many kernels the guard killed, as it counted them in the sandbox's layer."""
    return _read_count(layer_upper, memguard.KILLS_FILE)

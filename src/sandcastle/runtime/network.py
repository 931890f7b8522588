"""Outbound network for a sandbox that asked for it: slirp4netns in user space.

slirp4netns plugs a tap device into the sandbox's network namespace and forwards its traffic
through the host's sockets (NAT, like a home router). ``--disable-host-loopback`` makes the
host's 127.0.0.1 (and so the server's ports) unreachable from inside; each sandbox has its own
slirp4netns and namespace, so sandboxes cannot reach one another.

slirp4netns must be root to enter a namespace owned by another user and to open
``/dev/net/tun``; it runs with ``--enable-sandbox`` (an empty root, capabilities dropped) and
``--enable-seccomp``, in the sandbox's cgroups (its CPU and memory count against the sandbox,
and destroying the sandbox kills it), detached so it outlives a server restart.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

from sandcastle.errors import RuntimeBackendError
from sandcastle.runtime import cgroups

#: slirp4netns answers DNS at 10.0.2.3 by forwarding to the host's resolver.
RESOLV_CONF = "nameserver 10.0.2.3\n"
READY_TIMEOUT_S = 10.0


def available() -> bool:
    return shutil.which("slirp4netns") is not None


async def attach(sandbox_pid: int, procs_files: list[str], log_path: Path) -> None:
    """Give the network namespace of ``sandbox_pid`` a tap device with outbound NAT."""
    if not available():
        raise RuntimeBackendError("slirp4netns is not installed: cannot give sandboxes a network")
    ready_r, ready_w = os.pipe()
    argv = [
        "slirp4netns",
        "--configure",
        "--mtu=65520",
        "--disable-host-loopback",
        "--enable-sandbox",
        "--enable-seccomp",
        f"--ready-fd={ready_w}",
        # By path, not pid: by pid it would first join the sandbox's (nested) user namespace,
        # from which the network namespace, owned by its parent, cannot be entered.
        "--netns-type=path",
        f"/proc/{sandbox_pid}/ns/net",
        "tap0",
    ]
    try:
        with open(log_path, "ab") as log:
            await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(ready_w,),
                start_new_session=True,
                preexec_fn=lambda: cgroups.join_groups(procs_files),
            )
    except OSError as exc:
        raise RuntimeBackendError(f"cannot start slirp4netns: {exc}") from exc
    finally:
        os.close(ready_w)
    try:
        ready = await asyncio.wait_for(asyncio.to_thread(os.read, ready_r, 1), READY_TIMEOUT_S)
    except TimeoutError as exc:
        raise RuntimeBackendError("slirp4netns did not come up") from exc
    finally:
        os.close(ready_r)
    if ready != b"1":
        raise RuntimeBackendError(f"slirp4netns failed; see {log_path}")

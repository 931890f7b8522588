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
from sandcastle.runtime.procs import run

#: slirp4netns answers DNS at 10.0.2.3 by forwarding to the host's resolver.
RESOLV_CONF = "nameserver 10.0.2.3\n"
READY_TIMEOUT_S = 10.0


def available() -> bool:
    return shutil.which("slirp4netns") is not None


async def attach(netns_path: str, procs_files: list[str], log_path: Path) -> None:
    """Give the network namespace at ``netns_path`` a tap device with outbound NAT."""
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
        netns_path,
        "tap0",
    ]
    try:
        log = await asyncio.to_thread(open, log_path, "ab")
        with log:
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
    # Read on the event loop, not in a thread: a thread blocked in read() stays blocked when
    # the wait times out, and closing the descriptor under it does not wake it.
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(ready_r, "rb", buffering=0)
    )
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            ready = await reader.read(1)
    except TimeoutError as exc:
        raise RuntimeBackendError("slirp4netns did not come up") from exc
    finally:
        transport.close()
    if ready != b"1":
        raise RuntimeBackendError(f"slirp4netns failed; see {log_path}")


async def create_netns(path: Path) -> str:
    """A new network namespace kept alive by a bind mount on ``path`` (its lo up); the path.

    Not ``ip netns``: its /run/netns is a shared mount, and slirp4netns's ``--enable-sandbox``
    unmounts everything it sees in its own mount namespace, which propagates back and unbinds
    every namespace there. This mount is private, so nothing another namespace does reaches it.
    """
    if not await asyncio.to_thread(os.path.ismount, path):
        await asyncio.to_thread(_mount_point_file, path)
        try:
            await run("unshare", f"--net={path}", "true")
            await run("mount", "--make-private", str(path))
            await run("nsenter", f"--net={path}", "ip", "link", "set", "lo", "up")
        except RuntimeBackendError as exc:
            await delete_netns(path)
            raise RuntimeBackendError(f"cannot create a network namespace: {exc}") from exc
    return str(path)


async def delete_netns(path: Path) -> None:
    if await asyncio.to_thread(os.path.ismount, path):
        await run("umount", str(path))
    await asyncio.to_thread(path.unlink, missing_ok=True)


def _mount_point_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()

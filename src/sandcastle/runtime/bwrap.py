"""The ``bwrap`` backend: bubblewrap namespaces, cgroup v1 limits, seccomp, an overlay root.

Layer, cgroups, run directories and channel are ``local.py``'s. bubblewrap runs as ``HOST_UID``,
an unprivileged host user, after joining the sandbox's cgroups. Inside, every namespace is new
(user, pid, mount, network, ipc, uts, cgroup), the user is ``HOST_UID`` mapped to itself, further
user namespaces are disabled, no capability is held, and the seccomp filter applies. Code that
escaped all of that would be an unprivileged user on the host. Network is only ``lo`` unless the
sandbox asked for the internet (``network.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from pathlib import Path

from sandcastle.agent import layout
from sandcastle.errors import RuntimeBackendError
from sandcastle.runtime import cgroups, layers, network, seccomp
from sandcastle.runtime.base import LaunchSpec
from sandcastle.runtime.local import DEFAULT_RUN_DIR, LocalRuntime, instance_name, sandbox_env

__all__ = ["BwrapRuntime", "instance_name"]


class BwrapRuntime(LocalRuntime):
    name = "bwrap"
    supports_memory_snapshots = False

    def __init__(
        self,
        sandboxes_dir: Path,
        *,
        instance: str,
        run_dir: Path = DEFAULT_RUN_DIR,
        bwrap_path: str | None = None,
    ) -> None:
        super().__init__(sandboxes_dir, instance=instance, run_dir=run_dir)
        self._bwrap = bwrap_path or shutil.which("bwrap") or "bwrap"

    async def _spawn(
        self,
        spec: LaunchSpec,
        layer: layers.LayerPaths,
        chan: Path,
        group: cgroups.SandboxCgroup,
        image: Path | None,
    ) -> None:
        if image is not None:
            raise RuntimeBackendError("the bwrap backend cannot restore memory images")
        args = [
            "--unshare-all",
            # The agent is the sandbox's PID 1 (and stays its init, not dumpable): without this
            # bwrap's own reaper would be, readable by the sandbox user, its environment and
            # command line the host's.
            "--as-pid-1",
            "--unshare-user",
            "--disable-userns",
            "--uid", str(layout.USER_UID),
            "--gid", str(layout.USER_GID),
            "--hostname", "sandbox",
            "--bind", str(layer.root), "/",
            "--proc", "/proc",
            "--dev", "/dev",
            "--tmpfs", "/dev/shm",
            "--ro-bind", str(chan), layout.CHANNEL_DIR,
            "--ro-bind", str(self._agent_package()), layout.AGENT_PACKAGE_DIR,
            "--new-session",
            "--clearenv",
        ]  # fmt: skip
        for key, value in sandbox_env(spec).items():
            args += ["--setenv", key, value]
        seccomp_fd = seccomp.bpf_fd()
        fds = [seccomp_fd]
        args += ["--seccomp", str(seccomp_fd)]
        # With the internet, bubblewrap reports the sandbox's pid (info) and waits (block)
        # until slirp4netns has plugged a tap device into the new network namespace.
        info_r = info_w = block_r = block_w = -1
        if spec.internet:
            info_r, info_w = os.pipe()
            block_r, block_w = os.pipe()
            fds += [info_w, block_r]
            args += ["--info-fd", str(info_w), "--block-fd", str(block_r)]
        args += ["--chdir", layout.USER_HOME]
        # Options through a descriptor: bwrap's command line (host paths, the user's variables)
        # stays out of the host's process list. The command itself must be on the real one.
        args_fd = _args_fd(args)
        fds.append(args_fd)
        argv = [
            self._bwrap, "--args", str(args_fd), "--",
            f"{layout.AGENT_VENV}/bin/python", "-m", "sandcastle.agent",
        ]  # fmt: skip
        try:
            proc = await self._exec_in_group(
                argv, spec.sandbox_id, group, as_sandbox_user=True, pass_fds=tuple(fds)
            )
        finally:
            for fd in (seccomp_fd, info_w, block_r, args_fd):
                if fd >= 0:
                    os.close(fd)
        self._reap(proc)
        if spec.internet:
            try:
                info = json.loads(await asyncio.to_thread(_read_all, info_r))
                await network.attach(
                    f"/proc/{int(info['child-pid'])}/ns/net",
                    group.procs_files(),
                    self._log_path(spec.sandbox_id),
                )
            except (ValueError, KeyError) as exc:
                raise RuntimeBackendError(f"bubblewrap gave no sandbox pid: {exc}") from exc
            finally:
                os.close(info_r)
                with contextlib.suppress(OSError):
                    os.write(block_w, b"1")
                os.close(block_w)


def _args_fd(args: list[str]) -> int:
    """A readable descriptor holding ``args`` NUL-separated, as ``bwrap --args`` wants."""
    fd = os.memfd_create("sandcastle-bwrap-args")
    data = b"".join(arg.encode() + b"\0" for arg in args)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _read_all(fd: int) -> bytes:
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    return data

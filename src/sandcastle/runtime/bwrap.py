"""The ``bwrap`` backend: bubblewrap namespaces, cgroup v1 limits, seccomp, an overlay root.

Layer, cgroups, run directories and channel are ``local.py``'s. bubblewrap runs as a host uid
claimed for this sandbox alone (``hostuid.py``), after joining the sandbox's cgroups, and joins a
user namespace that uid owns. Inside, every namespace is new (user, pid, mount, network, ipc,
uts, cgroup), the user is ``HOST_UID`` mapped to itself, further user namespaces are disabled,
no capability is held, and the seccomp filter applies. Code that escaped all of that would be an
unprivileged user on the host. Network is only ``lo`` unless the
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
from sandcastle.runtime import cgroups, hostuid, layers, network, seccomp
from sandcastle.runtime.base import LaunchSpec
from sandcastle.runtime.local import DEFAULT_RUN_DIR, LocalRuntime, instance_name, sandbox_env

__all__ = ["DEFAULT_UIDS", "BwrapRuntime", "instance_name"]

#: Host uids the sandboxes' user namespaces are owned by: far above any real user's
#: (``Settings.sandbox_uid_range``).
DEFAULT_UIDS = hostuid.UidRange(1_000_000_000, 1_000_065_535)


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
        uids: hostuid.UidRange = DEFAULT_UIDS,
    ) -> None:
        super().__init__(sandboxes_dir, instance=instance, run_dir=run_dir)
        self._bwrap = bwrap_path or shutil.which("bwrap") or "bwrap"
        uids.check_unused()
        self._uids = hostuid.HostUids(run_dir / "uids", uids, sandboxes_dir=sandboxes_dir)

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
        owner = await asyncio.to_thread(self._uids.claim, spec.sandbox_id)
        # The ends bubblewrap inherits are closed once it has them; ours (internet only) at
        # the end of the start.
        passed: list[int] = []
        with contextlib.ExitStack() as kept:
            try:
                userns_fd = await hostuid.user_namespace(owner)
                passed.append(userns_fd)
                seccomp_fd = seccomp.bpf_fd()
                passed.append(seccomp_fd)
                args = [
                    # Every namespace but the user one, made beforehand (``hostuid.py``) so that
                    # its owner is this sandbox's own host uid, not one all sandboxes share.
                    "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup",
                    "--unshare-net",
                    "--userns", str(userns_fd),
                    "--assert-userns-disabled",
                    # The agent is the sandbox's PID 1 (and stays its init, not dumpable):
                    # without this bwrap's own reaper would be, readable by the sandbox user,
                    # its environment and command line the host's.
                    "--as-pid-1",
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
                    "--seccomp", str(seccomp_fd),
                ]  # fmt: skip
                for key, value in sandbox_env(spec).items():
                    args += ["--setenv", key, value]
                # With the internet, bubblewrap reports the sandbox's pid (info) and waits
                # (block) until slirp4netns has plugged a tap device into the new network
                # namespace.
                info_r = block_w = -1
                if spec.internet:
                    info_r, info_w = os.pipe()
                    kept.callback(os.close, info_r)
                    passed.append(info_w)
                    block_r, block_w = os.pipe()
                    kept.callback(os.close, block_w)
                    passed.append(block_r)
                    args += ["--info-fd", str(info_w), "--block-fd", str(block_r)]
                args += ["--chdir", layout.USER_HOME]
                # Options through a descriptor: bwrap's command line (host paths, the user's
                # variables) stays out of the host's process list. The command must be on the
                # real one.
                args_fd = _args_fd(args)
                passed.append(args_fd)
                argv = [
                    self._bwrap, "--args", str(args_fd), "--",
                    f"{layout.AGENT_VENV}/bin/python", "-m", "sandcastle.agent",
                ]  # fmt: skip
                proc = await self._exec_in_group(
                    argv, spec.sandbox_id, group, as_uid=owner, pass_fds=tuple(passed)
                )
            finally:
                for number in passed:
                    os.close(number)
            self._reap(proc)
            if spec.internet:
                await self._attach_network(spec, group, info_r, block_w)

    async def _attach_network(
        self, spec: LaunchSpec, group: cgroups.SandboxCgroup, info_r: int, block_w: int
    ) -> None:
        """Plug slirp4netns into the sandbox, then let bubblewrap go on."""
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
            with contextlib.suppress(OSError):
                os.write(block_w, b"1")

    async def _destroy(self, sandbox_id: str) -> None:
        await super()._destroy(sandbox_id)
        # Only once its last process is gone: until then the uid owns the sandbox's user
        # namespace. (Processes that outlived every kill leave the claim file behind, but with
        # the sandbox's directory gone a later claim takes the uid over: the two then share
        # per-user counters until those processes die. Rare: they survived SIGKILL.)
        if not self._group(sandbox_id).pids():
            await asyncio.to_thread(self._uids.release, sandbox_id)


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

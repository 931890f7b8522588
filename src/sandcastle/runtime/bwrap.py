"""The ``bwrap`` backend: bubblewrap namespaces, cgroup v1 limits, seccomp, an overlay root.

Each sandbox gets, under ``<sandboxes_dir>/<id>/`` (durable, private to root):
- ``layer.img`` mounted at ``layer/``: its writable layer, size-limited (``layers.py``);
- ``agent.log``: the agent's stdout and stderr;

and under ``<run_dir>/<instance>/<id>/`` (root-owned, traversable, so the unprivileged
bubblewrap can reach it by path):
- ``root/``: the overlay joining template and layer (a host mount: it outlives a server restart);
- ``chan/agent.sock``: the host end of the agent channel; ``chan/`` is mounted read-only at
  ``/run/sandcastle`` so a restarted server can replace the socket under a running agent.

bubblewrap runs as ``HOST_UID``, an unprivileged host user, after joining the sandbox's cgroups.
Inside, every namespace is new (user, pid, mount, network, ipc, uts, cgroup), the user is uid
1000 mapped to ``HOST_UID``, further user namespaces are disabled, no capability is held, and the
seccomp filter applies. Code that escaped all of that would be an unprivileged user on the host.
Network is only ``lo`` unless the sandbox asked for the internet (``network.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import ClassVar

import sandcastle.agent
from sandcastle.agent import layout
from sandcastle.errors import RuntimeBackendError
from sandcastle.runtime import cgroups, layers, network, seccomp
from sandcastle.runtime.base import LaunchSpec, ProcessState, Runtime
from sandcastle.runtime.channel import AgentLink

DEFAULT_RUN_DIR = Path("/run/sandcastle")


def sandbox_env(spec: LaunchSpec) -> dict[str, str]:
    """The agent's environment (the kernels get it minus the agent-only variables)."""
    env = {
        "PATH": f"{layout.USER_VENV}/bin:/usr/local/bin:/usr/bin:/bin",
        "HOME": layout.USER_HOME,
        "USER": layout.USER_NAME,
        "LANG": "C.UTF-8",
        "TERM": "xterm-256color",
        "MPLBACKEND": "Agg",
        "PYTHONPATH": layout.AGENT_APP_DIR,
        "PYTHONDONTWRITEBYTECODE": "1",
        "SANDCASTLE_SANDBOX_ID": spec.sandbox_id,
        "SANDCASTLE_CWD": spec.cwd,
    }
    env.update(spec.env)
    return env


def instance_name(data_dir: Path) -> str:
    """A short stable name for one server's data directory."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:10]


class BwrapRuntime(Runtime):
    name: ClassVar[str] = "bwrap"
    supports_memory_snapshots: ClassVar[bool] = False

    def __init__(
        self,
        sandboxes_dir: Path,
        *,
        instance: str,
        run_dir: Path = DEFAULT_RUN_DIR,
        bwrap_path: str | None = None,
    ) -> None:
        self._dir = sandboxes_dir
        self._instance = instance
        self._run_dir = run_dir / instance
        self._shared_run_dir = run_dir
        self._bwrap = bwrap_path or shutil.which("bwrap") or "bwrap"
        self._agent_pkg: Path | None = None
        self._links: dict[str, AgentLink] = {}
        self._reapers: set[asyncio.Task[int]] = set()
        # One teardown at a time per sandbox: a DELETE and the reconciler may race to destroy.
        self._destroy_locks: dict[str, asyncio.Lock] = {}

    def _group(self, sandbox_id: str) -> cgroups.SandboxCgroup:
        return cgroups.SandboxCgroup(sandbox_id, self._instance)

    def _layer(self, sandbox_id: str) -> layers.LayerPaths:
        base = self._dir / sandbox_id
        return layers.LayerPaths(
            image=base / "layer.img", mount=base / "layer", root=self._run_dir / sandbox_id / "root"
        )

    def _pid_file(self, sandbox_id: str) -> Path:
        return self._dir / sandbox_id / "agent.pid"

    def _chan(self, sandbox_id: str) -> Path:
        return self._run_dir / sandbox_id / "chan"

    def _agent_package(self) -> Path:
        """A copy of the agent package where the unprivileged bubblewrap can read it.

        The installed package may live under a private directory (``/root/...``); the copy is
        keyed by content so a restarted server reuses it and running sandboxes keep theirs.
        """
        if self._agent_pkg is None:
            source = Path(sandcastle.agent.__file__).parent
            files = sorted(source.glob("*.py"))
            digest = hashlib.sha256()
            for file in files:
                digest.update(file.name.encode() + b"\0" + file.read_bytes())
            target = self._shared_run_dir / f"agent-{digest.hexdigest()[:16]}"
            if not target.is_dir():
                staging = self._shared_run_dir / f".agent-{os.getpid()}-{secrets.token_hex(4)}"
                staging.mkdir(parents=True)
                for file in files:
                    shutil.copy2(file, staging / file.name)
                os.chmod(staging, 0o755)
                try:
                    staging.rename(target)
                except OSError:
                    shutil.rmtree(staging, ignore_errors=True)  # another server won the race
            self._agent_pkg = target
        return self._agent_pkg

    async def launch(self, spec: LaunchSpec) -> AgentLink:
        if not (spec.rootfs / "usr").is_dir():
            raise RuntimeBackendError(f"template root filesystem missing at {spec.rootfs}")
        group = self._group(spec.sandbox_id)
        layer = self._layer(spec.sandbox_id)
        chan = self._chan(spec.sandbox_id)
        try:
            for directory in (self._shared_run_dir, self._run_dir, chan.parent):
                directory.mkdir(parents=True, exist_ok=True)
                os.chmod(directory, 0o711)
            chan.mkdir(exist_ok=True)
            (self._dir / spec.sandbox_id).mkdir(parents=True, exist_ok=True)
            seed = {"/etc/resolv.conf": network.RESOLV_CONF} if spec.internet else {}
            await layers.create(layer, spec.rootfs, spec.disk_mb, seed)
            group.create(
                cgroups.Limits(vcpus=spec.vcpus, memory_mb=spec.memory_mb, pids_max=spec.pids_max)
            )
            link = AgentLink(spec.sandbox_id, chan / "agent.sock", self._pid_file(spec.sandbox_id))
            await link.listen()
            self._links[spec.sandbox_id] = link
            await self._spawn(spec, layer, chan, group)
        except BaseException:
            await self.destroy(spec.sandbox_id)
            raise
        return link

    async def _spawn(
        self,
        spec: LaunchSpec,
        layer: layers.LayerPaths,
        chan: Path,
        group: cgroups.SandboxCgroup,
    ) -> None:
        argv = [
            self._bwrap,
            "--unshare-all",
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
            argv += ["--setenv", key, value]
        seccomp_fd = seccomp.bpf_fd()
        fds = [seccomp_fd]
        argv += ["--seccomp", str(seccomp_fd)]
        # With the internet, bubblewrap reports the sandbox's pid (info) and waits (block)
        # until slirp4netns has plugged a tap device into the new network namespace.
        info_r = info_w = block_r = block_w = -1
        if spec.internet:
            info_r, info_w = os.pipe()
            block_r, block_w = os.pipe()
            fds += [info_w, block_r]
            argv += ["--info-fd", str(info_w), "--block-fd", str(block_r)]
        argv += [
            "--chdir", layout.USER_HOME,
            "--",
            f"{layout.AGENT_VENV}/bin/python", "-m", "sandcastle.agent",
        ]  # fmt: skip
        procs_files = group.procs_files()
        log_path = self._dir / spec.sandbox_id / "agent.log"
        try:
            with open(log_path, "ab") as log:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    pass_fds=tuple(fds),
                    start_new_session=True,
                    preexec_fn=lambda: _enter_sandbox_user(procs_files),
                )
        except OSError as exc:
            raise RuntimeBackendError(f"cannot start bubblewrap: {exc}") from exc
        finally:
            for fd in (seccomp_fd, info_w, block_r):
                if fd >= 0:
                    os.close(fd)
        self._reap(proc)
        if spec.internet:
            try:
                info = json.loads(await asyncio.to_thread(_read_all, info_r))
                await network.attach(int(info["child-pid"]), procs_files, log_path)
            except (ValueError, KeyError) as exc:
                raise RuntimeBackendError(f"bubblewrap gave no sandbox pid: {exc}") from exc
            finally:
                os.close(info_r)
                with contextlib.suppress(OSError):
                    os.write(block_w, b"1")
                os.close(block_w)

    def _reap(self, proc: asyncio.subprocess.Process) -> None:
        # Our child until this server exits (then init reaps it): wait so it leaves no zombie.
        reaper = asyncio.create_task(proc.wait())
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)

    async def adopt(self, sandbox_id: str) -> AgentLink | None:
        if not self._group(sandbox_id).pids():
            return None
        link = self._links.get(sandbox_id)
        if link is None:
            link = AgentLink(
                sandbox_id, self._chan(sandbox_id) / "agent.sock", self._pid_file(sandbox_id)
            )
            await link.listen()
            self._links[sandbox_id] = link
        return link

    async def poll(self, sandbox_id: str) -> ProcessState:
        group = self._group(sandbox_id)
        return ProcessState(
            alive=bool(group.pids()),
            oom_kills=group.oom_kills(),
            memory_bytes=group.memory_bytes(),
            frozen=group.is_frozen(),
            cpu_seconds=group.cpu_seconds(),
        )

    async def pause(self, sandbox_id: str) -> None:
        group = self._group(sandbox_id)
        if not group.pids():
            raise RuntimeBackendError(f"sandbox {sandbox_id} has no processes to pause")
        await asyncio.to_thread(group.freeze)

    async def resume(self, sandbox_id: str) -> None:
        await asyncio.to_thread(self._group(sandbox_id).thaw)

    async def destroy(self, sandbox_id: str) -> None:
        lock = self._destroy_locks.setdefault(sandbox_id, asyncio.Lock())
        async with lock:
            await self._destroy(sandbox_id)
        if not lock.locked():
            self._destroy_locks.pop(sandbox_id, None)

    async def _destroy(self, sandbox_id: str) -> None:
        link = self._links.pop(sandbox_id, None)
        if link is not None:
            await link.aclose()
        group = self._group(sandbox_id)
        await asyncio.to_thread(group.kill_all)
        await asyncio.to_thread(group.remove)
        await layers.remove(self._layer(sandbox_id))
        for directory in (self._dir / sandbox_id, self._run_dir / sandbox_id):
            if directory.exists():
                await asyncio.to_thread(shutil.rmtree, directory, True)

    async def list_sandboxes(self) -> list[str]:
        ids = set(cgroups.list_sandbox_groups(self._instance))
        for directory in (self._dir, self._run_dir):
            if directory.is_dir():
                ids.update(p.name for p in directory.iterdir() if p.name.startswith("sb_"))
        return sorted(ids)

    def link(self, sandbox_id: str) -> AgentLink | None:
        return self._links.get(sandbox_id)

    async def aclose(self) -> None:
        for link in self._links.values():
            await link.aclose()
        self._links.clear()
        for reaper in list(self._reapers):
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper


def _enter_sandbox_user(procs_files: list[str]) -> None:
    """In the child before exec: join the cgroups (needs root), then drop to ``HOST_UID``."""
    cgroups.join_groups(procs_files)
    os.setgroups([])
    os.setgid(layout.HOST_GID)
    os.setuid(layout.HOST_UID)


def _read_all(fd: int) -> bytes:
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    return data

"""The ``bwrap`` backend: bubblewrap namespaces, cgroup v1 limits, seccomp, an overlay root.

Each sandbox gets, under ``<sandboxes_dir>/<id>/``:
- ``upper/`` and ``work/``: its writable layer, over the template's read-only root filesystem,
  joined by an overlay mount at ``root/`` (a host mount, so it outlives a server restart);
- ``chan/agent.sock``: the host end of the agent channel; ``chan/`` is mounted read-only at
  ``/run/sandcastle`` so a restarted server can replace the socket under a running agent;
- ``agent.log``: the agent's stdout and stderr.

Inside, every namespace is new (user, pid, mount, network with only ``lo``, ipc, uts, cgroup),
further user namespaces are disabled, no capability is held, and the seccomp filter applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import ClassVar

import sandcastle.agent
from sandcastle.agent import layout
from sandcastle.errors import RuntimeBackendError
from sandcastle.runtime import cgroups, seccomp
from sandcastle.runtime.base import LaunchSpec, ProcessState, Runtime
from sandcastle.runtime.channel import AgentLink

_SAFE_PATH_CHARS = frozenset(",:")  # overlay mount options split on these


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


class BwrapRuntime(Runtime):
    name: ClassVar[str] = "bwrap"

    def __init__(self, sandboxes_dir: Path, *, bwrap_path: str | None = None) -> None:
        if _SAFE_PATH_CHARS & set(str(sandboxes_dir)):
            raise RuntimeBackendError(
                f"the data directory may not contain ',' or ':': {sandboxes_dir}"
            )
        self._dir = sandboxes_dir
        self._bwrap = bwrap_path or shutil.which("bwrap") or "bwrap"
        self._links: dict[str, AgentLink] = {}
        self._reapers: set[asyncio.Task[int]] = set()

    def _paths(self, sandbox_id: str) -> dict[str, Path]:
        base = self._dir / sandbox_id
        return {
            "base": base,
            "upper": base / "upper",
            "work": base / "work",
            "root": base / "root",
            "chan": base / "chan",
            "socket": base / "chan" / "agent.sock",
            "log": base / "agent.log",
        }

    async def launch(self, spec: LaunchSpec) -> AgentLink:
        paths = self._paths(spec.sandbox_id)
        if not (spec.rootfs / "usr").is_dir():
            raise RuntimeBackendError(f"template root filesystem missing at {spec.rootfs}")
        group = cgroups.SandboxCgroup(spec.sandbox_id)
        try:
            for key in ("upper", "work", "root", "chan"):
                paths[key].mkdir(parents=True, exist_ok=True)
            await _run(
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir={spec.rootfs},upperdir={paths['upper']},workdir={paths['work']}",
                str(paths["root"]),
            )
            group.create(
                cgroups.Limits(vcpus=spec.vcpus, memory_mb=spec.memory_mb, pids_max=spec.pids_max)
            )
            link = AgentLink(spec.sandbox_id, paths["socket"])
            await link.listen()
            self._links[spec.sandbox_id] = link
            await self._spawn(spec, paths, group)
        except BaseException:
            await self.destroy(spec.sandbox_id)
            raise
        return link

    async def _spawn(
        self, spec: LaunchSpec, paths: dict[str, Path], group: cgroups.SandboxCgroup
    ) -> None:
        agent_pkg = Path(sandcastle.agent.__file__).parent
        argv = [
            self._bwrap,
            "--unshare-all",
            "--unshare-user",
            "--disable-userns",
            "--uid", str(layout.USER_UID),
            "--gid", str(layout.USER_GID),
            "--hostname", "sandbox",
            "--bind", str(paths["root"]), "/",
            "--proc", "/proc",
            "--dev", "/dev",
            "--tmpfs", "/dev/shm",
            "--ro-bind", str(paths["chan"]), layout.CHANNEL_DIR,
            "--ro-bind", str(agent_pkg), layout.AGENT_PACKAGE_DIR,
            "--new-session",
            "--clearenv",
        ]  # fmt: skip
        for key, value in sandbox_env(spec).items():
            argv += ["--setenv", key, value]
        seccomp_fd = seccomp.bpf_fd()
        argv += [
            "--seccomp", str(seccomp_fd),
            "--chdir", layout.USER_HOME,
            "--",
            f"{layout.AGENT_VENV}/bin/python", "-m", "sandcastle.agent",
        ]  # fmt: skip
        procs_files = group.procs_files()
        try:
            with open(paths["log"], "ab") as log:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    pass_fds=(seccomp_fd,),
                    start_new_session=True,
                    preexec_fn=lambda: cgroups.join_groups(procs_files),
                )
        except OSError as exc:
            raise RuntimeBackendError(f"cannot start bubblewrap: {exc}") from exc
        finally:
            os.close(seccomp_fd)
        # Reap it when it ends (it is our child until this server exits; then init reaps it).
        reaper = asyncio.create_task(proc.wait())
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)

    async def adopt(self, sandbox_id: str) -> AgentLink | None:
        if not cgroups.SandboxCgroup(sandbox_id).pids():
            return None
        link = self._links.get(sandbox_id)
        if link is None:
            link = AgentLink(sandbox_id, self._paths(sandbox_id)["socket"])
            await link.listen()
            self._links[sandbox_id] = link
        return link

    async def poll(self, sandbox_id: str) -> ProcessState:
        group = cgroups.SandboxCgroup(sandbox_id)
        return ProcessState(
            alive=bool(group.pids()),
            oom_kills=group.oom_kills(),
            memory_bytes=group.memory_bytes(),
        )

    async def destroy(self, sandbox_id: str) -> None:
        link = self._links.pop(sandbox_id, None)
        if link is not None:
            await link.aclose()
        group = cgroups.SandboxCgroup(sandbox_id)
        await asyncio.to_thread(group.kill_all)
        await asyncio.to_thread(group.remove)
        paths = self._paths(sandbox_id)
        if os.path.ismount(paths["root"]):
            try:
                await _run("umount", str(paths["root"]))
            except RuntimeBackendError:
                await _run("umount", "-l", str(paths["root"]))
        if paths["base"].exists():
            await asyncio.to_thread(shutil.rmtree, paths["base"], True)

    async def list_sandboxes(self) -> list[str]:
        ids = set(cgroups.list_sandbox_groups())
        if self._dir.is_dir():
            ids.update(p.name for p in self._dir.iterdir() if p.is_dir())
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


async def _run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeBackendError(f"{argv[0]} failed ({proc.returncode}): {out.decode().strip()}")

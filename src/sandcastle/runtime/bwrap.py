"""The ``bwrap`` backend: bubblewrap namespaces, cgroup v1 limits, seccomp, an overlay root.

Each sandbox gets, under ``<sandboxes_dir>/<id>/`` (durable, private to root):
- ``upper/`` and ``work/``: its writable layer over the template's read-only root filesystem;
- ``agent.log``: the agent's stdout and stderr;

and under ``<run_dir>/<id>/`` (root-owned, traversable, so the unprivileged bubblewrap can reach
it by path):
- ``root/``: the overlay mount joining template and layer (a host mount: it outlives a server
  restart, and the sandbox's processes keep running in it);
- ``chan/agent.sock``: the host end of the agent channel; ``chan/`` is mounted read-only at
  ``/run/sandcastle`` so a restarted server can replace the socket under a running agent.

bubblewrap itself runs as ``HOST_UID``, an unprivileged host user, after joining the sandbox's
cgroups. Inside, every namespace is new (user, pid, mount, network with only ``lo``, ipc, uts,
cgroup), the user is uid 1000 mapped to ``HOST_UID``, further user namespaces are disabled, no
capability is held, and the seccomp filter applies. Code that escaped all of that would be an
unprivileged user on the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
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


class BwrapRuntime(Runtime):
    name: ClassVar[str] = "bwrap"

    def __init__(
        self,
        sandboxes_dir: Path,
        *,
        run_dir: Path = DEFAULT_RUN_DIR,
        bwrap_path: str | None = None,
    ) -> None:
        for path in (sandboxes_dir, run_dir):
            if _SAFE_PATH_CHARS & set(str(path)):
                raise RuntimeBackendError(f"overlay paths may not contain ',' or ':': {path}")
        self._dir = sandboxes_dir
        self._run_dir = run_dir
        self._bwrap = bwrap_path or shutil.which("bwrap") or "bwrap"
        self._agent_pkg: Path | None = None
        self._links: dict[str, AgentLink] = {}
        self._reapers: set[asyncio.Task[int]] = set()

    def _paths(self, sandbox_id: str) -> dict[str, Path]:
        base = self._dir / sandbox_id
        run = self._run_dir / sandbox_id
        return {
            "base": base,
            "upper": base / "upper",
            "work": base / "work",
            "log": base / "agent.log",
            "run": run,
            "root": run / "root",
            "chan": run / "chan",
            "socket": run / "chan" / "agent.sock",
        }

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
            target = self._run_dir / f"agent-{digest.hexdigest()[:16]}"
            if not target.is_dir():
                staging = self._run_dir / f".agent-{os.getpid()}-{secrets.token_hex(4)}"
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
        paths = self._paths(spec.sandbox_id)
        if not (spec.rootfs / "usr").is_dir():
            raise RuntimeBackendError(f"template root filesystem missing at {spec.rootfs}")
        group = cgroups.SandboxCgroup(spec.sandbox_id)
        try:
            self._run_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self._run_dir, 0o711)
            for key in ("upper", "work", "root", "chan"):
                paths[key].mkdir(parents=True, exist_ok=True)
            os.chmod(paths["run"], 0o711)
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
        agent_pkg = self._agent_package()
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
                    preexec_fn=lambda: _enter_sandbox_user(procs_files),
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
        for key in ("base", "run"):
            if paths[key].exists():
                await asyncio.to_thread(shutil.rmtree, paths[key], True)

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


def _enter_sandbox_user(procs_files: list[str]) -> None:
    """In the child before exec: join the cgroups (needs root), then drop to ``HOST_UID``."""
    cgroups.join_groups(procs_files)
    os.setgroups([])
    os.setgid(layout.HOST_GID)
    os.setuid(layout.HOST_UID)


async def _run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeBackendError(f"{argv[0]} failed ({proc.returncode}): {out.decode().strip()}")

"""What both local backends share: layers, cgroups, run directories and the agent channel.

Each sandbox gets, under ``<sandboxes_dir>/<id>/`` (durable, private to root):
- ``layer.img`` mounted at ``layer/``: its writable layer, size-limited (``layers.py``);
- ``layer/agent.log``: the agent's stdout and stderr (and the backend's own messages). It lies
  on the sandbox's own disk image beside (not in) the layer, invisible inside, so whatever the
  sandbox's processes write to the descriptors they inherit counts against ``disk_mb`` and
  never grows the host's disk;
- ``agent.pid`` / ``agent.secret``: what proves a connection comes from the agent (``channel.py``);
- ``backend``: the name of the backend that started it (``routing.py`` routes by it);

and under ``<run_dir>/<instance>/<id>/`` (root-owned, traversable, so an unprivileged sandbox
process can reach it by path):
- ``root/``: the overlay joining template and layer (a host mount: it outlives a server restart);
- ``chan/agent.sock``: the host end of the agent channel; ``chan/`` is mounted read-only at
  ``/run/sandcastle`` so a restarted server can replace the socket under a running agent.

A backend subclass says how the sandbox's processes start (``_spawn``) inside the cgroups this
class prepares; the cgroup, not a pid, is the truth about whether they live.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import fcntl
import functools
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import sandcastle.agent
from sandcastle.agent import layout
from sandcastle.errors import RuntimeBackendError
from sandcastle.runtime import cgroups, layers, network, tmpfs
from sandcastle.runtime.base import LaunchSpec, ProcessState, Runtime, destroyed, paused
from sandcastle.runtime.channel import AgentLink

DEFAULT_RUN_DIR = Path("/run/sandcastle")
#: Ids of the sandboxes a backend boots to prepare a template (``prepare_template``).
TEMPLATE_BOOT_PREFIX = "tpl_"
#: In the agent package's copy: written last, so a copy cut short is never used.
_WHOLE = ".whole"
#: In a sandbox's durable directory: the name of the backend that started it.
BACKEND_FILE = "backend"
#: The whole environment of the tools that start sandboxes (bwrap, runsc): none of the
#: server's variables (database URLs, cloud credentials) may reach a process a sandbox can see.
TOOL_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}


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


def recorded_backend(sandboxes_dir: Path, sandbox_id: str) -> str | None:
    """The backend that started ``sandbox_id``, as it recorded itself (None: no record)."""
    try:
        return (sandboxes_dir / sandbox_id / BACKEND_FILE).read_text().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def instance_name(data_dir: Path) -> str:
    """A short stable name for one server's data directory."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:10]


class LocalRuntime(Runtime):
    """A backend running sandboxes as process trees on this host, one cgroup each."""

    #: Whether the agent's host pid identifies it (false where every sandbox process connects
    #: through one host process, as under gVisor: then only the channel secret does).
    trust_peer_pid: bool = True

    def __init__(self, sandboxes_dir: Path, *, instance: str, run_dir: Path = DEFAULT_RUN_DIR):
        self._dir = sandboxes_dir
        self._instance = instance
        self._run_dir = run_dir / instance
        self._shared_run_dir = run_dir
        self._agent_pkg: Path | None = None
        self._links: dict[str, AgentLink] = {}
        self._reapers: set[asyncio.Task[int]] = set()
        # One teardown at a time per sandbox: a DELETE and the reconciler may race to destroy.
        self._destroy_locks: dict[str, asyncio.Lock] = {}

    # --- paths -----------------------------------------------------------------------------

    def _group(self, sandbox_id: str) -> cgroups.SandboxCgroup:
        return cgroups.SandboxCgroup(sandbox_id, self._instance)

    def _layer(self, sandbox_id: str) -> layers.LayerPaths:
        base = self._dir / sandbox_id
        return layers.LayerPaths(
            image=base / "layer.img", mount=base / "layer", root=self._run_dir / sandbox_id / "root"
        )

    def _chan(self, sandbox_id: str) -> Path:
        return self._run_dir / sandbox_id / "chan"

    def _log_path(self, sandbox_id: str) -> Path:
        return self._layer(sandbox_id).mount / "agent.log"

    def _new_link(self, sandbox_id: str) -> AgentLink:
        base = self._dir / sandbox_id
        return AgentLink(
            sandbox_id,
            self._chan(sandbox_id) / "agent.sock",
            pid_file=base / "agent.pid" if self.trust_peer_pid else None,
            secret_file=base / "agent.secret",
        )

    def _agent_package(self) -> Path:
        """A copy of the agent package where an unprivileged sandbox process can read it.

        The installed package may live under a private directory (``/root/...``); the copy is
        keyed by content so a restarted server reuses it and running sandboxes keep theirs. It
        is a read-only tmpfs of its own (``tmpfs.py``): bound into a sandbox, it shows no host
        path. A marker written last says the copy is whole; servers copy one at a time.
        """
        if self._agent_pkg is None:
            source = Path(sandcastle.agent.__file__).parent
            # The whole package, subpackages included: a module split out of it must reach
            # the sandbox too.
            files = sorted(p.relative_to(source) for p in source.rglob("*.py"))
            digest = hashlib.sha256()
            for file in files:
                digest.update(str(file).encode() + b"\0" + (source / file).read_bytes())
            target = self._shared_run_dir / f"agent-{digest.hexdigest()[:16]}"
            self._shared_run_dir.mkdir(parents=True, exist_ok=True)
            with open(self._shared_run_dir / ".agent.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not (target / _WHOLE).exists():
                    tmpfs.unmount(target)  # a copy cut short, or one from before tmpfs
                    tmpfs.mount(target, size_kib=4096, mode=0o755)
                    for file in files:
                        (target / file).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(source / file, target / file)
                    (target / _WHOLE).touch()
                    tmpfs.make_read_only(target)
            self._agent_pkg = target
        return self._agent_pkg

    # --- start -----------------------------------------------------------------------------

    async def launch(self, spec: LaunchSpec) -> AgentLink:
        return await self._start(spec, image=None)

    async def _start(self, spec: LaunchSpec, image: Path | None) -> AgentLink:
        """Prepare layer, cgroups and channel, then spawn (from ``image`` if given)."""
        await asyncio.to_thread(self._agent_package)  # copied once, off the event loop
        if not (spec.rootfs / "usr").is_dir():
            raise RuntimeBackendError(f"template root filesystem missing at {spec.rootfs}")
        group = self._group(spec.sandbox_id)
        layer = self._layer(spec.sandbox_id)
        chan = self._chan(spec.sandbox_id)
        try:
            for directory in (self._shared_run_dir, self._run_dir, chan.parent):
                directory.mkdir(parents=True, exist_ok=True)
                os.chmod(directory, 0o711)
            # Bound into the sandbox: a tmpfs of its own shows no host path there.
            tmpfs.mount(chan, size_kib=64, mode=0o755)
            (self._dir / spec.sandbox_id).mkdir(parents=True, exist_ok=True)
            (self._dir / spec.sandbox_id / BACKEND_FILE).write_text(self.name)
            if not await asyncio.to_thread(os.path.ismount, layer.root):
                await layers.create(
                    layer,
                    spec.rootfs,
                    spec.disk_mb,
                    self._layer_seed(spec),
                    copy_from=self._image_layer(image),
                    user_files=self._user_seed(spec),
                )
            group.create(self._host_limits(spec))
            link = self._links.get(spec.sandbox_id) or self._new_link(spec.sandbox_id)
            self._links[spec.sandbox_id] = link
            if image is not None:
                self._adopt_secret(spec.sandbox_id, image)
            await link.listen()
            await self._spawn(spec, layer, chan, group, image)
        except BaseException:
            await self.destroy(spec.sandbox_id)
            raise
        return link

    def _layer_seed(self, spec: LaunchSpec) -> dict[str, str]:
        """Files a new writable layer starts with (path inside → content)."""
        return {"/etc/resolv.conf": network.RESOLV_CONF} if spec.internet else {}

    def _user_seed(self, spec: LaunchSpec) -> dict[str, str]:
        """Files a new writable layer starts with that the sandbox user may rewrite."""
        return {}

    def _image_layer(self, image: Path | None) -> Path | None:
        """The saved writable layer inside an image directory, if it holds one."""
        return None

    def _adopt_secret(self, sandbox_id: str, image: Path) -> None:
        """A restored agent remembers the secret it had when saved: the host must, too."""

    def _host_limits(self, spec: LaunchSpec) -> cgroups.Limits:
        """The host cgroup limits that give the sandbox's code what ``spec`` promises."""
        return cgroups.Limits(vcpus=spec.vcpus, memory_mb=spec.memory_mb, pids_max=spec.pids_max)

    @abc.abstractmethod
    async def _spawn(
        self,
        spec: LaunchSpec,
        layer: layers.LayerPaths,
        chan: Path,
        group: cgroups.SandboxCgroup,
        image: Path | None,
    ) -> None:
        """Start the sandbox's processes detached, inside ``group``."""

    async def _exec_in_group(
        self,
        argv: list[str],
        sandbox_id: str,
        group: cgroups.SandboxCgroup,
        *,
        as_uid: int | None,
        pass_fds: tuple[int, ...] = (),
    ) -> asyncio.subprocess.Process:
        """Start ``argv`` in its own session inside ``group``, output appended to the log.

        The log is a file, never a pipe: what is started may keep it open for its whole life.
        With ``as_uid`` the child drops to that host uid (and gid) after joining the cgroups.
        """
        procs_files = group.procs_files()

        def enter() -> None:
            cgroups.join_groups(procs_files)
            if as_uid is not None:
                os.setgroups([])
                os.setresgid(as_uid, as_uid, as_uid)
                os.setresuid(as_uid, as_uid, as_uid)

        try:
            log = await asyncio.to_thread(open, self._log_path(sandbox_id), "ab")
            with log:
                return await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    pass_fds=pass_fds,
                    env=TOOL_ENV,
                    start_new_session=True,
                    preexec_fn=enter,
                )
        except (OSError, subprocess.SubprocessError) as exc:
            raise RuntimeBackendError(f"cannot start {Path(argv[0]).name}: {exc}") from exc

    def _reap(self, proc: asyncio.subprocess.Process) -> None:
        # Our child until this server exits (then init reaps it): wait so it leaves no zombie.
        reaper = asyncio.create_task(proc.wait())
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)

    # --- observe, pause, destroy -----------------------------------------------------------

    async def adopt(self, sandbox_id: str) -> AgentLink | None:
        group = self._group(sandbox_id)
        if not group.pids():
            return None
        link = self._links.get(sandbox_id)
        if link is None:
            link = self._new_link(sandbox_id)
            if group.is_frozen():  # paused before this server started
                link.freeze(functools.partial(paused, sandbox_id))
            await link.listen()
            self._links[sandbox_id] = link
        return link

    async def poll(self, sandbox_id: str) -> ProcessState:
        group = self._group(sandbox_id)
        return ProcessState(
            alive=bool(group.pids()),
            oom_kills=group.oom_kills(),
            memory_bytes=group.memory_bytes(),
            memory_cache_bytes=group.memory_cache_bytes(),
            frozen=group.is_frozen(),
            cpu_seconds=group.cpu_seconds(),
        )

    async def pause(self, sandbox_id: str) -> None:
        group = self._group(sandbox_id)
        if not group.pids():
            raise RuntimeBackendError(f"sandbox {sandbox_id} has no processes to pause")
        await asyncio.to_thread(group.freeze)
        link = self._links.get(sandbox_id)
        if link is not None:
            link.freeze(functools.partial(paused, sandbox_id))

    async def resume(self, sandbox_id: str) -> None:
        await asyncio.to_thread(self._group(sandbox_id).thaw)
        link = self._links.get(sandbox_id)
        if link is not None:
            link.thaw()

    async def destroy(self, sandbox_id: str) -> None:
        lock = self._destroy_locks.setdefault(sandbox_id, asyncio.Lock())
        async with lock:
            await self._destroy(sandbox_id)
        if not lock.locked():
            self._destroy_locks.pop(sandbox_id, None)

    async def _destroy(self, sandbox_id: str) -> None:
        link = self._links.pop(sandbox_id, None)
        if link is not None:
            await link.aclose(functools.partial(destroyed, sandbox_id))
        await self._stop_processes(sandbox_id)
        await asyncio.to_thread(self._group(sandbox_id).remove)
        await layers.remove(self._layer(sandbox_id))
        await asyncio.to_thread(tmpfs.unmount, self._chan(sandbox_id))
        for directory in (self._dir / sandbox_id, self._run_dir / sandbox_id):
            if directory.exists():
                await asyncio.to_thread(shutil.rmtree, directory, True)

    async def _stop_processes(self, sandbox_id: str) -> None:
        await asyncio.to_thread(self._group(sandbox_id).kill_all)

    async def list_sandboxes(self) -> list[str]:
        return self._ids_with_prefix("sb_")

    async def list_template_boots(self) -> list[str]:
        return self._ids_with_prefix(TEMPLATE_BOOT_PREFIX)

    def _ids_with_prefix(self, prefix: str) -> list[str]:
        ids = {i for i in cgroups.list_sandbox_groups(self._instance) if i.startswith(prefix)}
        for directory in (self._dir, self._run_dir):
            if directory.is_dir():
                ids.update(p.name for p in directory.iterdir() if p.name.startswith(prefix))
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

"""The runtime interface: small, async and Popen-like, one implementation per backend.

The control plane decides *that* a sandbox exists; a backend decides *how* it runs. Backends own
their processes, limits, filesystems and the host end of each sandbox's agent channel. Every
method is async; none may block the event loop for long.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path

from sandcastle.errors import (
    LimitExceededError,
    RuntimeBackendError,
    SandboxEndedError,
    SandboxPausedError,
)
from sandcastle.runtime.channel import AgentLink


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a backend needs to start one sandbox."""

    sandbox_id: str
    rootfs: Path
    vcpus: int
    memory_mb: int
    disk_mb: int
    pids_max: int
    cwd: str
    env: dict[str, str] = field(default_factory=dict)
    #: Outbound network access (NAT); otherwise the sandbox has only loopback.
    internet: bool = False
    #: The backend to start it on, for a runtime that has several (``routing.py``); None is
    #: the runtime's default.
    backend: str | None = None


@dataclass(frozen=True)
class ProcessState:
    """What the host can observe about a sandbox's processes right now."""

    alive: bool
    oom_kills: int = 0
    memory_bytes: int = 0
    #: Of ``memory_bytes``, the page cache (reclaimable).
    memory_cache_bytes: int = 0
    frozen: bool = False
    cpu_seconds: float = 0.0


class Runtime(abc.ABC):
    """An isolation backend."""

    name: str
    #: Whether the backend can save and restore a sandbox's memory (hibernate, snapshots).
    supports_memory_snapshots: bool = False
    #: Whether sandboxes may ask for outbound network access (``LaunchSpec.internet``).
    supports_internet: bool = True
    #: Whether a sandbox with ``internet`` can be saved too (gVisor's host network cannot).
    supports_memory_snapshots_with_internet: bool = False

    @property
    def available(self) -> list[str]:
        """The backends sandboxes can be started on, the default first."""
        return [self.name]

    def backend(self, name: str | None) -> Runtime:
        """The backend ``name`` (None: the default), to start a sandbox on or ask what it can.

        Raises :class:`LimitExceededError` when this server cannot run it.
        """
        if name is None or name == self.name:
            return self
        raise LimitExceededError(
            f"the {name} backend is not available on this server (it runs {self.name})"
        )

    @abc.abstractmethod
    async def launch(self, spec: LaunchSpec) -> AgentLink:
        """Start the sandbox detached (it outlives the server) and return its agent link.

        Returns once the processes are started, not once the agent has connected; wait on the
        link for that. On failure everything already set up is undone before raising.
        """

    @abc.abstractmethod
    async def adopt(self, sandbox_id: str) -> AgentLink | None:
        """Re-attach to a sandbox started by an earlier server process.

        Returns its link (the agent redials on its own), or ``None`` if its processes are gone.
        """

    @abc.abstractmethod
    async def poll(self, sandbox_id: str) -> ProcessState:
        """Observe the sandbox's processes without changing anything."""

    @abc.abstractmethod
    async def pause(self, sandbox_id: str) -> None:
        """Stop every process of the sandbox in place (memory stays resident, no CPU used)."""

    @abc.abstractmethod
    async def resume(self, sandbox_id: str) -> None:
        """Let a paused sandbox's processes run again."""

    async def prepare_template(self, rootfs: Path) -> None:
        """Make later launches from ``rootfs`` fast, if this backend can (a no-op by default).

        Called in the background at start-up; launches meanwhile work, just cold.
        """
        return None

    async def prune_template_images(self) -> None:
        """Delete what ``prepare_template`` saved for templates not prepared by this process
        (deleted or rebuilt since); called once every preparation at start-up is done."""
        return None

    async def checkpoint(self, sandbox_id: str, image_dir: Path, *, keep_running: bool) -> int:
        """Save the running sandbox's memory into ``image_dir``; the image's size in bytes.

        ``keep_running=False`` hibernates: the processes exit and the sandbox's writable layer
        stays where it is, for ``restore`` under the same id. ``keep_running=True`` snapshots:
        the writable layer is saved into the image too and the sandbox goes on running.
        Raises ``SandboxBusyError`` while the agent is serving requests.
        """
        raise RuntimeBackendError(f"the {self.name} backend has no memory snapshots")

    async def restore(self, spec: LaunchSpec, image_dir: Path) -> AgentLink:
        """Start ``spec.sandbox_id`` from an image made by ``checkpoint``.

        A sandbox that was hibernated keeps its own writable layer; a new one (a fork) gets a
        copy of the layer saved in the image. Returns like ``launch``.
        """
        raise RuntimeBackendError(f"the {self.name} backend has no memory snapshots")

    @abc.abstractmethod
    async def destroy(self, sandbox_id: str) -> None:
        """Kill every process and remove limits, writable layer and socket. Idempotent."""

    @abc.abstractmethod
    async def list_sandboxes(self) -> list[str]:
        """Ids of all sandboxes this backend has resources for on this host."""

    async def list_template_boots(self) -> list[str]:
        """Ids of sandboxes left from preparing templates (a server that died meanwhile); only
        ``sandcastle purge`` destroys them: a running server may be preparing one now."""
        return []

    @abc.abstractmethod
    def link(self, sandbox_id: str) -> AgentLink | None:
        """The agent link of a launched or adopted sandbox, if this process holds one."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release this process's hold (links, listeners); sandboxes keep running."""


def paused(sandbox_id: str) -> SandboxPausedError:
    """What a call to the agent of a frozen sandbox answers (its code is not interrupted)."""
    return SandboxPausedError(
        f"sandbox {sandbox_id} was paused while this ran; its code is frozen where it was and"
        " goes on when the sandbox resumes"
    )


def destroyed(sandbox_id: str) -> SandboxEndedError:
    """What a call waiting on the agent of a sandbox being destroyed answers."""
    return SandboxEndedError(f"sandbox {sandbox_id} was destroyed while this request ran")

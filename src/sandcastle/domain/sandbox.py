"""The sandbox and its lifecycle state machine."""

from __future__ import annotations

import enum
import posixpath
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sandcastle.errors import ConflictError, InvalidRequestError


class SandboxStatus(enum.StrEnum):
    CREATING = "creating"
    RUNNING = "running"
    PAUSED = "paused"
    DESTROYED = "destroyed"
    ERROR = "error"


class TimeoutAction(enum.StrEnum):
    DESTROY = "destroy"
    HIBERNATE = "hibernate"


# Every legal move. ``error`` and ``destroyed`` are reachable from any live state; only
# ``destroyed`` is reachable from ``error`` (an errored sandbox can still be cleaned up).
_TRANSITIONS: dict[SandboxStatus, frozenset[SandboxStatus]] = {
    SandboxStatus.CREATING: frozenset(
        {SandboxStatus.RUNNING, SandboxStatus.ERROR, SandboxStatus.DESTROYED}
    ),
    SandboxStatus.RUNNING: frozenset(
        {SandboxStatus.PAUSED, SandboxStatus.ERROR, SandboxStatus.DESTROYED}
    ),
    SandboxStatus.PAUSED: frozenset(
        {SandboxStatus.RUNNING, SandboxStatus.ERROR, SandboxStatus.DESTROYED}
    ),
    SandboxStatus.ERROR: frozenset({SandboxStatus.DESTROYED}),
    SandboxStatus.DESTROYED: frozenset(),
}

LIVE_STATUSES = frozenset({SandboxStatus.CREATING, SandboxStatus.RUNNING, SandboxStatus.PAUSED})
#: Statuses whose deadline (``timeout_at``) is enforced.
DEADLINE_STATUSES = frozenset({SandboxStatus.RUNNING, SandboxStatus.PAUSED})


def can_transition(current: SandboxStatus, target: SandboxStatus) -> bool:
    return target in _TRANSITIONS[current]


def predecessors(target: SandboxStatus) -> list[SandboxStatus]:
    """Every status from which ``target`` may be reached, ``target`` itself included."""
    return [s for s in SandboxStatus if s is target or can_transition(s, target)]


def check_transition(sandbox_id: str, current: SandboxStatus, target: SandboxStatus) -> None:
    """Raise ``ConflictError`` unless ``current → target`` is a legal move."""
    if not can_transition(current, target):
        raise ConflictError(
            f"sandbox {sandbox_id} is {current.value} and cannot become {target.value}"
        )


@dataclass(frozen=True)
class ListFilter:
    """What a listing of sandboxes keeps: any of ``statuses``, the template, metadata values."""

    statuses: list[str] = field(default_factory=list)
    template: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SandboxConfig:
    vcpus: int
    memory_mb: int
    disk_mb: int


@dataclass(frozen=True)
class WarmPoolCheckout:
    """What create did with a warm pool: took a started sandbox from it (hit) or not."""

    hit: bool
    pool_id: str


@dataclass
class Sandbox:
    """A sandbox as the control plane records it."""

    id: str
    org_id: str
    project_id: str
    status: SandboxStatus
    config: SandboxConfig
    template: str
    created_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)
    started_at: datetime | None = None
    timeout_ms: int | None = None
    timeout_at: datetime | None = None
    timeout_action: TimeoutAction = TimeoutAction.DESTROY
    cwd: str | None = None
    status_reason: str | None = None
    destroyed_at: datetime | None = None
    paused_at: datetime | None = None
    internet: bool = False
    traffic_access_token: str | None = None
    envd_access_token: str | None = None
    #: Environment variables every process and execution in the sandbox starts with.
    env: dict[str, str] = field(default_factory=dict)
    warm_pool_checkout: WarmPoolCheckout | None = None
    oom_kills: int = 0
    #: The memory image of a hibernated sandbox (``paused`` with no processes); else None.
    snapshot_id: str | None = None
    #: A hibernated sandbox is resumed by the first request that needs its agent.
    auto_resume: bool = False
    #: The snapshot a fork was restored from.
    source_snapshot_id: str | None = None
    #: The backend it runs on (the server's default, or its template's pin).
    runtime: str = ""

    @property
    def hibernated(self) -> bool:
        return self.status is SandboxStatus.PAUSED and self.snapshot_id is not None

    def require_running(self) -> None:
        """Raise ``ConflictError`` unless the sandbox runs (or, hibernated with
        ``auto_resume``, will be resumed by ``SandboxService.agent``)."""
        if self.hibernated:
            if self.auto_resume:
                return
            raise ConflictError(
                f"sandbox {self.id} is hibernated; resume it with POST "
                f"/v1/sandboxes/{self.id}/resume (or create sandboxes with auto_resume)"
            )
        if self.status is not SandboxStatus.RUNNING:
            detail = f" ({self.status_reason})" if self.status_reason else ""
            raise ConflictError(
                f"sandbox {self.id} is {self.status.value}{detail}; it must be running"
            )


def normalise_cwd(cwd: str | None) -> str | None:
    """An absolute, normalised directory path (``/a/./b/../c`` → ``/a/c``), or ``None``."""
    if cwd is None:
        return None
    if not cwd.startswith("/") or "\x00" in cwd:
        raise InvalidRequestError("cwd must be an absolute path")
    normal = posixpath.normpath(cwd)
    # normpath keeps a leading "//"; POSIX lets it mean something else, we do not.
    return "/" + normal.lstrip("/")

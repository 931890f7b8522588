"""Bounds on what a sandbox may ask for: resources within the server's and its org's limits, a
timeout and its action, and the memory snapshots only some backends have.

Every refusal is a ``LimitExceededError`` (422) that names the bound, or the backend.
"""

from __future__ import annotations

from dataclasses import dataclass

from sandcastle.config import Settings
from sandcastle.domain.sandbox import TimeoutAction
from sandcastle.domain.tenancy import OrgLimits
from sandcastle.errors import LimitExceededError
from sandcastle.runtime.base import Runtime


@dataclass(frozen=True)
class Resources:
    vcpus: int
    memory_mb: int
    disk_mb: int


def resolve_resources(
    settings: Settings, vcpus: int | None, memory_mb: int | None, disk_mb: int | None
) -> Resources:
    """The request's resources (the server's defaults where absent), within its bounds."""
    s = settings
    resources = Resources(
        vcpus=vcpus or s.default_vcpus,
        memory_mb=memory_mb or s.default_memory_mb,
        disk_mb=disk_mb or s.default_disk_mb,
    )
    checks = [
        ("vcpus", resources.vcpus, 1, s.max_vcpus),
        ("memory_mb", resources.memory_mb, s.min_memory_mb, s.max_memory_mb),
        ("disk_mb", resources.disk_mb, s.min_disk_mb, s.max_disk_mb),
    ]
    for name, value, low, high in checks:
        if not low <= value <= high:
            raise LimitExceededError(f"{name} must be between {low} and {high} on this server")
    return resources


def org_resources(
    settings: Settings,
    vcpus: int | None,
    memory_mb: int | None,
    disk_mb: int | None,
    limits: OrgLimits | None,
) -> Resources:
    """The server's bounds, narrowed by the org's (defaults too, when the org's are lower)."""
    if limits is None:
        return resolve_resources(settings, vcpus, memory_mb, disk_mb)
    s = settings
    resources = resolve_resources(
        settings,
        vcpus or min(s.default_vcpus, limits.max_vcpus),
        memory_mb or min(s.default_memory_mb, limits.max_memory_mb),
        disk_mb,
    )
    if resources.vcpus > limits.max_vcpus:
        raise LimitExceededError(f"vcpus must be between 1 and {limits.max_vcpus} for this org")
    if resources.memory_mb > limits.max_memory_mb:
        raise LimitExceededError(
            f"memory_mb must be between {s.min_memory_mb} and {limits.max_memory_mb} for this org"
        )
    return resources


#: The shortest sandbox timeout: a deadline the reconciler (every 2 s) can still keep.
MIN_TIMEOUT_MS = 1000


def check_timeout(
    settings: Settings,
    runtime: Runtime,
    timeout_ms: int,
    action: TimeoutAction,
    *,
    internet: bool = False,
) -> None:
    if not MIN_TIMEOUT_MS <= timeout_ms <= settings.max_timeout_ms:
        raise LimitExceededError(
            f"timeout_ms must be between {MIN_TIMEOUT_MS} and {settings.max_timeout_ms}"
        )
    if action is TimeoutAction.HIBERNATE:
        require_memory_snapshots(runtime, "timeout_action 'hibernate'", internet=internet)


def saves_memory(runtime: Runtime, *, internet: bool = False) -> bool:
    """Whether ``runtime`` can save a sandbox's memory (one with the internet, if it has it)."""
    return runtime.supports_memory_snapshots and (
        not internet or runtime.supports_memory_snapshots_with_internet
    )


def require_memory_snapshots(runtime: Runtime, what: str, *, internet: bool = False) -> None:
    """``what`` (hibernate, snapshots, forks) needs a backend that saves memory (of a sandbox
    with the internet, if it has it)."""
    if not runtime.supports_memory_snapshots:
        raise LimitExceededError(
            f"{what} needs memory snapshots, which the {runtime.name} backend does not have"
        )
    if internet and not runtime.supports_memory_snapshots_with_internet:
        raise LimitExceededError(
            f"{what} is not available for sandboxes with network.internet on the"
            f" {runtime.name} backend (its host network cannot be saved)"
        )

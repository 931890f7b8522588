"""Sandboxes, snapshots, templates and the server's health."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from sandcastle_sdk.models.base import Model

SandboxStatus = Literal["creating", "running", "paused", "destroyed", "error"]
TimeoutAction = Literal["destroy", "hibernate"]


class SandboxConfig(Model):
    vcpus: int
    memory_mb: int
    disk_mb: int


class SandboxNetwork(Model):
    internet: bool = False


class WarmPoolCheckout(Model):
    id: str
    hit: bool


class SandboxInfo(Model):
    """A sandbox as the server describes it (``GET /v1/sandboxes/{id}``)."""

    id: str
    status: SandboxStatus
    template: str
    config: SandboxConfig
    created_at: datetime
    started_at: datetime | None = None
    timeout_at: datetime | None = None
    expires_at: datetime | None = None
    timeout_ms: int | None = None
    timeout_action: TimeoutAction | None = None
    status_reason: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    network: SandboxNetwork | None = None
    cwd: str | None = None
    auto_resume: bool | None = None
    snapshot_id: str | None = None
    source_snapshot_id: str | None = None
    oom_kills: int | None = None
    traffic_access_token: str | None = None
    warm_pool_checkout: WarmPoolCheckout | None = None


class SnapshotContext(Model):
    id: str
    language: str
    cwd: str | None = None


class Snapshot(Model):
    """A saved sandbox: files, configuration and contexts; new sandboxes start from it."""

    id: str
    sandbox_id: str
    template: str
    config: SandboxConfig
    network: SandboxNetwork
    metadata: dict[str, Any]
    contexts: list[SnapshotContext]
    size_bytes: int
    created_at: datetime
    cwd: str | None = None


class Template(Model):
    name: str
    #: What its sandboxes record as their template (``name+<org id>`` for an org's own).
    template_id: str
    public: bool
    #: What its sandboxes get when they ask for none: ``vcpus``, ``memory_mb``, ``disk_mb``.
    defaults: dict[str, int] = Field(default_factory=dict)
    build_id: str
    built_at: datetime
    runtime: str | None = None
    size_bytes: int
    snapshots: int


class TemplateBuild(Model):
    build_id: str
    name: str
    template_id: str
    public: bool
    status: Literal["building", "ready", "failed"]
    created_at: datetime
    finished_at: datetime | None = None
    #: Why it failed: the failing step (a Dockerfile's line) and its last log lines.
    error: str | None = None
    size_bytes: int | None = None
    #: The end of the build's log (on ``templates.get_build``).
    logs: str | None = None


class PoolStatus(Model):
    ready: int
    target: int


class Health(Model):
    status: str
    version: str
    runtime: str
    runtime_reason: str | None = None
    runtimes: list[str] = Field(default_factory=list)
    warm_pools: dict[str, PoolStatus]

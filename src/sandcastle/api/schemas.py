"""HTTP request and response bodies, and their conversion from domain objects."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from sandcastle.api.bounded import EnvVars, Metadata
from sandcastle.api.request_body import Integer, Language, PositiveInteger, RequestBody
from sandcastle.domain.execution import ExecutionResult
from sandcastle.domain.sandbox import Sandbox, SandboxStatus
from sandcastle.domain.snapshot import Snapshot
from sandcastle.errors import FieldError
from sandcastle.runtime.templates.catalogue import KEY_MAX_LENGTH

#: An absolute path without NUL: what ``normalise_cwd`` takes.
ABSOLUTE_PATH = "^/[^\\x00]*$"


def rfc3339(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


class NetworkBody(RequestBody):
    internet: bool = Field(default=False, description="Outbound access through NAT.")


class SandboxCreateBody(RequestBody):
    template: str | None = Field(default=None, min_length=1, max_length=KEY_MAX_LENGTH)
    vcpus: PositiveInteger | None = None
    memory_mb: PositiveInteger | None = None
    disk_mb: PositiveInteger | None = None
    metadata: Metadata = Field(default_factory=dict)
    timeout_ms: PositiveInteger | None = None
    timeout_action: Literal["destroy", "hibernate"] = "destroy"
    cwd: str | None = Field(default=None, min_length=1, max_length=4096, pattern=ABSOLUTE_PATH)
    network: NetworkBody = Field(default_factory=NetworkBody)
    project_id: str | None = Field(
        default=None,
        max_length=36,
        description="Project of the org (default: the key's project, else the org's first).",
    )
    workspace_id: str | None = Field(
        default=None, max_length=36, description="Workspace of that project."
    )
    sandbox_kind: Literal["runtime", "task", "evaluation", "world"] = "runtime"
    auto_resume: bool = Field(
        default=False,
        description="Once hibernated, resume on the first request that needs the sandbox.",
    )
    snapshot_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=40,
        description="Restore a new sandbox from this snapshot (template, config, cwd, network "
        "and contexts come from it; leave those out).",
    )


class TimeoutBody(RequestBody):
    timeout_ms: Integer = Field(ge=1, description="New deadline, counted from now.")
    timeout_action: Literal["destroy", "hibernate"] | None = None


class ConfigOut(BaseModel):
    vcpus: int
    memory_mb: int
    disk_mb: int


class WarmPoolCheckoutOut(BaseModel):
    hit: bool
    id: str


class SandboxOut(BaseModel):
    """``sandbox-get.txt``'s sandbox object (with ``fields``, only the fields asked for)."""

    id: str
    status: SandboxStatus
    config: ConfigOut
    template: str
    created_at: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    started_at: str | None = None
    timeout_ms: int | None = None
    timeout_at: str | None = None
    expires_at: str | None = Field(default=None, description="Alias of timeout_at.")
    timeout_action: Literal["destroy", "hibernate"] | None = None
    cwd: str | None = None
    snapshot_id: str | None = Field(default=None, description="Present only when paused.")
    warm_pool_checkout: WarmPoolCheckoutOut | None = None
    traffic_access_token: str | None = Field(
        default=None, description="Only when asked for with ``fields``."
    )
    network: NetworkBody | None = None
    oom_kills: int | None = Field(
        default=None, description="Out-of-memory kills inside the sandbox so far."
    )
    status_reason: str | None = Field(default=None, description="Why the sandbox is in error.")
    auto_resume: bool | None = Field(
        default=None, description="Whether a request resumes the sandbox once hibernated."
    )
    source_snapshot_id: str | None = Field(
        default=None, description="The snapshot this sandbox was created from."
    )


#: The ``fields`` mask accepts exactly the fields ``sandbox-get.txt`` names.
MASKABLE_FIELDS = frozenset(
    {
        "id", "status", "config", "template", "metadata", "started_at", "timeout_ms",
        "timeout_at", "expires_at", "timeout_action", "created_at", "cwd", "snapshot_id",
        "traffic_access_token",
    }
)  # fmt: skip


def sandbox_out(sandbox: Sandbox, fields: frozenset[str] | None = None) -> dict[str, Any]:
    """Serialise a sandbox. Optional fields appear only when they apply: ``cwd`` when one was
    configured, ``snapshot_id`` while hibernated (paused with its memory in an image; not for a
    freezer pause), ``warm_pool_checkout`` when create considered a pool, ``source_snapshot_id``
    for a fork, ``traffic_access_token`` only when asked for."""
    body: dict[str, Any] = {
        "id": sandbox.id,
        "status": sandbox.status.value,
        "config": {
            "vcpus": sandbox.config.vcpus,
            "memory_mb": sandbox.config.memory_mb,
            "disk_mb": sandbox.config.disk_mb,
        },
        "template": sandbox.template,
        "created_at": rfc3339(sandbox.created_at),
        "metadata": sandbox.metadata,
        "started_at": rfc3339(sandbox.started_at),
        "timeout_ms": sandbox.timeout_ms,
        "timeout_at": rfc3339(sandbox.timeout_at),
        "expires_at": rfc3339(sandbox.timeout_at),
        "timeout_action": sandbox.timeout_action.value,
    }
    if sandbox.cwd is not None:
        body["cwd"] = sandbox.cwd
    if sandbox.hibernated:
        body["snapshot_id"] = sandbox.snapshot_id
    if sandbox.warm_pool_checkout is not None:
        body["warm_pool_checkout"] = {
            "hit": sandbox.warm_pool_checkout.hit,
            "id": sandbox.warm_pool_checkout.pool_id,
        }
    body["network"] = {"internet": sandbox.internet}
    body["oom_kills"] = sandbox.oom_kills
    if sandbox.status_reason is not None:
        body["status_reason"] = sandbox.status_reason
    body["auto_resume"] = sandbox.auto_resume
    if sandbox.source_snapshot_id is not None:
        body["source_snapshot_id"] = sandbox.source_snapshot_id
    if fields is None:
        return body
    if "traffic_access_token" in fields and sandbox.traffic_access_token is not None:
        body["traffic_access_token"] = sandbox.traffic_access_token
    return {key: value for key, value in body.items() if key in fields}


_FIELD_NAME = "(?:" + "|".join(sorted(MASKABLE_FIELDS)) + ")"
#: ``id,status``: known names joined by commas (the query's documented pattern).
FIELDS_PATTERN = f"^{_FIELD_NAME}(?:,{_FIELD_NAME})*$"


def parse_fields(raw: str | None) -> frozenset[str] | None:
    """``fields=id,status`` → the mask; anything but known names joined by commas is a
    validation error (the route's query declares :data:`FIELDS_PATTERN` too)."""
    if raw is None:
        return None
    if re.fullmatch(FIELDS_PATTERN, raw) is None:
        names = {name.strip() for name in raw.split(",")}
        unknown = sorted(names - MASKABLE_FIELDS)
        message = (
            f"fields must be names joined by commas; unknown: {', '.join(unknown) or '(none)'}; "
            f"supported: {', '.join(sorted(MASKABLE_FIELDS))}"
        )
        raise FieldError("fields", message, location="query")
    return frozenset(raw.split(","))


class SandboxListOut(BaseModel):
    items: list[SandboxOut]
    next_cursor: str | None


class SnapshotContextOut(BaseModel):
    id: str
    language: str
    cwd: str | None


class SnapshotOut(BaseModel):
    """A snapshot: what ``POST /v1/sandboxes`` with ``snapshot_id`` restores."""

    id: str
    sandbox_id: str
    template: str
    size_bytes: int
    created_at: str
    config: ConfigOut
    contexts: list[SnapshotContextOut]
    cwd: str | None = None
    network: NetworkBody
    metadata: dict[str, Any]


class SnapshotListOut(BaseModel):
    items: list[SnapshotOut]
    next_cursor: str | None


def snapshot_out(snapshot: Snapshot) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": snapshot.id,
        "sandbox_id": snapshot.sandbox_id,
        "template": snapshot.template,
        "size_bytes": snapshot.size_bytes,
        "created_at": rfc3339(snapshot.created_at),
        "config": {
            "vcpus": snapshot.config.vcpus,
            "memory_mb": snapshot.config.memory_mb,
            "disk_mb": snapshot.config.disk_mb,
        },
        "contexts": [{"id": c.id, "language": c.language, "cwd": c.cwd} for c in snapshot.contexts],
        "network": {"internet": snapshot.internet},
        "metadata": snapshot.metadata,
    }
    if snapshot.cwd is not None:
        body["cwd"] = snapshot.cwd
    return body


class ExecuteBody(RequestBody):
    """``execute.txt``'s request."""

    #: Bounded so any request fits one agent-channel frame, whatever its escaping.
    code: str = Field(max_length=2_000_000)
    context_id: str | None = None
    language: Language | None = None
    env_vars: EnvVars = None
    timeout_ms: Integer = Field(default=30_000, ge=1, le=3_600_000)


class ExecuteItemOut(BaseModel):
    is_primary: bool
    text: str | None = None
    html: str | None = None
    markdown: str | None = None
    svg: str | None = None
    png: str | None = None
    jpeg: str | None = None
    pdf: str | None = None
    latex: str | None = None
    json_: Any = Field(default=None, alias="json")
    javascript: str | None = None
    extra: dict[str, Any] | None = None


class LogsOut(BaseModel):
    stdout: list[str]
    stderr: list[str]


class ErrorOut(BaseModel):
    name: str
    value: str
    traceback: str


class ExecuteOut(BaseModel):
    context_id: str
    items: list[ExecuteItemOut]
    logs: LogsOut
    error: ErrorOut | None = None
    execution_count: int | None = None


def execute_out(context_id: str, result: ExecutionResult) -> dict[str, Any]:
    items = []
    for item in result.items:
        out: dict[str, Any] = {"is_primary": item.is_primary, **item.fields}
        if item.extra:
            out["extra"] = item.extra
        items.append(out)
    error = None
    if result.error is not None:
        error = {
            "name": result.error.name,
            "value": result.error.value,
            "traceback": result.error.traceback,
        }
    return {
        "context_id": context_id,
        "items": items,
        "logs": {"stdout": result.stdout, "stderr": result.stderr},
        "error": error,
        "execution_count": result.execution_count,
    }


class PoolStatusOut(BaseModel):
    target: int
    ready: int


class HealthOut(BaseModel):
    status: Literal["ok"]
    version: str
    runtime: str
    #: Why this backend was chosen at start-up, e.g. ``gvisor unavailable: …``.
    runtime_reason: str | None = None
    #: The backends sandboxes can run on here (the default first): a template may pin one.
    runtimes: list[str] = []
    warm_pools: dict[str, PoolStatusOut]

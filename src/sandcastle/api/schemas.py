"""HTTP request and response bodies, and their conversion from domain objects."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sandcastle.domain.execution import ExecutionResult
from sandcastle.domain.sandbox import Sandbox, SandboxStatus


def rfc3339(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


class SandboxCreateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    template: str | None = Field(default=None, min_length=1, max_length=64)
    vcpus: int | None = Field(default=None, ge=1)
    memory_mb: int | None = Field(default=None, ge=1)
    disk_mb: int | None = Field(default=None, ge=1)
    metadata: dict[str, Any] = Field(default_factory=dict)
    timeout_ms: int | None = Field(default=None, ge=1)
    timeout_action: Literal["destroy", "hibernate"] = "destroy"
    cwd: str | None = Field(default=None, min_length=1, max_length=4096)


class ConfigOut(BaseModel):
    vcpus: int
    memory_mb: int
    disk_mb: int


class WarmPoolCheckoutOut(BaseModel):
    hit: bool
    id: str | None = None


class SandboxOut(BaseModel):
    """``sandbox-get.txt``'s sandbox object."""

    id: str
    status: SandboxStatus
    config: ConfigOut
    template: str
    created_at: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    started_at: str | None = None
    timeout_ms: int | None = None
    timeout_at: str | None = None
    expires_at: str | None = None
    timeout_action: Literal["destroy", "hibernate"] | None = None
    cwd: str | None = None
    snapshot_id: str | None = None
    warm_pool_checkout: WarmPoolCheckoutOut | None = None
    status_reason: str | None = Field(default=None, description="Why the sandbox is in error.")


def sandbox_out(sandbox: Sandbox) -> dict[str, Any]:
    """Serialise a sandbox; ``snapshot_id`` and ``warm_pool_checkout`` only when they apply."""
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
        "cwd": sandbox.cwd,
    }
    if sandbox.status_reason is not None:
        body["status_reason"] = sandbox.status_reason
    return body


class SandboxListOut(BaseModel):
    items: list[SandboxOut]
    next_cursor: str | None


class ExecuteBody(BaseModel):
    """``execute.txt``'s request."""

    model_config = ConfigDict(extra="forbid")

    code: str
    context_id: str | None = None
    language: str | None = None
    env_vars: dict[str, str] | None = None
    timeout_ms: int = Field(default=30_000, ge=1, le=3_600_000)


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


class HealthOut(BaseModel):
    status: Literal["ok"]
    version: str
    runtime: str

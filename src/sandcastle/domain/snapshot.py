"""A snapshot: a running sandbox's memory and files, saved so new sandboxes can start from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sandcastle.domain.sandbox import SandboxConfig


@dataclass(frozen=True)
class SnapshotContext:
    """A REPL context that was ready when the snapshot was taken (its kernel is in the image)."""

    id: str
    language: str
    cwd: str | None


@dataclass(frozen=True)
class Snapshot:
    id: str
    org_id: str
    project_id: str | None
    #: The sandbox it was taken of.
    sandbox_id: str
    template: str
    build_id: str | None
    #: The backend that made the image; only it can restore it.
    runtime: str
    config: SandboxConfig
    cwd: str | None
    internet: bool
    size_bytes: int
    created_at: datetime
    contexts: tuple[SnapshotContext, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

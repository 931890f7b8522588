"""Files in a sandbox and its processes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sandcastle_sdk.models.base import Model


class FileInfo(Model):
    name: str
    path: str
    type: Literal["file", "dir", "symlink", "other"]
    size: int
    mode: int
    mtime: datetime
    target: str | None = None


class Listing(Model):
    path: str
    entries: list[FileInfo]
    truncated: bool


class ProcessInfo(Model):
    """A process started in a sandbox, running or ended."""

    pid: int
    cmd: str
    args: list[str]
    cwd: str
    tag: str | None = None
    pty: bool
    running: bool
    exit_code: int | None = None
    signal: str | None = None
    killed_by: str | None = None
    started_at: datetime
    duration_ms: int


class ProcessResult(Model):
    """A command run to its end: its output (bounded; ``truncated`` says which was cut)."""

    process: ProcessInfo
    stdout: str
    stderr: str
    truncated: dict[str, bool]

    @property
    def exit_code(self) -> int | None:
        return self.process.exit_code


class ProcessEvent(Model):
    """One event of a process's stream: ``start``, ``stdout``, ``stderr``, ``pty``
    (``data_b64``), ``dropped`` (``bytes`` lost to a slow reader), ``error``, ``end``."""

    type: str
    text: str | None = None
    data_b64: str | None = None
    bytes: int | None = None
    name: str | None = None
    value: str | None = None
    traceback: str | None = None
    process: ProcessInfo | None = None

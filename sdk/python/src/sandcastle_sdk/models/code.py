"""Code: contexts, executions (whole or streamed), asynchronous runs and their artifacts."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from sandcastle_sdk.models.base import Model

RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class Context(Model):
    """A REPL: a live kernel whose state (variables, imports, cwd) outlasts one execution."""

    id: str
    sandbox_id: str
    language: str
    cwd: str | None = None
    status: Literal["creating", "ready", "error", "deleted"]
    created_at: datetime


class ExecutionError(Model):
    """What the code raised (or how the platform ended it: ``TimeoutError``, …)."""

    name: str
    value: str
    traceback: str


class Logs(Model):
    stdout: list[str]
    stderr: list[str]


class RichData(Model):
    """The representations of one rich output (MIME types without a field are in ``extra``)."""

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


class Result(RichData):
    """One rich output: the value of the last expression (``is_primary``) or a display."""

    is_primary: bool


class Execution(Model):
    """The outcome of running code: output, rich results, and the error if it raised."""

    context_id: str
    execution_count: int | None = None
    items: list[Result]
    logs: Logs
    error: ExecutionError | None = None

    @property
    def text(self) -> str | None:
        """The text of the primary result (the last expression's value), if any."""
        return next((item.text for item in self.items if item.is_primary), None)

    @property
    def stdout(self) -> str:
        return "".join(self.logs.stdout)

    @property
    def stderr(self) -> str:
        return "".join(self.logs.stderr)


class StreamEvent(RichData):
    """One event of a streamed execution: ``execution_count``, ``stdout``, ``stderr`` (their
    ``text``), ``result`` (the fields of a :class:`Result`), ``error``, ``end_of_execution``."""

    type: str
    execution_count: int | None = None
    is_primary: bool | None = None
    name: str | None = None
    value: str | None = None
    traceback: str | None = None
    context_id: str | None = None


class Artifact(Model):
    """A file a run produced (under the sandbox's artifacts directory), kept by the server."""

    id: str
    name: str
    mime_type: str
    size_bytes: int
    sha256: str | None
    context_id: str
    execution_count: int | None = None
    metadata: dict[str, Any]
    download_url: str | None = None
    preview_url: str | None = None
    created_at: datetime
    expires_at: datetime


class RunResult(Model):
    is_main_result: bool
    data: dict[str, Any]
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


class RunExecution(Model):
    results: list[RunResult]
    artifacts: list[Artifact]
    logs: Logs
    error: ExecutionError | None = None
    execution_count: int | None = None


class Run(Model):
    """An asynchronous run: queued, then running, then one of the final states."""

    id: str
    sandbox_id: str
    context_id: str | None = None
    status: RunStatus
    timeout_secs: int
    failure_reason: str | None = None
    execution: RunExecution | None = None
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    expires_at: datetime

    @property
    def done(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")

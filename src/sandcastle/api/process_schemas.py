"""Bodies, answers and stream events of ``/v1/sandboxes/{id}/processes`` (docs/PROCESSES.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, RootModel, model_validator

from sandcastle.api.bounded import EnvVars
from sandcastle.api.request_body import Integer, RequestBody
from sandcastle.api.schemas import ABSOLUTE_PATH, rfc3339
from sandcastle.api.streaming import ErrorEvent, KeepaliveEvent, StderrEvent, StdoutEvent
from sandcastle.services.processes import ProcessSpec

SignalName = Literal[
    "SIGHUP", "SIGINT", "SIGQUIT", "SIGKILL", "SIGUSR1", "SIGUSR2", "SIGTERM",
    "SIGCONT", "SIGSTOP", "SIGTSTP", "SIGWINCH",
]  # fmt: skip
#: 24 hours: a process's timeout may not be longer than a sandbox may live.
MAX_TIMEOUT_MS = 86_400_000


class TerminalSize(RequestBody):
    cols: Integer = Field(ge=1, le=1000)
    rows: Integer = Field(ge=1, le=1000)


class StartProcessBody(RequestBody):
    """Exactly one of ``cmd`` (run directly, with ``args``) or ``shell`` (a command line for
    ``/bin/bash -c``)."""

    cmd: str | None = Field(default=None, min_length=1, max_length=4096)
    args: list[Annotated[str, Field(max_length=131_072)]] = Field(default=[], max_length=4096)
    shell: str | None = Field(default=None, min_length=1, max_length=131_072)
    env: EnvVars = None
    cwd: str | None = Field(default=None, min_length=1, max_length=4096, pattern=ABSOLUTE_PATH)
    tag: str | None = Field(default=None, max_length=256, description="Your own label.")
    pty: TerminalSize | None = Field(default=None, description="Run on a terminal this size.")
    stdin: bool = Field(default=False, description="Keep stdin open for writes.")
    timeout_ms: Integer = Field(
        default=60_000,
        ge=0,
        le=MAX_TIMEOUT_MS,
        description="Killed (SIGKILL) past this; 0: no limit (it ends with the sandbox).",
    )

    @model_validator(mode="after")
    def _one_command(self) -> StartProcessBody:
        if (self.cmd is None) == (self.shell is None):
            raise ValueError("give exactly one of cmd (with args) or shell")
        if self.shell is not None and self.args:
            raise ValueError("args go with cmd; a shell command line carries its own")
        return self

    def spec(self) -> ProcessSpec:
        argv = [self.cmd, *self.args] if self.cmd is not None else []
        if self.shell is not None:
            argv = ProcessSpec.shell_argv(self.shell)
        return ProcessSpec(
            argv=argv,
            env=dict(self.env or {}),
            cwd=self.cwd,
            tag=self.tag,
            pty=None if self.pty is None else (self.pty.cols, self.pty.rows),
            stdin=self.stdin,
            timeout_ms=self.timeout_ms,
        )


class StdinBody(RequestBody):
    """Exactly one of ``text`` (sent as UTF-8) or ``data_b64`` (bytes, base64)."""

    text: str | None = Field(default=None, max_length=1_048_576)
    data_b64: str | None = Field(default=None, max_length=1_398_104)

    @model_validator(mode="after")
    def _one_kind(self) -> StdinBody:
        if (self.text is None) == (self.data_b64 is None):
            raise ValueError("give exactly one of text or data_b64")
        return self


class SignalBody(RequestBody):
    signal: SignalName = "SIGTERM"


class ProcessOut(BaseModel):
    pid: int = Field(description="The process id inside the sandbox.")
    cmd: str
    args: list[str]
    cwd: str
    tag: str | None
    pty: bool
    started_at: str = Field(description="RFC 3339.")
    running: bool
    exit_code: int | None = Field(description="Once exited normally.")
    signal: str | None = Field(description="The signal that ended it, e.g. SIGKILL.")
    killed_by: Literal["timeout"] | None = Field(description="Why the platform killed it.")
    duration_ms: int


class ProcessListOut(BaseModel):
    items: list[ProcessOut]


class ProcessRunOut(BaseModel):
    process: ProcessOut
    stdout: str = Field(description="A terminal's output, for a process on one.")
    stderr: str
    truncated: dict[str, int] = Field(
        description="Characters of each stream left out past the bound (1 MiB each)."
    )


class StdinOut(BaseModel):
    written: int


# --- stream events ---------------------------------------------------------------------------


class StartEvent(BaseModel):
    """First of a stream that started the process."""

    type: Literal["start"] = "start"
    process: ProcessOut


class TerminalEvent(BaseModel):
    type: Literal["pty"] = "pty"
    data_b64: str = Field(description="Raw terminal output, base64.")


class DroppedEvent(BaseModel):
    """Output lost before it could be sent (the agent keeps a bounded backlog)."""

    type: Literal["dropped"] = "dropped"
    bytes: int


class EndEvent(BaseModel):
    """Always the last event once the process exited."""

    type: Literal["end"] = "end"
    process: ProcessOut


ProcessEvent = Annotated[
    StartEvent
    | StdoutEvent
    | StderrEvent
    | TerminalEvent
    | DroppedEvent
    | ErrorEvent
    | EndEvent
    | KeepaliveEvent,
    Field(discriminator="type"),
]


class ProcessEventDoc(RootModel[ProcessEvent]):
    """One line of a process's NDJSON stream (the ``data`` of one SSE event)."""


def process_out(raw: dict[str, Any]) -> dict[str, Any]:
    """The agent's process info in the API's shape."""
    started = datetime.fromtimestamp(int(raw["started_at_ms"]) / 1000, UTC)
    return {
        "pid": raw["pid"],
        "cmd": raw["cmd"],
        "args": raw["args"],
        "cwd": raw["cwd"],
        "tag": raw.get("tag"),
        "pty": bool(raw.get("pty")),
        "started_at": rfc3339(started),
        "running": bool(raw["running"]),
        "exit_code": raw.get("exit_code"),
        "signal": raw.get("signal"),
        "killed_by": raw.get("killed_by"),
        "duration_ms": int(raw.get("duration_ms", 0)),
    }

"""Asynchronous code runs (``code-runs-list.txt``): the run, its status machine, its artifacts.

A run is submitted ``queued``, picked up by the dispatcher (``running``) and ends in exactly one
terminal status: ``succeeded`` (the code ran to its end without an exception), ``failed`` (it
raised, timed out, its kernel died, or the server restarted under it) or ``cancelled`` (by the
user, or because its sandbox ended). ``failure_reason`` says why in words for the last two.

::

    queued ──► running ──► succeeded
       │          ├──────► failed
       │          └──────► cancelled
       ├─────────────────► cancelled     (cancel before it started; sandbox gone)
       └─────────────────► failed        (it could not start: context deleted, ...)
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sandcastle.domain.execution import MIME_FIELDS, ExecutionResult
from sandcastle.errors import ConflictError

RUN_PREFIX = "run_"
ARTIFACT_PREFIX = "art_"


def new_run_id() -> str:
    return RUN_PREFIX + secrets.token_hex(8)


def new_artifact_id() -> str:
    return ARTIFACT_PREFIX + secrets.token_hex(12)


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})

_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.QUEUED: frozenset({RunStatus.RUNNING, RunStatus.CANCELLED, RunStatus.FAILED}),
    RunStatus.RUNNING: frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}


def can_transition(current: RunStatus, target: RunStatus) -> bool:
    return target in _TRANSITIONS[current]


def check_transition(run_id: str, current: RunStatus, target: RunStatus) -> None:
    """Raise ``ConflictError`` unless ``current → target`` is a legal move."""
    if not can_transition(current, target):
        raise ConflictError(f"run {run_id} is {current.value} and cannot become {target.value}")


class Reasons:
    """``failure_reason`` texts, so every path words the same cause the same way."""

    CANCELLED_BY_USER = "cancelled by user"
    SERVER_RESTARTED = (
        "the server restarted while the run was running; its output is lost (the agent "
        "interrupts work whose requester went away)"
    )
    SERVER_STOPPED = "the server shut down while the run was running"
    PAUSED = (
        "the sandbox was paused while the run was running; its code is frozen where it was "
        "and goes on when the sandbox resumes, but its output is not recorded"
    )

    @staticmethod
    def timeout(timeout_secs: int) -> str:
        return f"timeout: the run exceeded its timeout of {timeout_secs} s and was interrupted"

    @staticmethod
    def sandbox_ended(status: str, reason: str | None) -> str:
        if status == "destroyed":
            what = "the sandbox was destroyed"
            if reason == "timeout":
                what = "the sandbox was destroyed when it reached its timeout"
        else:
            what = "the sandbox failed" + (f": {reason}" if reason else "")
        return what

    @staticmethod
    def raised(name: str, value: str) -> str:
        return f"the code raised {name}: {value}" if value else f"the code raised {name}"


@dataclass(frozen=True)
class Artifact:
    """A file a run created or changed, copied out of the sandbox onto the server's disk."""

    id: str
    run_id: str
    sandbox_id: str
    context_id: str
    name: str
    mime_type: str
    size_bytes: int
    #: Hex SHA-256 of the stored bytes; ``None`` when the file was skipped (see ``metadata``).
    sha256: str | None
    created_at: datetime
    execution_count: int | None
    expires_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)
    #: The org whose quota the stored bytes count against (``org_max_artifact_mb``).
    org_id: str = ""
    #: Bytes the host really spends on it (zeros are holes), what the quotas count.
    stored_bytes: int = 0

    @property
    def stored(self) -> bool:
        return self.sha256 is not None


@dataclass(frozen=True)
class RunResult:
    """One displayed result: the raw MIME bundle, and whether it is the cell's value."""

    is_main_result: bool
    data: dict[str, Any]

    def fields(self) -> dict[str, Any]:
        """The bundle's well-known MIME types under their short names (``text``, ``png``, …)."""
        return {
            MIME_FIELDS[mime]: value for mime, value in self.data.items() if mime in MIME_FIELDS
        }


@dataclass(frozen=True)
class RunExecution:
    """What the code produced, as stored on the run (JSON-able through :meth:`to_json`)."""

    results: list[RunResult]
    stdout: list[str]
    stderr: list[str]
    error: dict[str, str] | None
    execution_count: int | None

    @classmethod
    def from_result(cls, result: ExecutionResult) -> RunExecution:
        reverse = {name: mime for mime, name in MIME_FIELDS.items()}
        results = [
            RunResult(
                is_main_result=item.is_primary,
                data={**{reverse[k]: v for k, v in item.fields.items()}, **item.extra},
            )
            for item in result.items
        ]
        error = None
        if result.error is not None:
            error = {
                "name": result.error.name,
                "value": result.error.value,
                "traceback": result.error.traceback,
            }
        return cls(
            results=results,
            stdout=list(result.stdout),
            stderr=list(result.stderr),
            error=error,
            execution_count=result.execution_count,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "results": [{"is_main_result": r.is_main_result, "data": r.data} for r in self.results],
            "stdout": self.stdout,
            "stderr": self.stderr,
            "error": self.error,
            "execution_count": self.execution_count,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RunExecution:
        return cls(
            results=[
                RunResult(bool(r.get("is_main_result")), dict(r.get("data") or {}))
                for r in raw.get("results") or []
            ],
            stdout=list(raw.get("stdout") or []),
            stderr=list(raw.get("stderr") or []),
            error=raw.get("error"),
            execution_count=raw.get("execution_count"),
        )


@dataclass(frozen=True)
class Run:
    id: str
    sandbox_id: str
    #: ``None`` while a run submitted without a context waits: its context starts with it.
    context_id: str | None
    language: str
    status: RunStatus
    timeout_secs: int
    created_at: datetime
    expires_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    #: Present once the code has run (even partly: a cancelled run keeps what it printed).
    execution: RunExecution | None = None
    artifacts: list[Artifact] = field(default_factory=list)
    failure_reason: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

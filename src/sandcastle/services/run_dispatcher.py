"""The run dispatcher: takes queued runs from the database and executes them.

One background task (started in the app's lifespan) owns a task group with one task per
executing run. On every wake-up (a submit, a run ending, a cancel) and at least every
:data:`POLL_S` it starts the head of every *lane* — the runs of one context, or a run that gets
a new context of its own — whose lane is idle, while the sandbox runs fewer than
``runs_max_concurrent_per_sandbox`` runs and the server fewer than ``runs_max_concurrent``.
Runs of a paused sandbox wait, and so do those of a hibernated one, unless it has
``auto_resume``: then the first of them resumes it (``SandboxService.agent``).

Executing a run reuses ``ExecutionService.run`` (the same event folding as ``/execute``),
between two ``files.snapshot``s of the context's directory whose difference becomes the run's
artifacts. The outcome — status, execution, failure reason, artifacts — is written in one
transaction, and only if the run is still ``running`` (a conditional update).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sandcastle.config import Settings
from sandcastle.domain.clock import Clock
from sandcastle.domain.context import Context
from sandcastle.domain.runs import (
    Artifact,
    Reasons,
    RunExecution,
    RunStatus,
    check_transition,
)
from sandcastle.domain.sandbox import Sandbox, SandboxStatus
from sandcastle.errors import (
    AgentError,
    ConflictError,
    NotFoundError,
    SandboxEndedError,
    SandboxMemoryFullError,
    SandboxPausedError,
    SandcastleError,
)
from sandcastle.runtime.channel import AgentLink
from sandcastle.services.active_runs import ActiveRun, ActiveRuns
from sandcastle.services.artifacts import ArtifactService, RunFiles
from sandcastle.services.contexts import ContextService
from sandcastle.services.executions import (
    AGENT_ANSWER_MARGIN_S,
    ExecuteRequest,
    ExecutionService,
    PreparedExecution,
)
from sandcastle.services.files import FilesSnapshot
from sandcastle.services.sandboxes import SandboxService
from sandcastle.store.models import RunRow
from sandcastle.store.runs import RunRepository
from sandcastle.store.sandboxes import SandboxRepository

log = logging.getLogger("sandcastle.runs")

#: Longest sleep between looks at the queue (a sandbox resumed, a missed wake-up).
POLL_S = 1.0
#: The agent enforces a run's timeout, and ``ExecutionService.run`` gives up on an agent that
#: does not answer ``AGENT_ANSWER_MARGIN_S`` later; this is the last resort beyond both.
HOST_GRACE_S = AGENT_ANSWER_MARGIN_S + 30.0
#: After the agent link failed, how long to wait for the sandbox's end to be recorded, so the
#: run says "the sandbox was destroyed" rather than "the agent went away".
SANDBOX_END_WAIT_S = 10.0
#: Bounds on the steps around the execution, which talk to an agent that may have been
#: frozen (the sandbox paused) or wedged: starting a context, a snapshot, copying artifacts.
CONTEXT_START_S = 120.0
SNAPSHOT_S = 60.0
COLLECT_S = 600.0
#: The sandbox's home: a context's directory when neither it nor the sandbox names one.
DEFAULT_CWD = "/home/user"


@dataclass
class _Outcome:
    status: RunStatus
    failure_reason: str | None = None
    execution: RunExecution | None = None
    artifacts: list[Artifact] = field(default_factory=list)
    #: It never started (its sandbox was paused meanwhile): back to the queue.
    requeue: bool = False
    #: The sandbox froze under it: its files cannot be read until the resume.
    frozen: bool = False


class RunDispatcher:
    def __init__(
        self,
        settings: Settings,
        runs: RunRepository,
        active: ActiveRuns,
        records: SandboxRepository,
        sandboxes: SandboxService,
        contexts: ContextService,
        executions: ExecutionService,
        artifacts: ArtifactService,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._runs = runs
        self._records = records
        self._sandboxes = sandboxes
        self._contexts = contexts
        self._executions = executions
        self._artifacts = artifacts
        self._clock = clock
        self._active = active

    def wake(self) -> None:
        self._active.wake()

    # --- the loop ------------------------------------------------------------------------------

    async def run_forever(self) -> None:
        async with asyncio.TaskGroup() as group:
            while True:
                try:
                    for active, row in await self._startable():
                        self._active.add(active)
                        group.create_task(self._execute(active, row), name=f"run-{row.id}")
                except Exception:  # one bad pass must not stop the dispatcher
                    log.exception("dispatching runs failed")
                await self._active.woken(POLL_S)

    async def _startable(self) -> list[tuple[ActiveRun, RunRow]]:
        room = self._settings.runs_max_concurrent - len(self._active)
        if room <= 0:
            return []
        rows = await self._runs.startable_heads()
        busy_lanes = {(a.sandbox_id, a.lane) for a in self._active}
        per_sandbox: dict[str, int] = {}
        for a in self._active:
            per_sandbox[a.sandbox_id] = per_sandbox.get(a.sandbox_id, 0) + 1
        chosen: list[tuple[ActiveRun, RunRow]] = []
        for row in rows:
            key = (row.sandbox_id, row.context_id or row.id)
            running = per_sandbox.get(row.sandbox_id, 0)
            if key in busy_lanes or running >= self._settings.runs_max_concurrent_per_sandbox:
                continue
            busy_lanes.add(key)
            per_sandbox[row.sandbox_id] = running + 1
            chosen.append((ActiveRun(row.id, row.sandbox_id, key[1]), row))
            if len(chosen) >= room:
                break
        return chosen

    # --- one run -------------------------------------------------------------------------------

    async def _execute(self, active: ActiveRun, row: RunRow) -> None:
        """Claim, run and settle one run. Never raises (it lives in the dispatcher's group)."""
        try:
            if await self._runs.claim(row.id, self._clock()):
                outcome = await self._run(active, row)
                if outcome.requeue:
                    await self._runs.requeue(row.id)
                else:
                    await self._settle(active, outcome)
        except asyncio.CancelledError:
            # The server is shutting down; the agent call was cancelled, which interrupts it.
            execution = RunExecution.from_result(active.partial)
            stopped = _Outcome(RunStatus.FAILED, Reasons.SERVER_STOPPED, execution)
            await _shielded(self._settle(active, stopped))
            raise
        except Exception as exc:  # a bug must fail the run, not the dispatcher
            log.exception("run %s failed in the dispatcher", row.id)
            with contextlib.suppress(Exception):
                await self._settle(active, _Outcome(RunStatus.FAILED, f"internal error: {exc}"))
        finally:
            self._active.discard(row.id)
            self._active.wake()

    async def _run(self, active: ActiveRun, row: RunRow) -> _Outcome:
        sandbox = await self._records.find(row.sandbox_id)
        if sandbox is None or sandbox.status in (SandboxStatus.DESTROYED, SandboxStatus.ERROR):
            status, reason = (sandbox.status.value, sandbox.status_reason) if sandbox else ("", "")
            return _Outcome(RunStatus.CANCELLED, Reasons.sandbox_ended(status, reason))
        if sandbox.status is not SandboxStatus.RUNNING and not (
            sandbox.hibernated and sandbox.auto_resume
        ):
            return _Outcome(RunStatus.QUEUED, requeue=True)
        try:
            async with asyncio.timeout(CONTEXT_START_S):
                link = await self._sandboxes.agent(sandbox)
                context = await self._context_of(active, row, link, sandbox)
        except TimeoutError:
            return _Outcome(RunStatus.FAILED, "the sandbox's agent did not start the context")
        except NotFoundError as exc:
            return _Outcome(RunStatus.FAILED, f"the run's context cannot be used: {exc.message}")
        except SandboxMemoryFullError as exc:
            return _Outcome(RunStatus.FAILED, f"could not start a context: {exc.message}")
        except (AgentError, ConflictError) as exc:
            return await self._lost(active, sandbox.id, exc, None)
        except SandcastleError as exc:
            return _Outcome(RunStatus.FAILED, f"could not start a context: {exc.message}")
        cwd = context.cwd or sandbox.cwd or DEFAULT_CWD
        before = await self._snapshot(link, cwd)
        if active.cancel_reason is not None:
            return _Outcome(RunStatus.CANCELLED, active.cancel_reason)
        outcome = await self._execute_code(active, row, sandbox, link, context)
        if outcome.execution is None or outcome.frozen or active.sandbox_end is not None:
            return outcome
        after = await self._snapshot(link, cwd) if before is not None else None
        if before is not None and after is not None:
            run_files = RunFiles(
                run_id=row.id,
                sandbox_id=sandbox.id,
                org_id=sandbox.org_id,
                context_id=context.id,
                cwd=cwd,
                execution_count=outcome.execution.execution_count,
                created_at=self._clock(),
                expires_at=self._clock(),  # replaced by the run's own when it is settled
            )
            # A run's outcome must not wait forever on its files: past the bound, what was
            # copied is kept and the rest is not.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(COLLECT_S):
                    await self._artifacts.collect(
                        link, run_files, before, after, into=outcome.artifacts
                    )
        return outcome

    async def _snapshot(self, link: AgentLink, cwd: str) -> FilesSnapshot | None:
        try:
            async with asyncio.timeout(SNAPSHOT_S):
                return await self._artifacts.snapshot(link, cwd)
        except (TimeoutError, SandboxPausedError):
            return None

    async def _context_of(
        self, active: ActiveRun, row: RunRow, link: AgentLink, sandbox: Sandbox
    ) -> Context:
        if row.context_id is not None:
            return await self._contexts.find(sandbox.id, row.context_id)
        context = await self._contexts.start(link, sandbox, row.language, sandbox.cwd)
        active.lane = context.id
        await self._runs.set_context(row.id, context.id)
        return context

    async def _execute_code(
        self, active: ActiveRun, row: RunRow, sandbox: Sandbox, link: AgentLink, context: Context
    ) -> _Outcome:
        async def fold(event: dict[str, Any]) -> None:
            active.partial.add_event(event)

        request = ExecuteRequest(
            code=row.code,
            context_id=context.id,
            env_vars=dict(row.env_vars or {}) or None,
            timeout_ms=row.timeout_secs * 1000,
        )
        prepared = PreparedExecution(sandbox, link, context.id, request)
        task = asyncio.create_task(self._executions.run(prepared, on_event=fold))
        active.exec_task = task
        try:
            await asyncio.wait({task}, timeout=row.timeout_secs + HOST_GRACE_S)
        finally:
            active.exec_task = None
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        partial = RunExecution.from_result(active.partial)
        if task.cancelled():
            if active.sandbox_end is not None:
                return _Outcome(RunStatus.CANCELLED, active.sandbox_end, partial)
            if active.cancel_reason is not None:
                return _Outcome(RunStatus.CANCELLED, active.cancel_reason, partial)
            return _Outcome(RunStatus.FAILED, Reasons.timeout(row.timeout_secs), partial)
        error = task.exception()
        if isinstance(error, SandboxPausedError):
            return _Outcome(RunStatus.FAILED, Reasons.PAUSED, partial, frozen=True)
        if isinstance(error, NotFoundError):
            return _Outcome(
                RunStatus.FAILED, f"the run's context is gone: {error.message}", partial
            )
        if isinstance(error, AgentError | SandboxEndedError):
            return await self._lost(active, sandbox.id, error, partial)
        if error is not None:
            raise error
        execution = RunExecution.from_result(task.result())
        if execution.error is None:
            return _Outcome(RunStatus.SUCCEEDED, None, execution)
        return _Outcome(RunStatus.FAILED, _failure_reason(execution, row.timeout_secs), execution)

    async def _lost(
        self,
        active: ActiveRun,
        sandbox_id: str,
        exc: SandcastleError,
        execution: RunExecution | None,
    ) -> _Outcome:
        """The agent became unreachable: say so, or that the sandbox ended if that is why."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SANDBOX_END_WAIT_S):
                await active.ended.wait()
        if active.sandbox_end is not None:
            return _Outcome(RunStatus.CANCELLED, active.sandbox_end, execution)
        sandbox = await self._records.find(sandbox_id)
        if sandbox is not None and sandbox.status in (SandboxStatus.DESTROYED, SandboxStatus.ERROR):
            reason = Reasons.sandbox_ended(sandbox.status.value, sandbox.status_reason)
            return _Outcome(RunStatus.CANCELLED, reason, execution)
        return _Outcome(
            RunStatus.FAILED, f"lost the connection to the sandbox's agent: {exc}", execution
        )

    async def _settle(self, active: ActiveRun, outcome: _Outcome) -> None:
        """Write the outcome, with its artifacts, in one transaction — if still ``running``."""
        check_transition(active.run_id, RunStatus.RUNNING, outcome.status)
        now = self._clock()
        expires = now + timedelta(seconds=self._settings.run_retention_s)
        artifacts = [dataclasses.replace(a, expires_at=expires) for a in outcome.artifacts]
        written = False
        try:
            written = await self._runs.settle(
                active.run_id,
                {
                    "status": outcome.status.value,
                    "completed_at": now,
                    "expires_at": expires,
                    "execution": None if outcome.execution is None else outcome.execution.to_json(),
                    "failure_reason": outcome.failure_reason,
                    "env_vars": None,
                },
                artifacts,
            )
        finally:
            if not written and artifacts:
                await self._artifacts.remove_runs([active.run_id])


def _failure_reason(execution: RunExecution, timeout_secs: int) -> str:
    error = execution.error or {}
    name, value = str(error.get("name", "Error")), str(error.get("value", ""))
    # The agent reports its own timeout as this error (sandcastle.agent.kernels).
    if name == "TimeoutError" and value.startswith("execution exceeded its timeout"):
        return Reasons.timeout(timeout_secs)
    if name == "OutOfMemoryError":
        return f"out of memory: {value}"
    if name == "KernelDiedError":
        return f"the context's kernel died: {value}"
    return Reasons.raised(name, value)


async def _shielded(work: Coroutine[Any, Any, None]) -> None:
    """Finish ``work`` even though the caller is being cancelled (again)."""
    task = asyncio.ensure_future(work)
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            continue
        except Exception:  # best effort on the way out
            log.exception("settling a run at shutdown failed")

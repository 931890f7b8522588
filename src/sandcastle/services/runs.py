"""Asynchronous code runs: submit, list, get, cancel; recovery at start-up; retention.

The queue is the ``code_runs`` table, not memory: a run is committed ``queued`` before the
submit returns, and :class:`~sandcastle.services.run_dispatcher.RunDispatcher` picks it up from
there, so a queued run survives a server crash. Every status change goes through
``domain.runs.check_transition`` or a conditional ``UPDATE … WHERE status = …``, so two writers
(a cancel and the dispatcher, a sandbox's end and a run's end) never both win.

Decisions (docs/RUNS.md): a run that was ``running`` when the server died ends ``failed`` with
"the server restarted" — the agent interrupts work whose host connection is gone, so there is
no result to resume. Runs and their artifacts are kept ``run_retention_s`` after they end.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from sandcastle.config import Settings
from sandcastle.domain.clock import Clock
from sandcastle.domain.languages import normalise_language
from sandcastle.domain.limits import LIST_MAX_BYTES
from sandcastle.domain.runs import (
    Artifact,
    Reasons,
    Run,
    RunExecution,
    RunStatus,
    new_run_id,
)
from sandcastle.domain.sandbox import LIVE_STATUSES
from sandcastle.errors import ConflictError, FieldError, LimitExceededError, NotFoundError
from sandcastle.services.active_runs import ActiveRuns
from sandcastle.services.artifacts import ArtifactService
from sandcastle.services.auth import Principal
from sandcastle.services.contexts import ContextService
from sandcastle.services.diskspace import ensure_free
from sandcastle.services.executions import check_env_vars
from sandcastle.services.run_settlement import RunSettlement, retained_from
from sandcastle.services.sandboxes import SandboxService
from sandcastle.store.models import RunRow
from sandcastle.store.runs import RunRepository

log = logging.getLogger("sandcastle.runs")

#: Expired runs deleted per purge transaction.
PURGE_BATCH = 500


@dataclass(frozen=True)
class SubmitRun:
    code: str
    language: str | None = None
    context_id: str | None = None
    env_vars: dict[str, str] | None = None
    timeout_secs: int | None = None


def to_run(row: RunRow, artifacts: list[Artifact]) -> Run:
    return Run(
        id=row.id,
        sandbox_id=row.sandbox_id,
        context_id=row.context_id,
        language=row.language,
        status=RunStatus(row.status),
        timeout_secs=row.timeout_secs,
        created_at=row.created_at,
        expires_at=row.expires_at,
        started_at=row.started_at,
        completed_at=row.completed_at,
        cancel_requested_at=row.cancel_requested_at,
        execution=None if row.execution is None else RunExecution.from_json(row.execution),
        artifacts=artifacts,
        failure_reason=row.failure_reason,
    )


class RunService:
    def __init__(
        self,
        settings: Settings,
        runs: RunRepository,
        sandboxes: SandboxService,
        contexts: ContextService,
        artifacts: ArtifactService,
        active: ActiveRuns,
        settlement: RunSettlement,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._runs = runs
        self._sandboxes = sandboxes
        self._contexts = contexts
        self._artifacts = artifacts
        self._active = active
        self._settlement = settlement
        self._clock = clock

    # --- submit --------------------------------------------------------------------------------

    async def submit(self, principal: Principal, sandbox_id: str, request: SubmitRun) -> Run:
        """Queue a run; it starts when its context (and the sandbox's run limit) allow.

        The sandbox may be paused: its runs wait until it resumes. Without ``context_id`` the
        run gets a new context when it starts (recorded on the run then).
        """
        sandbox = await self._sandboxes.get(principal, sandbox_id)
        ensure_free(self._settings, "start a run")
        if sandbox.status not in LIVE_STATUSES:
            raise ConflictError(f"sandbox {sandbox_id} is {sandbox.status.value}")
        check_env_vars(request.env_vars)
        timeout = request.timeout_secs or self._settings.run_default_timeout_secs
        if not 1 <= timeout <= self._settings.run_max_timeout_secs:
            raise LimitExceededError(
                f"timeout_secs must be between 1 and {self._settings.run_max_timeout_secs}"
            )
        if request.context_id is None:
            language = normalise_language(request.language)
        else:
            context = await self._contexts.find(sandbox_id, request.context_id)
            language = context.language
            if request.language is not None and normalise_language(request.language) != language:
                raise FieldError(
                    "language", f"context {context.id} runs {language}, not {request.language!r}"
                )
        now = self._clock()
        row = RunRow(
            id=new_run_id(),
            sandbox_id=sandbox_id,
            context_id=request.context_id,
            language=language,
            code=request.code,
            env_vars=dict(request.env_vars or {}),
            timeout_secs=timeout,
            status=RunStatus.QUEUED.value,
            created_at=now,
            expires_at=now + timedelta(seconds=self._settings.run_retention_s),
        )
        waiting = await self._runs.enqueue(
            row, max_queued=self._settings.runs_max_queued_per_sandbox
        )
        if waiting is not None:
            raise LimitExceededError(
                f"sandbox {sandbox_id} already has {waiting} runs queued (the limit)"
            )
        self._active.wake()
        return to_run(row, [])

    # --- queries -------------------------------------------------------------------------------

    async def get(self, principal: Principal, sandbox_id: str, run_id: str) -> Run:
        await self._sandboxes.get(principal, sandbox_id)
        row = await self._runs.get(run_id)
        if row is None or row.sandbox_id != sandbox_id:
            raise NotFoundError(f"run {run_id} not found in sandbox {sandbox_id}")
        artifacts = await self._artifacts.of_runs([row.id])
        return to_run(row, artifacts[row.id])

    async def list(
        self,
        principal: Principal,
        sandbox_id: str,
        *,
        status: RunStatus | None = None,
        context_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Run], str | None]:
        """Newest first; keyset pagination on the submission number, stable while runs are
        submitted (they are newer than any cursor) or change status."""
        await self._sandboxes.get(principal, sandbox_id)
        # Runs carry their output (up to MAX_OUTPUT_BYTES each): a page also ends once it holds
        # LIST_MAX_BYTES, so neither the answer nor the server's memory grows with ``limit``.
        rows, next_cursor = await self._runs.page(
            sandbox_id,
            status=status,
            context_id=context_id,
            cursor=cursor,
            limit=limit,
            max_bytes=LIST_MAX_BYTES,
        )
        artifacts = await self._artifacts.of_runs([row.id for row in rows])
        return [to_run(row, artifacts[row.id]) for row in rows], next_cursor

    # --- cancel --------------------------------------------------------------------------------

    async def cancel(self, principal: Principal, sandbox_id: str, run_id: str) -> Run:
        """A queued run never starts; a running one is interrupted (and ends ``cancelled``
        shortly after). ``cancel_requested_at`` is set at once; a finished run is a conflict."""
        await self.get(principal, sandbox_id, run_id)
        now = self._clock()
        await self._runs.cancel(
            run_id,
            now,
            {
                "status": RunStatus.CANCELLED.value,
                "completed_at": now,
                "failure_reason": Reasons.CANCELLED_BY_USER,
                "env_vars": None,
                "expires_at": retained_from(self._settings, now),
            },
        )
        run = await self.get(principal, sandbox_id, run_id)
        if run.status is RunStatus.RUNNING:
            self._active.cancel(run_id, Reasons.CANCELLED_BY_USER)
        elif run.cancel_requested_at != now:
            raise ConflictError(f"run {run_id} has already finished: it is {run.status.value}")
        return run

    # --- sandbox end, recovery, retention ------------------------------------------------------

    async def maintain_forever(self) -> None:
        """Background task: settle runs of sandboxes that ended unseen; purge expired runs."""
        loop = asyncio.get_running_loop()
        next_purge = loop.time()
        while True:
            try:
                await self._settlement.sweep()
                if loop.time() >= next_purge:
                    next_purge = loop.time() + self._settings.run_purge_interval_s
                    purged = await self.purge_expired()
                    if purged:
                        log.info("purged %d expired runs", purged)
            except Exception:  # one bad pass must not stop maintenance
                log.exception("run maintenance failed")
            await asyncio.sleep(min(self._settings.reconcile_interval_s, 5.0))

    async def recover(self) -> None:
        """At start-up, before the dispatcher: runs left ``running`` by a dead server fail."""
        now = self._clock()
        ids = await self._runs.fail_running(
            {
                "status": RunStatus.FAILED.value,
                "completed_at": now,
                "failure_reason": Reasons.SERVER_RESTARTED,
                "env_vars": None,
                "expires_at": retained_from(self._settings, now),
            }
        )
        if ids:
            log.warning("%d runs were running when the server stopped: marked failed", len(ids))
            # Files half-copied before the crash: no row names them.
            await self._artifacts.remove_runs(ids)
        await self._settlement.sweep()

    async def purge_expired(self) -> int:
        """Delete finished runs past ``expires_at``, their artifacts' rows and files."""
        now = self._clock()
        purged = 0
        while True:
            ids = await self._runs.purge_batch(now, PURGE_BATCH)
            if not ids:
                return purged
            await self._artifacts.remove_runs(ids)
            purged += len(ids)

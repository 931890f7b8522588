"""A sandbox's REPL contexts: create, list, get, delete, restart, interrupt.

A context is a row before the agent starts its kernel (``creating``), ``ready`` once the agent
has it, ``error`` if the agent refused, and ``deleted`` after a delete. Only ``creating`` and
``ready`` contexts are visible; anything else, and any context of another sandbox or tenant,
is "not found". Executions resolve their context here too.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import select

from sandcastle.domain import ids
from sandcastle.domain.context import VISIBLE_STATUSES, Context, ContextStatus
from sandcastle.domain.languages import normalise_language
from sandcastle.domain.sandbox import Sandbox, SandboxStatus, normalise_cwd
from sandcastle.errors import FieldError, InvalidRequestError, NotFoundError
from sandcastle.runtime.channel import AgentLink, AgentRequestError
from sandcastle.services.auth import Principal
from sandcastle.services.sandboxes import SandboxService
from sandcastle.store.db import Database
from sandcastle.store.models import ContextRow

#: Agent error codes of ``context.create`` that blame one request field.
_FIELD_ERRORS = {"invalid": "language", "invalid_cwd": "cwd"}
#: The agent keeps a started spare kernel per language so the next context starts at once. A
#: Deno kernel holds ~175 MB: a context and a spare would leave a 512 MB sandbox ~65 MB, so
#: smaller sandboxes start each TypeScript context cold (~1 s) instead.
SPARE_MIN_MEMORY_MB = {"typescript": 1024}


def _to_context(row: ContextRow) -> Context:
    return Context(
        id=row.id,
        sandbox_id=row.sandbox_id,
        language=row.language,
        cwd=row.cwd,
        status=ContextStatus(row.status),
        created_at=row.created_at,
    )


class ContextService:
    def __init__(self, db: Database, sandboxes: SandboxService) -> None:
        self._db = db
        self._sandboxes = sandboxes

    # --- create ----------------------------------------------------------------------------

    async def create(
        self, principal: Principal, sandbox_id: str, language: str | None, cwd: str | None
    ) -> Context:
        """Start a context in a running sandbox; ``cwd`` is created if missing."""
        sandbox = await self._sandboxes.get(principal, sandbox_id)
        family = normalise_language(language)
        try:
            want_cwd = normalise_cwd(cwd)
        except InvalidRequestError as exc:
            raise FieldError("cwd", exc.message) from exc
        sandbox.require_running()
        link = await self._sandboxes.agent(sandbox)
        return await self.start(link, sandbox, family, want_cwd or sandbox.cwd)

    async def start(
        self, link: AgentLink, sandbox: Sandbox, language: str, cwd: str | None
    ) -> Context:
        """Write the row, then have the agent start the kernel (``language`` is a family)."""
        row = ContextRow(
            id=ids.new_context_id(),
            sandbox_id=sandbox.id,
            language=language,
            cwd=cwd,
            status=ContextStatus.CREATING.value,
            created_at=datetime.now(UTC),
        )
        async with self._db.session() as session:
            session.add(row)
        params = {
            "context_id": row.id,
            "language": language,
            "cwd": cwd,
            "keep_spare": sandbox.config.memory_mb >= SPARE_MIN_MEMORY_MB.get(language, 0),
        }
        try:
            reply = await link.call("context.create", params)
        except AgentRequestError as exc:
            await self._set_status(row.id, ContextStatus.ERROR)
            field = _FIELD_ERRORS.get(exc.code)
            if field is not None:
                raise FieldError(field, exc.message) from exc
            raise
        except BaseException:
            # Cancelled or the link failed: the row must not stay "creating".
            await asyncio.shield(self._set_status(row.id, ContextStatus.ERROR))
            raise
        async with self._db.session() as session:
            stored = await session.get(ContextRow, row.id)
            assert stored is not None
            stored.status = ContextStatus.READY.value
            # The agent reports the directory the kernel really runs in (its default if none).
            if isinstance(reply.get("cwd"), str):
                stored.cwd = reply["cwd"]
            return _to_context(stored)

    # --- queries ---------------------------------------------------------------------------

    async def list(self, principal: Principal, sandbox_id: str) -> list[Context]:
        """The sandbox's visible contexts, oldest first."""
        await self._sandboxes.get(principal, sandbox_id)
        query = (
            select(ContextRow)
            .where(
                ContextRow.sandbox_id == sandbox_id,
                ContextRow.status.in_([s.value for s in VISIBLE_STATUSES]),
            )
            .order_by(ContextRow.created_at, ContextRow.id)
        )
        async with self._db.session() as session:
            rows = (await session.scalars(query)).all()
        return [_to_context(row) for row in rows]

    async def get(self, principal: Principal, sandbox_id: str, context_id: str) -> Context:
        await self._sandboxes.get(principal, sandbox_id)
        return await self.find(sandbox_id, context_id)

    async def find(self, sandbox_id: str, context_id: str) -> Context:
        """A visible context of the sandbox (whose ownership the caller has checked)."""
        async with self._db.session() as session:
            row = await session.get(ContextRow, context_id)
        if (
            row is None
            or row.sandbox_id != sandbox_id
            or ContextStatus(row.status) not in VISIBLE_STATUSES
        ):
            raise NotFoundError(f"context {context_id} not found in sandbox {sandbox_id}")
        return _to_context(row)

    # --- operations on a context -------------------------------------------------------------

    async def delete(self, principal: Principal, sandbox_id: str, context_id: str) -> None:
        """Shut the kernel down; the context answers 404 afterwards."""
        sandbox = await self._sandboxes.get(principal, sandbox_id)
        await self.find(sandbox_id, context_id)
        # A sandbox that is gone took its kernels with it; one that is paused must not be left
        # with a kernel its records say is deleted.
        if sandbox.status not in (SandboxStatus.DESTROYED, SandboxStatus.ERROR):
            sandbox.require_running()
            link = await self._sandboxes.agent(sandbox)
            await link.call("context.delete", {"context_id": context_id})
        await self._set_status(context_id, ContextStatus.DELETED)

    async def restart(self, principal: Principal, sandbox_id: str, context_id: str) -> Context:
        """A fresh kernel under the same id: state, variables and execution count reset."""
        return await self._call(principal, sandbox_id, context_id, "context.restart")

    async def interrupt(self, principal: Principal, sandbox_id: str, context_id: str) -> Context:
        """Interrupt the running execution, if any; the context keeps its state."""
        return await self._call(principal, sandbox_id, context_id, "context.interrupt")

    async def _call(
        self, principal: Principal, sandbox_id: str, context_id: str, method: str
    ) -> Context:
        sandbox = await self._sandboxes.get(principal, sandbox_id)
        context = await self.find(sandbox_id, context_id)
        sandbox.require_running()
        link = await self._sandboxes.agent(sandbox)
        try:
            await link.call(method, {"context_id": context_id})
        except AgentRequestError as exc:
            if exc.code == "context_not_found":
                raise NotFoundError(
                    f"context {context_id} not found in sandbox {sandbox_id}"
                ) from exc
            raise
        return context

    async def _set_status(self, context_id: str, status: ContextStatus) -> None:
        async with self._db.session() as session:
            row = await session.get(ContextRow, context_id)
            if row is not None:
                row.status = status.value

"""A sandbox's REPL contexts: create, list, get, delete, restart, interrupt.

A context is a row before the agent starts its kernel (``creating``), ``ready`` once the agent
has it, ``error`` if the agent refused, and ``deleted`` after a delete. Only ``creating`` and
``ready`` contexts are visible; anything else, and any context of another sandbox or tenant,
is "not found". Executions resolve their context here too.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sandcastle.domain import ids
from sandcastle.domain.context import VISIBLE_STATUSES, Context, ContextStatus
from sandcastle.domain.languages import normalise_language
from sandcastle.domain.sandbox import Sandbox, SandboxStatus, normalise_cwd
from sandcastle.errors import (
    FieldError,
    InvalidRequestError,
    NotFoundError,
    SandboxMemoryFullError,
)
from sandcastle.runtime.channel import AgentLink, AgentRequestError
from sandcastle.services.auth import Principal
from sandcastle.services.sandboxes import SandboxService
from sandcastle.store.contexts import ContextRepository

#: Agent error codes of ``context.create`` that blame one request field.
_FIELD_ERRORS = {"invalid": "language", "invalid_cwd": "cwd"}
#: The agent keeps a started spare kernel per language so the next context starts at once. A
#: Deno kernel holds ~175 MB: a context and a spare would leave a 512 MB sandbox ~65 MB, so
#: smaller sandboxes start each TypeScript context cold (~1 s) instead.
SPARE_MIN_MEMORY_MB = {"typescript": 1024}


class ContextService:
    def __init__(self, contexts: ContextRepository, sandboxes: SandboxService) -> None:
        self._contexts = contexts
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
        self,
        link: AgentLink,
        sandbox: Sandbox,
        language: str,
        cwd: str | None,
        *,
        label: str | None = None,
    ) -> Context:
        """Write the row, then have the agent start the kernel (``language`` is a family)."""
        row = Context(
            id=ids.new_context_id(),
            sandbox_id=sandbox.id,
            language=language,
            cwd=cwd,
            status=ContextStatus.CREATING,
            created_at=datetime.now(UTC),
            label=label,
        )
        await self._contexts.insert([row])
        oom_before = (await self._sandboxes.runtime.poll(sandbox.id)).oom_kills
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
            await self._blame_memory(sandbox, language, oom_before, exc)
            raise
        except BaseException:
            # Cancelled or the link failed: the row must not stay "creating".
            await asyncio.shield(self._set_status(row.id, ContextStatus.ERROR))
            raise
        # The agent reports the directory the kernel really runs in (its default if none).
        cwd_used = reply.get("cwd")
        return await self._contexts.mark_ready(
            row.id, cwd_used if isinstance(cwd_used, str) else None
        )

    # --- queries ---------------------------------------------------------------------------

    async def list(self, principal: Principal, sandbox_id: str) -> list[Context]:
        """The sandbox's visible contexts, oldest first."""
        await self._sandboxes.get(principal, sandbox_id)
        return await self._contexts.of_sandbox(sandbox_id, VISIBLE_STATUSES)

    async def labelled(
        self, principal: Principal, sandbox_id: str, language: str, label: str
    ) -> Context:
        """The oldest visible context of ``language`` (a family) with ``label``, started with
        that label if there is none. Callers serialise calls per sandbox and label."""
        sandbox = await self._sandboxes.get(principal, sandbox_id)
        for context in await self._contexts.of_sandbox(sandbox_id, VISIBLE_STATUSES):
            if context.label == label and context.language == language:
                return context
        sandbox.require_running()
        link = await self._sandboxes.agent(sandbox)
        return await self.start(link, sandbox, language, sandbox.cwd, label=label)

    async def get(self, principal: Principal, sandbox_id: str, context_id: str) -> Context:
        await self._sandboxes.get(principal, sandbox_id)
        return await self.find(sandbox_id, context_id)

    async def find(self, sandbox_id: str, context_id: str) -> Context:
        """A visible context of the sandbox (whose ownership the caller has checked)."""
        context = await self._contexts.find(context_id)
        if (
            context is None
            or context.sandbox_id != sandbox_id
            or context.status not in VISIBLE_STATUSES
        ):
            raise NotFoundError(f"context {context_id} not found in sandbox {sandbox_id}")
        return context

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
        oom_before = (await self._sandboxes.runtime.poll(sandbox.id)).oom_kills
        try:
            await link.call(method, {"context_id": context_id})
        except AgentRequestError as exc:
            if exc.code == "context_not_found":
                raise NotFoundError(
                    f"context {context_id} not found in sandbox {sandbox_id}"
                ) from exc
            await self._blame_memory(sandbox, context.language, oom_before, exc)
            raise
        return context

    async def _blame_memory(
        self, sandbox: Sandbox, language: str, oom_before: int, exc: AgentRequestError
    ) -> None:
        """A kernel that died or hung starting was the victim of a full sandbox if the
        out-of-memory count rose, or if what the sandbox holds (page cache aside) is within a
        tenth of its memory: a condition the caller can act on, not a broken gateway."""
        state = await self._sandboxes.runtime.poll(sandbox.id)
        held = state.memory_bytes - state.memory_cache_bytes
        full = held >= 0.9 * sandbox.config.memory_mb * 2**20
        if full or await self._sandboxes.observe_oom(sandbox.id) > oom_before:
            raise SandboxMemoryFullError(
                f"sandbox {sandbox.id} has no memory left for another {language} context "
                f"(its kernel did not start with the sandbox at its {sandbox.config.memory_mb} "
                "MB limit): delete a context, or create the sandbox with more memory_mb"
            ) from exc

    async def _set_status(self, context_id: str, status: ContextStatus) -> None:
        await self._contexts.set_status([context_id], status)

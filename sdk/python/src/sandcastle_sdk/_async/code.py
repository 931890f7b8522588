"""Running code: ``sandbox.run_code`` (whole, or streamed to callbacks) and
``sandbox.contexts``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandcastle_sdk import errors
from sandcastle_sdk._http import drop_none
from sandcastle_sdk.models import Context, Execution, ExecutionError, Logs, Result, StreamEvent

from . import _io
from ._transport import AsyncTransport

_RESULT_FIELDS = frozenset(Result.model_fields) | {"json"}


async def run_code(
    transport: AsyncTransport,
    base: str,
    code: str,
    *,
    language: str | None,
    context: str | None,
    env_vars: dict[str, str] | None,
    timeout: float | None,
    on_stdout: Callable[[str], Any] | None,
    on_stderr: Callable[[str], Any] | None,
    on_result: Callable[[StreamEvent], Any] | None,
    on_error: Callable[[StreamEvent], Any] | None,
) -> Execution:
    body = drop_none(
        code=code,
        language=language,
        context_id=context,
        env_vars=env_vars,
        timeout_ms=None if timeout is None else int(timeout * 1000),
    )
    if not any((on_stdout, on_stderr, on_result, on_error)):
        return await transport.model(Execution, "POST", f"{base}/execute", json=body)
    # Streamed: the same outcome, assembled from the events as the callbacks see them.
    collected = _Collected()
    async with transport.events("POST", f"{base}/execute/stream", json=body) as events:
        async for raw in events:
            event = StreamEvent.model_validate(raw)
            collected.add(raw, event)
            if event.type == "stdout":
                await _io.call(on_stdout, event.text or "")
            elif event.type == "stderr":
                await _io.call(on_stderr, event.text or "")
            elif event.type == "result":
                await _io.call(on_result, event)
            elif event.type == "error":
                await _io.call(on_error, event)
    return collected.execution()


class _Collected:
    """An :class:`Execution` built from stream events, as ``/execute`` would have answered."""

    def __init__(self) -> None:
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.items: list[Result] = []
        self.error: ExecutionError | None = None
        self.count: int | None = None
        self.context_id: str | None = None

    def add(self, raw: dict[str, Any], event: StreamEvent) -> None:
        if event.type == "stdout":
            self.stdout.append(event.text or "")
        elif event.type == "stderr":
            self.stderr.append(event.text or "")
        elif event.type == "result":
            self.items.append(
                Result.model_validate({k: v for k, v in raw.items() if k in _RESULT_FIELDS})
            )
        elif event.type == "error":
            # A later error supersedes an earlier one (docs/STREAMING.md).
            self.error = ExecutionError(
                name=event.name or "", value=event.value or "", traceback=event.traceback or ""
            )
        elif event.type == "execution_count":
            self.count = event.execution_count
        elif event.type == "end_of_execution":
            self.context_id = event.context_id

    def execution(self) -> Execution:
        if self.context_id is None:
            raise errors.StreamEndedError("the execution's stream ended before its last event")
        return Execution(
            context_id=self.context_id,
            execution_count=self.count,
            items=self.items,
            logs=Logs(stdout=self.stdout, stderr=self.stderr),
            error=self.error,
        )


class AsyncContexts:
    """``sandbox.contexts``: REPLs whose state outlasts one execution."""

    def __init__(self, transport: AsyncTransport, base: str) -> None:
        self._t = transport
        self._base = f"{base}/contexts"

    async def create(self, language: str = "python", *, cwd: str | None = None) -> Context:
        body = drop_none(language=language, cwd=cwd)
        return await self._t.model(Context, "POST", self._base, json=body)

    async def list(self) -> list[Context]:
        return await self._t.items(Context, "GET", self._base)

    async def get(self, context_id: str) -> Context:
        return await self._t.model(Context, "GET", f"{self._base}/{context_id}")

    async def restart(self, context_id: str) -> Context:
        """A fresh kernel under the same id: the state is gone, the id stays."""
        return await self._t.model(Context, "POST", f"{self._base}/{context_id}/restart")

    async def interrupt(self, context_id: str) -> Context:
        """Stop what the context is running (as Ctrl-C would); its state stays."""
        return await self._t.model(Context, "POST", f"{self._base}/{context_id}/interrupt")

    async def delete(self, context_id: str) -> None:
        await self._t.send("DELETE", f"{self._base}/{context_id}")

# Generated from ../_async/code.py by sdk/python/tools/generate_sync.py: do not edit.
"""Running code: ``sandbox.run_code`` (whole, or streamed to callbacks) and
``sandbox.contexts``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandcastle_sdk import errors
from sandcastle_sdk._http import drop_none
from sandcastle_sdk.models import Context, Execution, ExecutionError, Logs, Result, StreamEvent

from . import _io
from ._transport import SyncTransport

_RESULT_FIELDS = frozenset(Result.model_fields) | {"json"}


def run_code(
    transport: SyncTransport,
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
        return transport.model(Execution, "POST", f"{base}/execute", json=body)
    # Streamed: the same outcome, assembled from the events as the callbacks see them.
    collected = _Collected()
    with transport.events("POST", f"{base}/execute/stream", json=body) as events:
        for raw in events:
            event = StreamEvent.model_validate(raw)
            collected.add(raw, event)
            if event.type == "stdout":
                _io.call(on_stdout, event.text or "")
            elif event.type == "stderr":
                _io.call(on_stderr, event.text or "")
            elif event.type == "result":
                _io.call(on_result, event)
            elif event.type == "error":
                _io.call(on_error, event)
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


class SyncContexts:
    """``sandbox.contexts``: REPLs whose state outlasts one execution."""

    def __init__(self, transport: SyncTransport, base: str) -> None:
        self._t = transport
        self._base = f"{base}/contexts"

    def create(self, language: str = "python", *, cwd: str | None = None) -> Context:
        body = drop_none(language=language, cwd=cwd)
        return self._t.model(Context, "POST", self._base, json=body)

    def list(self) -> list[Context]:
        return self._t.items(Context, "GET", self._base)

    def get(self, context_id: str) -> Context:
        return self._t.model(Context, "GET", f"{self._base}/{context_id}")

    def restart(self, context_id: str) -> Context:
        """A fresh kernel under the same id: the state is gone, the id stays."""
        return self._t.model(Context, "POST", f"{self._base}/{context_id}/restart")

    def interrupt(self, context_id: str) -> Context:
        """Stop what the context is running (as Ctrl-C would); its state stays."""
        return self._t.model(Context, "POST", f"{self._base}/{context_id}/interrupt")

    def delete(self, context_id: str) -> None:
        self._t.send("DELETE", f"{self._base}/{context_id}")

# Generated from ../_async/processes.py by sdk/python/tools/generate_sync.py: do not edit.
"""``sandbox.processes`` (also ``sandbox.commands``): commands run to their end, or started in
the background and followed, written to, signalled, resized."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sandcastle_sdk import errors
from sandcastle_sdk._http import drop_none
from sandcastle_sdk.models import ProcessEvent, ProcessInfo, ProcessResult

from . import _io
from ._transport import SyncTransport


def _command(command: str | Sequence[str]) -> dict[str, Any]:
    """A string is a shell command line (``bash -c``); a sequence is argv, run directly."""
    if isinstance(command, str):
        return {"shell": command}
    argv = list(command)
    if not argv:
        raise ValueError("an empty command")
    return {"cmd": argv[0], "args": argv[1:]}


class SyncProcesses:
    def __init__(self, transport: SyncTransport, base: str) -> None:
        self._t = transport
        self._base = f"{base}/processes"

    def _body(
        self,
        command: str | Sequence[str],
        *,
        cwd: str | None,
        env: dict[str, str] | None,
        timeout: float | None,
        tag: str | None = None,
        stdin: bool | None = None,
        pty: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        return {
            **_command(command),
            **drop_none(
                cwd=cwd,
                env=env,
                tag=tag,
                stdin=stdin,
                timeout_ms=None if timeout is None else int(timeout * 1000),
                pty=None if pty is None else {"cols": pty[0], "rows": pty[1]},
            ),
        }

    def run(
        self,
        command: str | Sequence[str],
        *,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        on_stdout: Callable[[str], Any] | None = None,
        on_stderr: Callable[[str], Any] | None = None,
    ) -> ProcessResult:
        """Run a command to its end and return its exit and output. With a callback, output
        is streamed to it as it comes (and collected too). ``timeout`` in seconds (the
        server's default when None, 0: none)."""
        body = self._body(command, cwd=cwd, env=env, timeout=timeout)
        if on_stdout is None and on_stderr is None:
            return self._t.model(ProcessResult, "POST", f"{self._base}/run", json=body)
        out: list[str] = []
        err: list[str] = []
        with self._t.events("POST", f"{self._base}/stream", json=body) as events:
            for raw in events:
                event = ProcessEvent.model_validate(raw)
                if event.type == "stdout":
                    out.append(event.text or "")
                    _io.call(on_stdout, event.text or "")
                elif event.type == "stderr":
                    err.append(event.text or "")
                    _io.call(on_stderr, event.text or "")
                elif event.type == "error":
                    raise errors.StreamEndedError(f"{event.name}: {event.value}")
                elif event.type == "end" and event.process is not None:
                    return ProcessResult(
                        process=event.process,
                        stdout="".join(out),
                        stderr="".join(err),
                        truncated={"stdout": False, "stderr": False},
                    )
        raise errors.StreamEndedError("the process's stream ended before the process did")

    def start(
        self,
        command: str | Sequence[str],
        *,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        tag: str | None = None,
        stdin: bool = False,
        pty: tuple[int, int] | None = None,
    ) -> ProcessInfo:
        """Start a command in the background; follow it with ``stream(pid)``. ``pty`` is a
        terminal's ``(cols, rows)``; ``stdin=True`` keeps its input open for ``send_stdin``."""
        body = self._body(command, cwd=cwd, env=env, timeout=timeout, tag=tag, stdin=stdin, pty=pty)
        return self._t.model(ProcessInfo, "POST", self._base, json=body)

    def list(self) -> list[ProcessInfo]:
        return self._t.items(ProcessInfo, "GET", self._base)

    def get(self, pid: int) -> ProcessInfo:
        return self._t.model(ProcessInfo, "GET", f"{self._base}/{pid}")

    @contextmanager
    def stream(self, pid: int) -> Iterator[Iterator[ProcessEvent]]:
        """The process's events, from its start (what was kept of it) to its end, for the
        block's length: ``with processes.stream(pid) as events: for event in events: …``."""
        with self._t.events("GET", f"{self._base}/{pid}/stream") as events:
            yield _process_events(events)

    def wait(self, pid: int) -> ProcessInfo:
        """Follow the process until it ends; how it ended."""
        with self.stream(pid) as events:
            for event in events:
                if event.type == "end" and event.process is not None:
                    return event.process
        raise errors.StreamEndedError("the process's stream ended before the process did")

    def send_stdin(self, pid: int, data: str | bytes) -> int:
        """Write to the process's input; the bytes written."""
        if isinstance(data, bytes):
            body = {"data_b64": base64.b64encode(data).decode("ascii")}
        else:
            body = {"text": data}
        written = self._t.json("POST", f"{self._base}/{pid}/stdin", json=body)
        return int(written["written"])

    def close_stdin(self, pid: int) -> ProcessInfo:
        return self._t.model(ProcessInfo, "POST", f"{self._base}/{pid}/stdin/close")

    def signal(self, pid: int, signal: str = "SIGTERM") -> ProcessInfo:
        body = {"signal": signal}
        return self._t.model(ProcessInfo, "POST", f"{self._base}/{pid}/signal", json=body)

    def kill(self, pid: int) -> ProcessInfo:
        return self._t.model(ProcessInfo, "DELETE", f"{self._base}/{pid}")

    def resize(self, pid: int, cols: int, rows: int) -> ProcessInfo:
        body = {"cols": cols, "rows": rows}
        return self._t.model(ProcessInfo, "POST", f"{self._base}/{pid}/resize", json=body)


def _process_events(
    events: Iterator[dict[str, Any]],
) -> Iterator[ProcessEvent]:
    for raw in events:
        yield ProcessEvent.model_validate(raw)

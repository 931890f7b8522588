"""An execution's result, assembled from the agent's events (``execute.txt``'s shape)."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any

#: Jupyter MIME type → result item field. Anything else lands under ``extra``.
MIME_FIELDS: dict[str, str] = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
}

#: Output one execution keeps, streams and result items together (measured as text): an agent
#: relays what its kernels publish, so a sandbox could otherwise make the server hold any amount
#: (a loop of ``display()``). Past it, what follows is dropped and one line on stderr says so.
MAX_OUTPUT_BYTES = 16 * 1024 * 1024

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


@dataclass
class ResultItem:
    is_primary: bool
    fields: dict[str, Any]
    extra: dict[str, Any]


@dataclass
class ExecutionError:
    name: str
    value: str
    traceback: str


@dataclass
class ExecutionResult:
    """Everything one execution produced, in the order it was produced."""

    items: list[ResultItem] = field(default_factory=list)
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    error: ExecutionError | None = None
    execution_count: int | None = None
    #: Output kept so far (``MAX_OUTPUT_BYTES``), and whether some was dropped.
    size: int = 0
    truncated: bool = False
    max_bytes: int = MAX_OUTPUT_BYTES

    def add_event(self, event: dict[str, Any]) -> None:
        """Fold one agent event into the result; unknown kinds are ignored."""
        kind = event.get("kind")
        if kind in ("stdout", "stderr", "result") and not self._room_for(event):
            return
        if kind == "stdout":
            self.stdout.append(str(event.get("text", "")))
        elif kind == "stderr":
            self.stderr.append(str(event.get("text", "")))
        elif kind == "result":
            data = event.get("data")
            self.items.append(
                to_item(data if isinstance(data, dict) else {}, bool(event.get("is_primary")))
            )
        elif kind == "error":
            self.error = to_error(event)
        elif kind == "execution_count" and isinstance(event.get("value"), int):
            self.execution_count = event["value"]

    def _room_for(self, event: dict[str, Any]) -> bool:
        cost = output_size(event.get("text")) + output_size(event.get("data"))
        if self.size + cost <= self.max_bytes:
            self.size += cost
            return True
        if not self.truncated:
            self.truncated = True
            self.stderr.append(
                f"\n[output truncated: the execution's output passed {self.max_bytes} bytes; "
                "the rest was dropped]\n"
            )
        return False


def output_size(value: Any) -> int:
    """The bytes ``value`` (an event's text or data, a stored execution) takes as JSON: what
    the server holds, stores and sends of it. Anything JSON cannot say (nested too deep) is
    too large."""
    if value is None:
        return 0
    try:
        return len(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    except (TypeError, ValueError, RecursionError):
        return sys.maxsize


def to_item(data: dict[str, Any], is_primary: bool) -> ResultItem:
    fields: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for mime, value in data.items():
        name = MIME_FIELDS.get(mime)
        if name is None:
            extra[mime] = value
        else:
            fields[name] = value
    return ResultItem(is_primary=is_primary, fields=fields, extra=extra)


def to_error(event: dict[str, Any]) -> ExecutionError:
    traceback = event.get("traceback") or []
    lines = traceback if isinstance(traceback, list) else [str(traceback)]
    return ExecutionError(
        name=str(event.get("name", "Error")),
        value=str(event.get("value", "")),
        traceback=strip_ansi("\n".join(str(line) for line in lines)),
    )

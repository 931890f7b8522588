"""``sandcastle run SANDBOX -- CMD ARGS…`` and ``sandcastle sh SANDBOX``: processes from the
terminal (docs/PROCESSES.md).

``run`` streams a command's output as it comes and exits with its exit code (128 + the signal
number for a process a signal ended, as a shell does). ``sh`` is an interactive shell on a
terminal in the sandbox: this terminal is put in raw mode, keys go to the sandbox's terminal,
and a resize of this window resizes that one.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import sys
import termios
import threading
import tty
from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import typer

from sandcastle.cli.client_commands import (
    DEFAULT_URL,
    KeyOpt,
    UrlOpt,
    _fail,
    _request,
    describe,
    err,
)


def _events(
    client: httpx.Client, method: str, path: str, **kwargs: Any
) -> Iterator[dict[str, Any]]:
    """The NDJSON events of a process stream (keepalives left out)."""
    try:
        with client.stream(method, path, **kwargs) as response:
            if response.status_code >= 400:
                response.read()
                _fail(describe(response))
            for line in response.iter_lines():
                if line:
                    event = json.loads(line)
                    if event["type"] != "keepalive":
                        yield event
    except httpx.HTTPError as exc:
        _fail(f"the stream was cut: {exc}")


class _ShellEnded(Exception):
    """Raised in the key loop (by SIGUSR1) when the shell's output ended."""


def _shell_ended(*_: object) -> None:
    raise _ShellEnded


def _exit_status(process: dict[str, Any]) -> int:
    if process.get("signal"):
        return 128 + int(getattr(signal, process["signal"], 0))
    return int(process.get("exit_code") or 0)


def _client(url: str, key: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(30, read=None))


def run_command(
    sandbox_id: str,
    command: Annotated[list[str], typer.Argument(help="The command and its arguments.")],
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = "",
    shell: Annotated[
        bool, typer.Option("--shell", help="Run the words as one line of /bin/bash -c.")
    ] = False,
    cwd: Annotated[str | None, typer.Option(help="Working directory in the sandbox.")] = None,
    timeout: Annotated[int, typer.Option(help="Seconds before it is killed; 0: none.")] = 0,
) -> None:
    """Run a command in a sandbox, its output as it comes; exits with its exit code."""
    body: dict[str, Any] = {"timeout_ms": timeout * 1000}
    if shell:
        body["shell"] = " ".join(command)
    else:
        body["cmd"], body["args"] = command[0], command[1:]
    if cwd:
        body["cwd"] = cwd
    path = f"/v1/sandboxes/{sandbox_id}/processes/stream"
    with _client(url, key) as client:
        for event in _events(client, "POST", path, json=body):
            if event["type"] == "stdout":
                sys.stdout.write(event["text"])
                sys.stdout.flush()
            elif event["type"] == "stderr":
                sys.stderr.write(event["text"])
                sys.stderr.flush()
            elif event["type"] == "error":
                _fail(f"{event['name']}: {event['value']}")
            elif event["type"] == "end":
                raise typer.Exit(_exit_status(event["process"]))
    _fail("the stream ended before the process did")


def shell(
    sandbox_id: str,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = "",
    command: Annotated[str, typer.Option(help="The shell to run.")] = "/bin/bash",
) -> None:
    """An interactive shell in a sandbox, on a terminal of this window's size."""
    if not os.isatty(0):
        _fail("sh needs a terminal on standard input (for a command, use `sandcastle run`)")
    cols, rows = os.get_terminal_size(0)
    cols, rows = cols or 80, rows or 24  # a terminal that never had a size says 0 × 0
    base = f"/v1/sandboxes/{sandbox_id}/processes"
    body = {"cmd": command, "args": ["-i"], "pty": {"cols": cols, "rows": rows}, "timeout_ms": 0}
    started = _request("POST", url, key, base, json=body)
    pid = started["pid"]
    ended: dict[str, Any] = {}

    def show_output() -> None:
        with _client(url, key) as client:
            for event in _events(client, "GET", f"{base}/{pid}/stream"):
                if event["type"] == "pty":
                    os.write(1, base64.b64decode(event["data_b64"]))
                elif event["type"] in ("end", "error"):
                    ended.update(event)
                    break
        os.kill(os.getpid(), signal.SIGUSR1)  # wake the key loop: the shell has gone

    def resized(*_: object) -> None:
        size = os.get_terminal_size(0)
        body = {"cols": size.columns or 80, "rows": size.lines or 24}
        with contextlib.suppress(typer.Exit):
            _request("POST", url, key, f"{base}/{pid}/resize", json=body)

    reader = threading.Thread(target=show_output, daemon=True)
    reader.start()
    signal.signal(signal.SIGWINCH, resized)
    signal.signal(signal.SIGUSR1, _shell_ended)
    saved = termios.tcgetattr(0)
    tty.setraw(0, termios.TCSANOW)  # not TCSAFLUSH: keys typed ahead are the shell's
    try:
        with _client(url, key) as client:
            while reader.is_alive():
                try:
                    keys = os.read(0, 4096)
                except _ShellEnded:
                    break
                if not keys:
                    break
                data = base64.b64encode(keys).decode("ascii")
                client.post(f"{base}/{pid}/stdin", json={"data_b64": data})
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)
    reader.join(5)
    if ended.get("type") == "error":
        err.print(f"[red]{ended['name']}[/]: {ended['value']}")
        raise typer.Exit(1)
    raise typer.Exit(_exit_status(ended.get("process", {})))

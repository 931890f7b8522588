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
import os
import signal
import sys
import termios
import threading
import tty
import typing
from typing import Annotated

import typer

from sandcastle.cli.connection import DEFAULT_URL, KeyOpt, UrlOpt, connected, describe, fail
from sandcastle_sdk import Sandbox, errors
from sandcastle_sdk.models import ProcessInfo


class _ShellEnded(Exception):
    """Raised in the key loop (by SIGUSR1) when the shell's output ended."""


def _shell_ended(*_: object) -> None:
    raise _ShellEnded


def _exit_status(process: ProcessInfo | None) -> int:
    if process is None:
        return 1
    if process.signal:
        return 128 + int(getattr(signal, process.signal, 0))
    return process.exit_code or 0


def _write(stream: typing.TextIO, text: str) -> None:
    stream.write(text)
    stream.flush()


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
    with connected(url, key) as client:
        sandbox = Sandbox.connect(sandbox_id, client=client)
        result = sandbox.processes.run(
            " ".join(command) if shell else command,
            cwd=cwd,
            timeout=timeout,
            on_stdout=lambda text: _write(sys.stdout, text),
            on_stderr=lambda text: _write(sys.stderr, text),
        )
    raise typer.Exit(_exit_status(result.process))


def shell(
    sandbox_id: str,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = "",
    command: Annotated[str, typer.Option(help="The shell to run.")] = "/bin/bash",
) -> None:
    """An interactive shell in a sandbox, on a terminal of this window's size."""
    if not os.isatty(0):
        fail("sh needs a terminal on standard input (for a command, use `sandcastle run`)")
    cols, rows = os.get_terminal_size(0)
    cols, rows = cols or 80, rows or 24  # a terminal that never had a size says 0 × 0
    with connected(url, key) as client:
        processes = Sandbox.connect(sandbox_id, client=client).processes
        pid = processes.start([command, "-i"], pty=(cols, rows), timeout=0).pid
        ended: list[ProcessInfo | None] = []
        failure: list[str] = []

        def show_output() -> None:
            try:
                with processes.stream(pid) as events:
                    for event in events:
                        if event.type == "pty" and event.data_b64:
                            os.write(1, base64.b64decode(event.data_b64))
                        elif event.type == "end":
                            ended.append(event.process)
                            break
                        elif event.type == "error":
                            failure.append(f"{event.name}: {event.value}")
                            break
            except errors.SandcastleError as exc:
                failure.append(describe(exc))
            os.kill(os.getpid(), signal.SIGUSR1)  # wake the key loop: the shell has gone

        def resized(*_: object) -> None:
            size = os.get_terminal_size(0)
            with contextlib.suppress(errors.SandcastleError):
                processes.resize(pid, size.columns or 80, size.lines or 24)

        reader = threading.Thread(target=show_output, daemon=True)
        reader.start()
        signal.signal(signal.SIGWINCH, resized)
        signal.signal(signal.SIGUSR1, _shell_ended)
        saved = termios.tcgetattr(0)
        tty.setraw(0, termios.TCSANOW)  # not TCSAFLUSH: keys typed ahead are the shell's
        try:
            while reader.is_alive():
                try:
                    keys = os.read(0, 4096)
                except _ShellEnded:
                    break
                if not keys:
                    break
                with contextlib.suppress(errors.SandcastleError):
                    processes.send_stdin(pid, keys)
        finally:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        reader.join(5)
    if failure:
        fail(failure[0])
    raise typer.Exit(_exit_status(ended[0] if ended else None))

"""Plain processes in the sandbox: start, stream their output, stdin, signals, a terminal.

A process belongs to the sandbox, not to the request that started it: ``process.start`` answers
at once with its pid, and any number of ``process.connect`` requests (a reconnect after a
server restart is one more) stream its output as events and answer with its exit. Output is
also kept in a bounded replay buffer, so a connect that comes after the start (the usual order)
or after a lost connection misses nothing the buffer still holds; what it lost is counted.

Each process leads its own session and process group, so a signal reaches what it started too.
With ``pty`` it runs on a pseudo-terminal (its controlling terminal) of the size asked; its
output is the terminal's, one stream. Processes count against the sandbox's pids, memory and CPU
like everything else in it, and are what the OOM killer takes before the agent (``expendable``).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import fcntl
import os
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from sandcastle.agent.channel import Emit, Handler, RequestFailed
from sandcastle.agent.memguard import Victim, expendable

#: Output kept per process for connects that come later (bytes; the oldest goes first).
REPLAY_BYTES = 512 << 10
#: Output one connect may have unsent before its oldest chunks are dropped (a slow host).
LISTENER_BYTES = 4 << 20
#: Exited processes remembered (for ``process.list`` and a late connect), the oldest forgotten.
KEEP_EXITED = 32
READ_BYTES = 64 << 10
SIGNALS = {
    name: getattr(signal, name)
    for name in (
        "SIGHUP", "SIGINT", "SIGQUIT", "SIGKILL", "SIGUSR1", "SIGUSR2", "SIGTERM",
        "SIGCONT", "SIGSTOP", "SIGTSTP", "SIGWINCH",
    )
}  # fmt: skip


class _Chunks:
    """Output chunks ``(stream, bytes)`` up to ``limit`` bytes; the oldest are dropped first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: collections.deque[tuple[str, bytes]] = collections.deque()
        self.size = 0
        self.dropped = 0
        self.wake = asyncio.Event()

    def put(self, stream: str, data: bytes) -> None:
        self.items.append((stream, data))
        self.size += len(data)
        while self.size > self.limit:
            _, old = self.items.popleft()
            self.size -= len(old)
            self.dropped += len(old)
        self.wake.set()

    def take(self) -> tuple[str, bytes]:
        stream, data = self.items.popleft()
        self.size -= len(data)
        return stream, data


@dataclass
class Process:
    pid: int
    argv: list[str]
    cwd: str
    tag: str | None
    started_at: float
    child: asyncio.subprocess.Process
    #: The terminal's controlling end, while the process has one.
    master: int | None
    pty: bool
    replay: _Chunks = field(default_factory=lambda: _Chunks(REPLAY_BYTES))
    listeners: set[_Chunks] = field(default_factory=set)
    readers: int = 0
    exit_code: int | None = None
    exit_signal: str | None = None
    killed_by: str | None = None
    ended_at: float | None = None

    @property
    def finished(self) -> bool:
        """Exited, and all of its output read."""
        return self.ended_at is not None and self.readers == 0

    def info(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "cmd": self.argv[0],
            "args": self.argv[1:],
            "cwd": self.cwd,
            "tag": self.tag,
            "pty": self.pty,
            "started_at_ms": int(self.started_at * 1000),
            "running": self.ended_at is None,
            "exit_code": self.exit_code,
            "signal": self.exit_signal,
            "killed_by": self.killed_by,
            "duration_ms": int(((self.ended_at or time.time()) - self.started_at) * 1000),
        }

    def output(self, stream: str, data: bytes) -> None:
        self.replay.put(stream, data)
        for listener in self.listeners:
            listener.put(stream, data)

    def poke(self) -> None:
        for listener in self.listeners:
            listener.wake.set()


class AgentProcesses:
    """The sandbox's processes started through the agent, by pid."""

    def __init__(self, env: dict[str, str], home: str) -> None:
        self._env = env
        self._home = home
        self._table: dict[int, Process] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def handlers(self) -> dict[str, Handler]:
        return {
            "process.start": self.start,
            "process.connect": self.connect,
            "process.list": self.list_all,
            "process.input": self.input,
            "process.close_stdin": self.close_stdin,
            "process.signal": self.signal,
            "process.resize": self.resize,
        }

    def victims(self) -> list[Victim]:
        """Running processes, for the memory guard (under gVisor)."""
        return [Victim(p.pid, lambda: None) for p in self._table.values() if p.ended_at is None]

    # --- requests ---------------------------------------------------------------------------

    async def start(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        argv = [str(a) for a in params.get("argv") or []]
        if not argv or not argv[0]:
            raise RequestFailed("invalid", "argv must name a command")
        cwd = str(params.get("cwd") or self._home)
        env = {**self._env, **{str(k): str(v) for k, v in (params.get("env") or {}).items()}}
        size = params.get("pty")
        master: int | None = None
        if size is not None:
            child, master = await self._spawn_on_terminal(argv, cwd, env, size)
        else:
            child = await self._spawn_with_pipes(argv, cwd, env, bool(params.get("stdin")))
        expendable(child.pid)
        proc = Process(
            pid=child.pid,
            argv=argv,
            cwd=cwd,
            tag=None if params.get("tag") is None else str(params["tag"]),
            started_at=time.time(),
            child=child,
            master=master,
            pty=master is not None,
        )
        self._remember(proc)
        if master is not None:
            self._run(self._pump(proc, master, "pty"))
        else:
            assert child.stdout is not None and child.stderr is not None
            self._run(self._pump_stream(proc, child.stdout, "stdout"))
            self._run(self._pump_stream(proc, child.stderr, "stderr"))
        self._run(self._wait(proc, float(params.get("timeout_ms") or 0) / 1000))
        return proc.info()

    async def connect(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Stream the process's output (what the replay buffer still holds, then live) as
        ``output`` events (``dropped`` events count bytes lost before them), and answer with
        its exit once it ended and its output is all sent."""
        proc = self._get(params)
        listener = _Chunks(LISTENER_BYTES)
        listener.dropped = proc.replay.dropped
        for stream, data in proc.replay.items:
            listener.put(stream, data)
        proc.listeners.add(listener)
        try:
            while True:
                while listener.items:
                    if listener.dropped:
                        await emit({"kind": "dropped", "bytes": listener.dropped})
                        listener.dropped = 0
                    stream, data = listener.take()
                    data_b64 = base64.b64encode(data).decode("ascii")
                    await emit({"kind": "output", "stream": stream, "data_b64": data_b64})
                if proc.finished:
                    return proc.info()
                listener.wake.clear()
                await listener.wake.wait()
        finally:
            proc.listeners.discard(listener)

    async def list_all(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        return {"processes": [p.info() for p in self._table.values()]}

    async def input(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        proc = self._get(params)
        data = base64.b64decode(str(params.get("data_b64", "")))
        if proc.ended_at is not None:
            raise RequestFailed("exited", f"process {proc.pid} has exited")
        if proc.master is not None:
            await _write_all(proc.master, data)
        elif proc.child.stdin is not None and not proc.child.stdin.is_closing():
            proc.child.stdin.write(data)
            try:
                await proc.child.stdin.drain()
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise RequestFailed("no_stdin", f"process {proc.pid} closed its stdin") from exc
        else:
            raise RequestFailed("no_stdin", f"process {proc.pid} has no stdin open")
        return {"written": len(data)}

    async def close_stdin(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        proc = self._get(params)
        if proc.master is not None:
            await _write_all(proc.master, b"\x04")  # a terminal's end of input is ^D
        elif proc.child.stdin is not None:
            proc.child.stdin.close()
        return {}

    async def signal(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        proc = self._get(params)
        name = str(params.get("signal", "SIGKILL")).upper()
        if name not in SIGNALS:
            raise RequestFailed("invalid", f"unknown signal {name}; one of {sorted(SIGNALS)}")
        if proc.ended_at is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, SIGNALS[name])
        return proc.info()

    async def resize(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        proc = self._get(params)
        if proc.master is None:
            raise RequestFailed("no_pty", f"process {proc.pid} has no terminal")
        _set_size(proc.master, int(params["cols"]), int(params["rows"]))
        return proc.info()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- starting ---------------------------------------------------------------------------

    async def _spawn_with_pipes(
        self, argv: list[str], cwd: str, env: dict[str, str], stdin: bool
    ) -> asyncio.subprocess.Process:
        with _start_errors(argv):
            child = await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        return child

    async def _spawn_on_terminal(
        self, argv: list[str], cwd: str, env: dict[str, str], size: dict[str, Any]
    ) -> tuple[asyncio.subprocess.Process, int]:
        master, slave = os.openpty()
        try:
            _set_size(master, int(size["cols"]), int(size["rows"]))
            with _start_errors(argv):
                child = await asyncio.create_subprocess_exec(
                    *argv,
                    cwd=cwd,
                    env={"TERM": "xterm-256color", **env},
                    stdin=slave,
                    stdout=slave,
                    stderr=slave,
                    start_new_session=True,
                    preexec_fn=_take_terminal,
                )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        return child, master

    # --- the process's life -----------------------------------------------------------------

    def _get(self, params: dict[str, Any]) -> Process:
        proc = self._table.get(int(params.get("pid", -1)))
        if proc is None:
            raise RequestFailed("process_not_found", f"no process {params.get('pid')} here")
        return proc

    def _remember(self, proc: Process) -> None:
        self._table.pop(proc.pid, None)  # an exited process whose pid came round again
        self._table[proc.pid] = proc
        exited = [p for p in self._table.values() if p.ended_at is not None]
        for old in exited[: max(0, len(exited) - KEEP_EXITED)]:
            del self._table[old.pid]

    def _run(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pump_stream(self, proc: Process, reader: asyncio.StreamReader, name: str) -> None:
        proc.readers += 1
        try:
            while data := await reader.read(READ_BYTES):
                proc.output(name, data)
        finally:
            proc.readers -= 1
            proc.poke()

    async def _pump(self, proc: Process, fd: int, name: str) -> None:
        """Read a terminal until its end (EIO once the last process holding it has gone)."""
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        proc.readers += 1
        loop.add_reader(fd, readable.set)
        try:
            while True:
                await readable.wait()
                readable.clear()
                try:
                    data = os.read(fd, READ_BYTES)
                except BlockingIOError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                proc.output(name, data)
        finally:
            loop.remove_reader(fd)
            proc.master = None
            os.close(fd)
            proc.readers -= 1
            proc.poke()

    async def _wait(self, proc: Process, timeout_s: float) -> None:
        if timeout_s > 0:
            try:
                async with asyncio.timeout(timeout_s):
                    await proc.child.wait()
            except TimeoutError:
                proc.killed_by = "timeout"
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        code = await proc.child.wait()
        if code < 0:
            proc.exit_signal = signal.Signals(-code).name
        else:
            proc.exit_code = code
        proc.ended_at = time.time()
        proc.poke()


@contextlib.contextmanager
def _start_errors(argv: list[str]) -> Any:
    try:
        yield
    except FileNotFoundError as exc:
        raise RequestFailed("not_found", f"{exc.filename or argv[0]}: not found") from exc
    except PermissionError as exc:
        raise RequestFailed("permission_denied", str(exc)) from exc
    except (OSError, subprocess.SubprocessError) as exc:
        raise RequestFailed("invalid", str(exc)) from exc


def _take_terminal() -> None:
    """In the child, before ``exec``: make its terminal (stdin) the session's controlling one."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


async def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            await asyncio.sleep(0.01)

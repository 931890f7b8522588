"""The host's end of the agent channel: one listening Unix socket per sandbox.

The agent dials in; a newer connection replaces an older one (the agent redialed). Requests are
multiplexed by id; each caller gets its events through a callback and then the reply. Anything
the agent sends that breaks the protocol closes that connection and fails its requests: the
sandbox is untrusted, so nothing it sends may crash or confuse the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import os
import secrets
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sandcastle import waiting
from sandcastle.agent import protocol
from sandcastle.errors import AgentError, AgentUnavailableError, ProtocolError, SandcastleError

log = logging.getLogger("sandcastle.channel")

OnEvent = Callable[[dict[str, Any]], Awaitable[None]]


#: Bytes of events one request may have received but not yet consumed. The agent bounds its
#: output far below this; only a misbehaving sandbox reaches it, and its request then fails.
MAX_UNCONSUMED_BYTES = 64 * 1024 * 1024


class _Pending:
    def __init__(self, on_event: OnEvent | None) -> None:
        self.on_event = on_event
        self.reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.events: asyncio.Queue[tuple[dict[str, Any], int] | None] = asyncio.Queue()
        self.unconsumed = 0


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.write_lock = asyncio.Lock()
        self.pending: dict[int, _Pending] = {}
        #: A new secret was sent on this connection and the agent has not yet shown it has it.
        self.rekeyed = False

    async def send(self, message: Any) -> None:
        async with self.write_lock:
            self.writer.write(protocol.encode(message))
            await self.writer.drain()

    def fail_all(self, reason: str) -> None:
        for pending in self.pending.values():
            if not pending.reply.done():
                pending.reply.set_exception(AgentUnavailableError(reason))
            pending.events.put_nowait(None)
        self.pending.clear()

    def fail(self, request_id: int, error: Exception) -> None:
        pending = self.pending.pop(request_id, None)
        if pending is not None:
            if not pending.reply.done():
                pending.reply.set_exception(error)
            pending.events.put_nowait(None)


class AgentLink:
    """The live link to one sandbox's agent."""

    def __init__(
        self,
        sandbox_id: str,
        socket_path: Path,
        pid_file: Path | None = None,
        secret_file: Path | None = None,
    ) -> None:
        self.sandbox_id = sandbox_id
        self.socket_path = socket_path
        #: Where the agent's host pid is kept (trust on first use; see ``_peer_allowed``).
        self.pid_file = pid_file
        #: Where the secret given to the agent at its first connection is kept (``_welcome``).
        self.secret_file = secret_file
        #: Give the agent a new secret at its next hello (``rekey``).
        self._rekey = False
        self._server: asyncio.Server | None = None
        self._conn: _Connection | None = None
        self._connected = asyncio.Event()
        #: Set by ``aclose`` (the sandbox is destroyed, or the server lets go): nobody waits on.
        self._closed = asyncio.Event()
        #: What every call answers instead of being sent: set while the sandbox is frozen
        #: (``freeze``), and once it is destroyed (``aclose``).
        self._refusal: Callable[[], Exception] | None = None
        #: Calls refused while frozen that must still reach the agent (``after_thaw``).
        self._deferred: list[tuple[str, dict[str, Any]]] = []
        self._deferred_tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self.hello: dict[str, Any] | None = None

    async def listen(self) -> None:
        """Listen on the socket (replacing a stale one left by an earlier server)."""
        self._closed.clear()
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(self._accept, path=str(self.socket_path))
        # The sandbox's user is mapped to host root but has no capabilities outside its user
        # namespace; the socket directory is mounted read-only into the sandbox.
        os.chmod(self.socket_path, 0o666)

    @property
    def connected(self) -> bool:
        return self._conn is not None

    async def wait_connected(self, timeout_s: float) -> None:
        """Until the agent is connected; ``AgentUnavailableError`` past ``timeout_s``, or at
        once when the link is closed meanwhile (its sandbox was destroyed)."""
        waits = [asyncio.ensure_future(e.wait()) for e in (self._connected, self._closed)]
        try:
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        if self._connected.is_set():
            return
        if self._closed.is_set():
            raise AgentUnavailableError(f"the link to the agent of {self.sandbox_id} was closed")
        raise AgentUnavailableError(
            f"the agent of sandbox {self.sandbox_id} did not connect within {timeout_s:g} s"
        )

    def _peer_allowed(self, writer: asyncio.StreamWriter) -> bool:
        """Only the process that connected first (the agent) may ever be the agent.

        User code runs as the agent's user and can reach the socket, so a hello proves nothing;
        the peer's pid does. It is recorded on disk at the first connection, before any user
        code has run, so it survives a server restart.
        """
        if self.pid_file is None:
            return True
        sock = writer.get_extra_info("socket")
        pid, _uid, _gid = struct.unpack(
            "3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        )
        try:
            expected = int(self.pid_file.read_text())
        except FileNotFoundError:
            self.pid_file.write_text(str(pid))
            return True
        except ValueError:
            return False
        return bool(pid == expected)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(reader, writer)
        if not self._peer_allowed(writer):
            log.warning(
                "sandbox %s: refused a channel connection not from its agent", self.sandbox_id
            )
            writer.close()
            return
        try:
            async with asyncio.timeout(10):
                hello = await protocol.read_frame(reader)
        except (TimeoutError, protocol.FrameError, OSError) as exc:
            log.warning("sandbox %s: bad hello: %s", self.sandbox_id, exc)
            writer.close()
            return
        if hello is None or hello.get("type") != "hello" or not await self._welcome(conn, hello):
            writer.close()
            return
        old = self._conn
        self._conn = conn
        self.hello = hello
        self._connected.set()
        if old is not None:
            old.fail_all("the agent reconnected")
            old.writer.close()
        await self._read_loop(conn)

    def rekey(self) -> None:
        """Give the agent a secret of its own at its next hello.

        An agent restored from a memory image remembers the secret of the sandbox the image
        was made from, which every other sandbox restored from it (a template image, a
        snapshot's forks) remembers too: proof of nothing. Its first hello, with that secret,
        is answered with a fresh one.
        """
        self._rekey = True

    @property
    def _previous_secret_file(self) -> Path | None:
        return None if self.secret_file is None else self.secret_file.with_suffix(".previous")

    async def _welcome(self, conn: _Connection, hello: dict[str, Any]) -> bool:
        """Check the hello's secret; at the very first connection, hand one out.

        The first connection is the agent's (no user code has run yet); the secret it gets
        then is what proves a later connection is the agent's too, wherever the peer's pid
        cannot (under gVisor every sandbox process connects through the same host process).
        The file is written before the secret is sent, so a crash between leaves no agent
        holding a secret the host forgot.
        """
        if self.secret_file is None:
            return True
        try:
            expected = self.secret_file.read_text().strip()
        except FileNotFoundError:
            _write_private(self.secret_file, secret := secrets.token_urlsafe(32))
            welcome: protocol.Welcome = {"type": "welcome", "secret": secret}
            await conn.send(welcome)
            return True
        offered = hello.get("secret")
        # Until the agent shows it has a new secret, the one before stays good: a crash
        # between writing the new one and the agent reading it must not lock the agent out.
        previous = self._read_previous()
        if isinstance(offered, str) and (
            hmac.compare_digest(offered, expected)
            or (previous is not None and hmac.compare_digest(offered, previous))
        ):
            if self._rekey:
                self._rekey = False
                await self._send_new_secret(conn, expected)
            return True
        log.warning("sandbox %s: refused a hello without the agent's secret", self.sandbox_id)
        return False

    def _read_previous(self) -> str | None:
        try:
            return (
                self._previous_secret_file.read_text().strip()
                if self._previous_secret_file
                else None
            )
        except FileNotFoundError:
            return None

    async def _send_new_secret(self, conn: _Connection, current: str) -> None:
        assert self.secret_file is not None and self._previous_secret_file is not None
        _write_private(self._previous_secret_file, current)
        _write_private(self.secret_file, secret := secrets.token_urlsafe(32))
        conn.rekeyed = True
        rekey: protocol.Welcome = {"type": "welcome", "secret": secret}
        await conn.send(rekey)

    async def detach(self, timeout_s: float = 10.0) -> None:
        """Stop listening and have the agent hang up; it redials once ``listen`` is called.

        Used before the sandbox's memory is saved, so no host connection is inside it.
        """
        if self._server is not None:
            self._server.close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        try:
            await self.call("detach", {})
        except BaseException:
            await self.listen()  # the agent stays (busy, or gone): take calls again
            raise
        if not await waiting.until(
            lambda: self._conn is None, timeout_s=timeout_s, interval_s=0.005
        ):
            raise AgentUnavailableError(f"the agent of sandbox {self.sandbox_id} did not hang up")

    async def _read_loop(self, conn: _Connection) -> None:
        reason = "the agent disconnected"
        try:
            while True:
                message, size = await protocol.read_sized_frame(conn.reader)
                if message is None:
                    break
                self._dispatch(conn, message, size)
        except protocol.FrameError as exc:
            reason = f"the agent broke the channel protocol: {exc}"
            log.warning("sandbox %s: %s", self.sandbox_id, reason)
        except (OSError, asyncio.IncompleteReadError) as exc:
            reason = f"the agent link failed: {exc}"
        finally:
            conn.fail_all(reason)
            conn.writer.close()
            if self._conn is conn:
                self._conn = None
                self._connected.clear()

    def _dispatch(self, conn: _Connection, message: dict[str, Any], size: int) -> None:
        kind = message["type"]
        request_id = message.get("id")
        pending = conn.pending.get(request_id) if isinstance(request_id, int) else None
        if pending is None or not isinstance(request_id, int):
            return  # late or forged: ignore
        if kind == "event" and isinstance(message.get("event"), dict):
            pending.unconsumed += size
            if pending.unconsumed > MAX_UNCONSUMED_BYTES:
                conn.fail(request_id, ProtocolError("the agent sent more output than allowed"))
                return
            pending.events.put_nowait((message["event"], size))
        elif kind == "reply":
            if conn.rekeyed and self._previous_secret_file is not None:
                # Frames are ordered: an agent that replies has read its new secret.
                conn.rekeyed = False
                self._previous_secret_file.unlink(missing_ok=True)
            conn.pending.pop(request_id, None)
            pending.events.put_nowait(None)
            if not pending.reply.done():
                pending.reply.set_result(message)

    async def call(
        self,
        method: str,
        params: dict[str, Any],
        *,
        on_event: OnEvent | None = None,
        payload: bytes | None = None,
        returns_payload: bool = False,
    ) -> dict[str, Any]:
        """Send a request (with raw ``payload`` bytes besides, if given); pass each event to
        ``on_event``; return the reply's result. With ``returns_payload`` the reply's raw bytes
        are the result's ``protocol.PAYLOAD``; any other call drops them, so no bytes an agent
        sends where none were asked for reach a caller that would pass the result on as JSON.

        Cancelling the caller sends ``cancel`` to the agent, which stops the work.
        """
        if self._refusal is not None:
            raise self._refusal()
        conn = self._conn
        if conn is None:
            raise AgentUnavailableError(f"the agent of sandbox {self.sandbox_id} is not connected")
        request_id = next(self._ids)
        pending = _Pending(on_event)
        conn.pending[request_id] = pending
        request: protocol.Request = {
            "type": "request",
            "id": request_id,
            "method": method,
            "params": params,
        }
        if payload is not None:
            request[protocol.PAYLOAD] = payload
        try:
            try:
                await conn.send(request)
            except protocol.FrameError as exc:
                raise ProtocolError(f"request too large for the agent channel: {exc}") from exc
            while True:
                item = await pending.events.get()
                if item is None:
                    break
                event, size = item
                if on_event is not None:
                    await on_event(event)
                pending.unconsumed -= size
            reply = await pending.reply
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.send({"type": "cancel", "id": request_id}))
            raise
        except OSError as exc:
            if self._refusal is not None:
                # The link was closed (or frozen) while this request was being written: the
                # broken pipe is a consequence; what happened to the sandbox is the answer.
                raise self._refusal() from exc
            raise AgentUnavailableError(f"the agent link failed: {exc}") from exc
        finally:
            conn.pending.pop(request_id, None)
        error = reply.get("error")
        if isinstance(error, dict):
            raise AgentRequestError(str(error.get("code")), str(error.get("message")))
        result = reply.get("result")
        result = result if isinstance(result, dict) else {}
        result.pop(protocol.PAYLOAD, None)
        if returns_payload and protocol.PAYLOAD in reply:
            result[protocol.PAYLOAD] = reply[protocol.PAYLOAD]
        return result

    def freeze(self, refusal: Callable[[], Exception]) -> int:
        """The sandbox is frozen: end every call in flight, and fail every new one until
        ``thaw``, with ``refusal()``, without cancelling any work in the agent (a frozen agent
        could not answer; the work goes on when it thaws and its late reply is ignored).

        Without this, a request that began before the freeze (an upload between two chunks,
        a run between two steps) would wait on the frozen agent until the resume. Returns how
        many calls in flight were ended."""
        self._refusal = refusal
        return self._refuse_pending(refusal)

    def thaw(self) -> None:
        self._refusal = None
        deferred, self._deferred = self._deferred, []
        for method, params in deferred:
            task = asyncio.get_running_loop().create_task(self._send_deferred(method, params))
            self._deferred_tasks.add(task)
            task.add_done_callback(self._deferred_tasks.discard)

    def after_thaw(self, method: str, params: dict[str, Any]) -> None:
        """Send a call when the frozen sandbox thaws, its answer unneeded: the cleanup of a
        request the freeze cut (aborting a half-written upload, which would otherwise leave
        its part file until the agent reaps the idle handle)."""
        self._deferred.append((method, params))

    async def _send_deferred(self, method: str, params: dict[str, Any]) -> None:
        try:
            await self.call(method, params)
        except SandcastleError as exc:  # nobody awaits this; the agent reaps what is left
            log.info("sandbox %s: %s after the thaw failed: %s", self.sandbox_id, method, exc)

    async def aclose(self, refusal: Callable[[], Exception] | None = None) -> None:
        """Stop listening and drop the agent. With ``refusal`` (the sandbox was destroyed,
        say), calls in flight and every later one fail with ``refusal()``; without, as a link
        that closed."""
        self._closed.set()
        if refusal is not None:
            self._refusal = refusal
            self._refuse_pending(refusal)
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._conn is not None:
            self._conn.fail_all("the link was closed")
            self._conn.writer.close()
            self._conn = None
        self._connected.clear()

    def _refuse_pending(self, refusal: Callable[[], Exception]) -> int:
        conn = self._conn
        if conn is None:
            return 0
        ids = list(conn.pending)
        for request_id in ids:
            conn.fail(request_id, refusal())
        return len(ids)


class AgentRequestError(AgentError):
    """The agent answered a request with an error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, readable by root only, whole or not at all."""
    staging = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(staging, path)

"""The agent's end of the channel: dial home, serve requests concurrently, redial on loss."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sandcastle.agent import protocol

log = logging.getLogger("sandcastle.agent")

#: Handler of one request: gets the params and an ``emit`` for events; returns the result.
#: Raw bytes travel under ``protocol.PAYLOAD``, in the params and in the result alike.
Emit = Callable[[dict[str, Any]], Awaitable[None]]
Handler = Callable[
    [dict[str, Any], Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[dict[str, Any]]
]


class RequestFailed(Exception):
    """Raised by a handler to reply with an error code instead of a result."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class AgentChannel:
    """Keeps one connection to the host and serves its requests, each in its own task."""

    def __init__(
        self,
        socket_path: str,
        sandbox_id: str,
        handlers: dict[str, Handler],
        hello_contexts: Callable[[], list[str]],
        on_disconnect: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._socket_path = socket_path
        #: Called when a connection ends: what the host holds by id (file handles) means
        #: nothing to the next connection, whose host never saw those ids.
        self._on_disconnect = on_disconnect
        self._sandbox_id = sandbox_id
        self._handlers = handlers
        self._hello_contexts = hello_contexts
        #: Given by the host at the first connection (before any user code ran); proves this
        #: process is the agent when it redials. Never written anywhere user code could read.
        self._secret: str | None = None
        #: Set by ``detach``: the host is about to save the sandbox's memory and listens again
        #: once it is restored (or right away), so dial often instead of backing off.
        self._parked = False

    async def run_forever(self) -> None:
        delay = 0.02
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(self._socket_path)
            except OSError:
                # The host is not listening (server restarting, memory being saved): keep
                # dialing, gently.
                await asyncio.sleep(delay)
                delay = 0.02 if self._parked else min(delay * 2, 0.5)
                continue
            delay = 0.02
            self._parked = False
            try:
                await self._serve(reader, writer)
            except (OSError, protocol.FrameError) as exc:
                log.warning("channel lost: %s", exc)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                if self._on_disconnect is not None:
                    await self._on_disconnect()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        write_lock = asyncio.Lock()
        tasks: dict[int, asyncio.Task[None]] = {}

        async def send(message: Any) -> None:
            async with write_lock:
                writer.write(protocol.encode(message))
                await writer.drain()

        hello: protocol.Hello = {
            "type": "hello",
            "version": protocol.PROTOCOL_VERSION,
            "sandbox_id": self._sandbox_id,
            "contexts": self._hello_contexts(),
        }
        if self._secret is not None:
            hello["secret"] = self._secret
        await send(hello)
        try:
            while True:
                message = await protocol.read_frame(reader)
                if message is None:
                    return
                if message["type"] == "welcome":
                    # At the first connection, and again after a restore: the host re-keys an
                    # agent whose secret came with a memory image other sandboxes share.
                    self._secret = str(message.get("secret"))
                elif message["type"] == "request" and message.get("method") == "detach":
                    # Reply, then hang up: the host saves the sandbox's memory without a live
                    # host connection in it, and the agent redials once it listens again. Work
                    # in flight would be cut off, so a busy agent refuses.
                    if await self._detach(int(message["id"]), tasks, send):
                        return
                elif message["type"] == "request":
                    request_id = int(message["id"])
                    task = asyncio.create_task(
                        self._handle(message, send), name=str(message.get("method"))
                    )
                    tasks[request_id] = task
                    task.add_done_callback(_forget(tasks, request_id))
                elif message["type"] == "cancel":
                    running = tasks.get(int(message["id"]))
                    if running is not None:
                        running.cancel()
        finally:
            # In-flight work keeps running only if it can still reply; a lost link ends it.
            for task in list(tasks.values()):
                task.cancel()

    async def _detach(
        self,
        request_id: int,
        tasks: dict[int, asyncio.Task[None]],
        send: Callable[[Any], Awaitable[None]],
    ) -> bool:
        reply: protocol.Reply
        # A reader of a process's output only watches: it is cut off (the process itself is
        # saved with the rest), or a watched process would keep its sandbox awake for ever.
        busy = [task for task in tasks.values() if task.get_name() not in WATCHING_METHODS]
        if busy:
            reply = {
                "type": "reply",
                "id": request_id,
                "error": {"code": "busy", "message": f"{len(busy)} requests are in progress"},
            }
            await send(reply)
            return False
        reply = {"type": "reply", "id": request_id, "result": {}}
        await send(reply)
        self._parked = True
        return True

    async def _handle(
        self, message: dict[str, Any], send: Callable[[Any], Awaitable[None]]
    ) -> None:
        request_id = int(message["id"])

        async def emit(event: dict[str, Any]) -> None:
            out: protocol.Event = {"type": "event", "id": request_id, "event": event}
            await send(out)

        reply: protocol.Reply
        handler = self._handlers.get(str(message.get("method")))
        try:
            if handler is None:
                raise RequestFailed("unknown_method", f"unknown method {message.get('method')!r}")
            params = dict(message.get("params") or {})
            if protocol.PAYLOAD in message:
                params[protocol.PAYLOAD] = message[protocol.PAYLOAD]
            result = await handler(params, emit)
            reply = {"type": "reply", "id": request_id, "result": result}
            # A handler's raw bytes (a file's chunk) go after the reply's JSON, not in it.
            if protocol.PAYLOAD in result:
                reply[protocol.PAYLOAD] = result.pop(protocol.PAYLOAD)
        except asyncio.CancelledError:
            reply = {
                "type": "reply",
                "id": request_id,
                "error": {"code": "cancelled", "message": "cancelled by the host"},
            }
        except RequestFailed as exc:
            reply = {
                "type": "reply",
                "id": request_id,
                "error": {"code": exc.code, "message": exc.message},
            }
        except Exception as exc:  # any failure is reported, the agent lives on
            log.exception("request %s failed", request_id)
            reply = {
                "type": "reply",
                "id": request_id,
                "error": {"code": "internal", "message": f"{type(exc).__name__}: {exc}"},
            }
        try:
            await send(reply)
        except (protocol.FrameError, UnicodeEncodeError, TypeError, ValueError) as exc:
            # The result could not be framed (too large, not JSON): the host must still get an
            # answer, or its caller would wait forever.
            failed: protocol.Reply = {
                "type": "reply",
                "id": request_id,
                "error": {"code": "internal", "message": f"reply could not be sent: {exc}"},
            }
            with contextlib.suppress(OSError, protocol.FrameError):
                await send(failed)
        except OSError:
            pass  # the link is gone; the host fails the request itself


#: Requests that only watch (a process's output), which a detach cuts off instead of waiting.
WATCHING_METHODS = frozenset({"process.connect"})


def _forget(tasks: dict[int, asyncio.Task[None]], request_id: int) -> Callable[[object], None]:
    def forget(_task: object) -> None:
        tasks.pop(request_id, None)

    return forget

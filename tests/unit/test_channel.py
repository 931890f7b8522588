"""``AgentLink`` against a hand-written agent over a real Unix socket.

The peer is deliberately dumb: it sends exactly the frames a test gives it, so the host's end
is tested for multiplexing, events, cancellation, reconnection and hostile input.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
import struct
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from sandcastle.agent import protocol
from sandcastle.errors import (
    AgentUnavailableError,
    SandboxEndedError,
    SandboxPausedError,
    SandcastleError,
)
from sandcastle.runtime.channel import AgentLink, AgentRequestError
from tests.helpers import until

HELLO = {"type": "hello", "version": 1, "sandbox_id": "sb_00000001", "contexts": []}


class Peer:
    """One connection of a fake agent."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, link: AgentLink, hello: dict[str, Any] | None = HELLO) -> Peer:
        reader, writer = await asyncio.open_unix_connection(str(link.socket_path))
        peer = cls(reader, writer)
        if hello is not None:
            await peer.send(hello)
        return peer

    async def send(self, message: Any) -> None:
        await self.send_raw(protocol.encode(message))

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self) -> dict[str, Any] | None:
        return await asyncio.wait_for(protocol.read_frame(self.reader), 2)

    async def request(self) -> dict[str, Any]:
        message = await self.recv()
        assert message is not None and message["type"] == "request", message
        return message

    async def closed_by_host(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 2) == b""

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Short, outside pytest's tmp: Unix socket paths are limited to ~108 bytes.
    path = Path(tempfile.mkdtemp(prefix="sclink-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Whatever escapes to the event loop's exception handler (it must be nothing)."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield seen
    loop.set_exception_handler(previous)


@pytest.fixture
async def link(socket_dir: Path, loop_errors: list[dict[str, Any]]) -> AsyncIterator[AgentLink]:
    link = AgentLink("sb_00000001", socket_dir / "chan" / "agent.sock")
    await link.listen()
    yield link
    await link.aclose()
    await asyncio.sleep(0)
    assert loop_errors == []


@pytest.fixture
async def peer(link: AgentLink) -> AsyncIterator[Peer]:
    peer = await Peer.connect(link)
    await link.wait_connected(2)
    yield peer
    await peer.aclose()


def reply(request: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    return {"type": "reply", "id": request["id"], "result": result}


# --- connecting -----------------------------------------------------------------------------


async def test_listen_makes_a_socket_the_sandbox_user_can_dial(link: AgentLink) -> None:
    mode = os.stat(link.socket_path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o666
    assert not link.connected


async def test_listen_replaces_a_stale_socket_file(socket_dir: Path) -> None:
    path = socket_dir / "agent.sock"
    path.write_text("left by a dead server")
    link = AgentLink("sb_00000001", path)
    await link.listen()
    try:
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        peer = await Peer.connect(link)
        await link.wait_connected(2)
        await peer.aclose()
    finally:
        await link.aclose()


async def test_hello_connects_the_link(link: AgentLink, peer: Peer) -> None:
    assert link.connected
    assert link.hello == HELLO


async def test_wait_connected_times_out_with_agent_unavailable(link: AgentLink) -> None:
    with pytest.raises(AgentUnavailableError, match=r"did not connect within 0\.05 s"):
        await link.wait_connected(0.05)


async def test_call_without_an_agent_fails_at_once(link: AgentLink) -> None:
    with pytest.raises(AgentUnavailableError, match="not connected"):
        await asyncio.wait_for(link.call("ping", {}), 1)


@pytest.mark.parametrize(
    "first",
    [
        protocol.encode({"type": "reply", "id": 1, "result": {}}),
        b"\x00\x00\x00\x03abc",
        struct.pack(">I", 20 * 1024 * 1024),
    ],
    ids=["not-hello", "garbage", "oversized"],
)
async def test_a_connection_that_does_not_start_with_hello_is_dropped(
    link: AgentLink, first: bytes
) -> None:
    peer = await Peer.connect(link, hello=None)
    await peer.send_raw(first)
    assert await peer.closed_by_host()
    assert not link.connected
    await peer.aclose()


# --- calls ----------------------------------------------------------------------------------


async def test_call_returns_the_reply_result(link: AgentLink, peer: Peer) -> None:
    call = asyncio.create_task(link.call("ping", {"x": 1}))
    request = await peer.request()
    assert request == {"type": "request", "id": request["id"], "method": "ping", "params": {"x": 1}}
    await peer.send(reply(request, {"contexts": ["ctx_1"]}))
    assert await call == {"contexts": ["ctx_1"]}


async def test_raw_payloads_go_out_with_a_request_and_come_back_with_a_reply(
    link: AgentLink, peer: Peer
) -> None:
    call = asyncio.create_task(
        link.call("file.read.chunk", {"n": 1}, payload=b"\x00up", returns_payload=True)
    )
    request = await peer.request()
    assert request["payload"] == b"\x00up"
    await peer.send({**reply(request, {"eof": True}), "payload": b"\xffdown"})
    assert await call == {"eof": True, "payload": b"\xffdown"}


async def test_bytes_an_agent_sends_where_none_were_asked_for_are_dropped(
    link: AgentLink, peer: Peer
) -> None:
    # A hostile agent's bytes must not reach a caller that passes the result on as JSON.
    call = asyncio.create_task(link.call("file.stat", {}))
    request = await peer.request()
    await peer.send({**reply(request, {"size": 1}), "payload": b"\xff"})
    assert await call == {"size": 1}


async def test_error_reply_raises_agent_request_error(link: AgentLink, peer: Peer) -> None:
    call = asyncio.create_task(link.call("execute", {}))
    request = await peer.request()
    await peer.send(
        {
            "type": "reply",
            "id": request["id"],
            "error": {"code": "context_not_found", "message": "no context ctx_1"},
        }
    )
    with pytest.raises(AgentRequestError) as caught:
        await call
    assert (caught.value.code, caught.value.message) == ("context_not_found", "no context ctx_1")


async def test_two_concurrent_calls_are_multiplexed(link: AgentLink, peer: Peer) -> None:
    first = asyncio.create_task(link.call("execute", {"n": 1}))
    second = asyncio.create_task(link.call("execute", {"n": 2}))
    requests = {(r := await peer.request())["params"]["n"]: r for _ in range(2)}
    assert requests[1]["id"] != requests[2]["id"]
    # Answer the second first; each caller must get its own answer.
    await peer.send(reply(requests[2], {"answer": "two"}))
    assert await asyncio.wait_for(second, 2) == {"answer": "two"}
    assert not first.done()
    await peer.send(reply(requests[1], {"answer": "one"}))
    assert await asyncio.wait_for(first, 2) == {"answer": "one"}


async def test_events_arrive_in_order_before_the_reply(link: AgentLink, peer: Peer) -> None:
    seen: list[tuple[dict[str, Any], bool]] = []
    task: asyncio.Task[dict[str, Any]]

    async def on_event(event: dict[str, Any]) -> None:
        seen.append((event, task.done()))

    task = asyncio.create_task(link.call("execute", {}, on_event=on_event))
    other = asyncio.create_task(link.call("execute", {}))
    request = await peer.request()
    other_request = await peer.request()
    events = [
        {"kind": "execution_count", "value": 1},
        {"kind": "stdout", "text": "a"},
        {"kind": "result", "is_primary": True, "data": {"text/plain": "1"}},
    ]
    for event in events:
        await peer.send({"type": "event", "id": request["id"], "event": event})
        # Events of another request, and forged ids, go nowhere near this caller.
        await peer.send({"type": "event", "id": other_request["id"], "event": {"kind": "x"}})
        await peer.send({"type": "event", "id": 9999, "event": {"kind": "forged"}})
    await peer.send(reply(request, {"status": "ok"}))
    assert await task == {"status": "ok"}
    assert seen == [(event, False) for event in events]
    await peer.send(reply(other_request, {}))
    assert await other == {}


async def test_reply_for_an_unknown_id_is_ignored(link: AgentLink, peer: Peer) -> None:
    call = asyncio.create_task(link.call("ping", {}))
    request = await peer.request()
    await peer.send({"type": "reply", "id": request["id"] + 100, "result": {"forged": True}})
    await peer.send({"type": "reply", "id": "1", "result": {"forged": True}})
    await peer.send({"type": "mystery", "id": request["id"]})
    await peer.send(reply(request, {"real": True}))
    assert await call == {"real": True}


async def test_cancelling_a_call_sends_cancel(link: AgentLink, peer: Peer) -> None:
    call = asyncio.create_task(link.call("execute", {"code": "while True: pass"}))
    request = await peer.request()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert await peer.recv() == {"type": "cancel", "id": request["id"]}
    # The agent's late reply to the cancelled request is dropped; the link keeps working.
    await peer.send({"type": "reply", "id": request["id"], "error": {"code": "cancelled"}})
    after = asyncio.create_task(link.call("ping", {}))
    await peer.send(reply(await peer.request(), {"ok": True}))
    assert await after == {"ok": True}


# --- a misbehaving or vanishing agent -------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        b"\x00\x00\x00\x09not json!",
        protocol.encode([1, 2, 3]),
        protocol.encode({"no": "type"}),
        struct.pack(">I", 20 * 1024 * 1024),
    ],
    ids=["garbage-json", "not-an-object", "no-type", "20MB-header"],
)
async def test_protocol_violation_fails_pending_calls_and_drops_the_connection(
    link: AgentLink, peer: Peer, frame: bytes
) -> None:
    calls = [asyncio.create_task(link.call("execute", {"n": n})) for n in range(2)]
    for _ in calls:
        await peer.request()
    await peer.send_raw(frame)
    for call in calls:
        with pytest.raises(AgentUnavailableError, match="broke the channel protocol"):
            await asyncio.wait_for(call, 2)
    assert await peer.closed_by_host()
    assert not link.connected
    # The server is unharmed: a fresh connection serves calls.
    fresh = await Peer.connect(link)
    await link.wait_connected(2)
    call = asyncio.create_task(link.call("ping", {}))
    await fresh.send(reply(await fresh.request(), {"pong": True}))
    assert await call == {"pong": True}
    await fresh.aclose()


async def test_agent_disconnecting_fails_pending_calls(link: AgentLink, peer: Peer) -> None:
    call = asyncio.create_task(link.call("execute", {}))
    await peer.request()
    await peer.aclose()
    with pytest.raises(AgentUnavailableError, match="disconnected"):
        await asyncio.wait_for(call, 2)
    assert not link.connected


async def test_disconnect_inside_a_frame_fails_pending_calls(link: AgentLink, peer: Peer) -> None:
    call = asyncio.create_task(link.call("execute", {}))
    await peer.request()
    await peer.send_raw(struct.pack(">I", 100) + b'{"type":')
    await peer.aclose()
    with pytest.raises(AgentUnavailableError, match="broke the channel protocol"):
        await asyncio.wait_for(call, 2)


async def test_reconnect_replaces_the_old_connection(link: AgentLink, peer: Peer) -> None:
    old_call = asyncio.create_task(link.call("execute", {}))
    await peer.request()
    newer_hello = {**HELLO, "contexts": ["ctx_1"]}
    newer = await Peer.connect(link, hello=newer_hello)
    with pytest.raises(AgentUnavailableError, match="reconnected"):
        await asyncio.wait_for(old_call, 2)
    assert await peer.closed_by_host()
    assert link.connected and link.hello == newer_hello
    call = asyncio.create_task(link.call("ping", {}))
    await newer.send(reply(await newer.request(), {"via": "newer"}))
    assert await call == {"via": "newer"}
    await newer.aclose()


async def test_aclose_fails_pending_calls_and_stops_listening(link: AgentLink, peer: Peer) -> None:
    call = asyncio.create_task(link.call("execute", {}))
    await peer.request()
    await link.aclose()
    with pytest.raises(AgentUnavailableError, match="closed"):
        await asyncio.wait_for(call, 2)
    assert not link.connected
    with pytest.raises(OSError):
        await asyncio.open_unix_connection(str(link.socket_path))


async def test_aclose_with_a_refusal_answers_it_now_and_to_every_later_call(
    link: AgentLink, peer: Peer
) -> None:
    call = asyncio.create_task(link.call("file.write.chunk", {}))
    await peer.request()
    await link.aclose(lambda: SandboxEndedError("sandbox sb_00000001 was destroyed"))
    with pytest.raises(SandboxEndedError, match="destroyed"):
        await asyncio.wait_for(call, 2)
    with pytest.raises(SandboxEndedError, match="destroyed"):  # not "not connected": a 502
        await link.call("file.write.chunk", {})


# --- a frozen sandbox -----------------------------------------------------------------------


def frozen() -> SandboxPausedError:
    return SandboxPausedError("sandbox sb_00000001 was paused while this ran")


async def test_freeze_answers_calls_in_flight_without_cancelling_their_work(
    link: AgentLink, peer: Peer
) -> None:
    calls = [asyncio.create_task(link.call("execute", {"n": n})) for n in range(2)]
    requests = [await peer.request() for _ in calls]
    assert link.freeze(frozen) == 2
    for call in calls:
        with pytest.raises(SandboxPausedError, match="paused while this ran"):
            await asyncio.wait_for(call, 2)
    # No ``cancel`` went to the agent: the work goes on after the thaw, its reply ignored.
    link.thaw()
    await peer.send(reply(requests[0], {"late": True}))
    after = asyncio.create_task(link.call("ping", {}))
    request = await peer.request()
    assert request["method"] == "ping"
    await peer.send(reply(request, {"pong": True}))
    assert await after == {"pong": True}


async def test_a_frozen_link_refuses_new_calls_until_the_thaw(link: AgentLink, peer: Peer) -> None:
    link.freeze(frozen)
    with pytest.raises(SandboxPausedError):
        await link.call("file.write.chunk", {"handle": "h1"})
    with pytest.raises(asyncio.TimeoutError):  # nothing was sent
        await peer.recv()
    link.thaw()
    call = asyncio.create_task(link.call("ping", {}))
    await peer.send(reply(await peer.request(), {}))
    assert await call == {}


async def test_calls_deferred_while_frozen_are_sent_at_the_thaw(
    link: AgentLink, peer: Peer
) -> None:
    link.freeze(frozen)
    link.after_thaw("file.write.abort", {"handle": "h1"})
    with pytest.raises(asyncio.TimeoutError):
        await peer.recv()
    link.thaw()
    request = await peer.request()
    assert (request["method"], request["params"]) == ("file.write.abort", {"handle": "h1"})
    await peer.send(reply(request, {}))


# --- requests the host cannot send ------------------------------------------------------------


def _oversized_params() -> dict[str, Any]:
    return {"code": "x" * (protocol.MAX_FRAME_BYTES + 1)}


async def test_oversized_request_is_refused_locally_and_the_link_stays_usable(
    link: AgentLink, peer: Peer
) -> None:
    with pytest.raises(Exception, match="exceeds"):
        await link.call("execute", _oversized_params())
    call = asyncio.create_task(link.call("ping", {}))
    request = await peer.request()  # nothing of the refused request reached the agent
    assert request["method"] == "ping"
    await peer.send(reply(request, {}))
    assert await call == {}


async def test_oversized_request_is_a_sandcastle_error(link: AgentLink, peer: Peer) -> None:
    with pytest.raises(SandcastleError):
        await link.call("execute", _oversized_params())


# --- secrets --------------------------------------------------------------------------------


@pytest.fixture
async def secured(socket_dir: Path) -> AsyncIterator[AgentLink]:
    link = AgentLink(
        "sb_00000001", socket_dir / "chan" / "agent.sock", secret_file=socket_dir / "agent.secret"
    )
    await link.listen()
    yield link
    await link.aclose()


async def hello_with(link: AgentLink, secret: str | None) -> Peer:
    return await Peer.connect(link, {**HELLO, **({"secret": secret} if secret else {})})


async def test_the_first_hello_gets_a_secret_and_later_hellos_must_show_it(
    secured: AgentLink,
) -> None:
    first = await hello_with(secured, None)
    welcome = await first.recv()
    assert welcome is not None and welcome["type"] == "welcome"
    secret = welcome["secret"]
    assert secured.secret_file is not None
    assert secured.secret_file.read_text() == secret
    assert stat.S_IMODE(secured.secret_file.stat().st_mode) == 0o600

    impostor = await hello_with(secured, "guessed")
    assert await impostor.closed_by_host()
    again = await hello_with(secured, secret)
    await secured.wait_connected(2)
    for peer in (first, impostor, again):
        await peer.aclose()


async def test_a_restored_agent_is_rekeyed_and_the_shared_secret_then_stops_working(
    secured: AgentLink,
) -> None:
    assert secured.secret_file is not None
    secured.secret_file.write_text("shared-by-every-fork")  # as adopted from a memory image
    secured.rekey()

    restored = await hello_with(secured, "shared-by-every-fork")
    welcome = await restored.recv()
    assert welcome is not None and welcome["type"] == "welcome"
    fresh = welcome["secret"]
    assert fresh != "shared-by-every-fork"
    assert secured.secret_file.read_text() == fresh
    # Until the agent shows it read the new secret (it replies to something), the old one
    # still works: a crash in between must not lock the agent out.
    call = asyncio.create_task(secured.call("ping", {}))
    request = await restored.request()
    await restored.send(reply(request, {}))
    await call

    another_fork = await hello_with(secured, "shared-by-every-fork")
    assert await another_fork.closed_by_host()
    redial = await hello_with(secured, fresh)

    async def connected() -> bool:
        return secured.connected

    await until(connected, "the redial with the fresh secret is accepted")
    for peer in (restored, another_fork, redial):
        await peer.aclose()


async def test_a_crash_before_the_agent_read_its_new_secret_leaves_the_old_one_good(
    secured: AgentLink, socket_dir: Path
) -> None:
    assert secured.secret_file is not None
    secured.secret_file.write_text("from-the-image")
    secured.rekey()
    restored = await hello_with(secured, "from-the-image")
    assert (await restored.recv() or {}).get("type") == "welcome"
    await restored.aclose()
    await secured.aclose()

    # A new server process: the agent, which never got the new secret, redials with the old.
    after_restart = AgentLink(
        "sb_00000001", socket_dir / "chan" / "agent.sock", secret_file=secured.secret_file
    )
    await after_restart.listen()
    try:
        agent = await hello_with(after_restart, "from-the-image")
        await after_restart.wait_connected(2)
        await agent.aclose()
    finally:
        await after_restart.aclose()

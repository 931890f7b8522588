"""The agent's processes (``process.*``, docs/AGENT_PROTOCOL.md) on the host, through a real link:
output streamed and replayed, exit codes and signals, stdin, timeouts, a terminal, reconnects."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field
from typing import Any

import pytest

from sandcastle.agent.processes import REPLAY_BYTES
from sandcastle.runtime.channel import AgentRequestError
from tests.agent.conftest import RunningAgent
from tests.helpers import until

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Connected:
    """What one ``process.connect`` streamed so far, and its answer once it came."""

    output: dict[str, bytes] = field(default_factory=dict)
    dropped: int = 0
    reply: dict[str, Any] = field(default_factory=dict)

    def text(self, stream: str) -> str:
        return self.output.get(stream, b"").decode()


async def start(agent: RunningAgent, *argv: str, **params: Any) -> dict[str, Any]:
    return await agent.link.call("process.start", {"argv": list(argv), **params})


async def connect(agent: RunningAgent, pid: int, into: Connected | None = None) -> Connected:
    seen = into or Connected()

    async def collect(event: dict[str, Any]) -> None:
        if event["kind"] == "dropped":
            seen.dropped += event["bytes"]
        else:
            data = base64.b64decode(event["data_b64"])
            seen.output[event["stream"]] = seen.output.get(event["stream"], b"") + data

    async with asyncio.timeout(20):
        seen.reply = await agent.link.call("process.connect", {"pid": pid}, on_event=collect)
    return seen


async def send(agent: RunningAgent, pid: int, data: bytes) -> None:
    params = {"pid": pid, "data_b64": base64.b64encode(data).decode()}
    await agent.link.call("process.input", params)


async def test_output_of_both_streams_and_the_exit_code(agent: RunningAgent) -> None:
    started = await start(agent, "sh", "-c", "echo out; echo err >&2; exit 3", tag="t1")
    assert started["running"] is True and started["cmd"] == "sh" and started["tag"] == "t1"
    done = await connect(agent, started["pid"])
    assert done.output == {"stdout": b"out\n", "stderr": b"err\n"}
    assert done.reply["exit_code"] == 3 and done.reply["signal"] is None
    assert done.reply["running"] is False and done.reply["duration_ms"] >= 0


async def test_cwd_and_env_apply_and_the_agents_own_variables_do_not_leak(
    agent: RunningAgent,
) -> None:
    started = await start(
        agent, "sh", "-c", 'pwd; echo "$GREETING"; echo "[$SANDCASTLE_CHANNEL_SOCKET]"',
        cwd="/tmp", env={"GREETING": "hello"},
    )  # fmt: skip
    done = await connect(agent, started["pid"])
    assert done.output["stdout"] == b"/tmp\nhello\n[]\n"


async def test_a_command_that_does_not_exist_is_not_found(agent: RunningAgent) -> None:
    with pytest.raises(AgentRequestError) as caught:
        await start(agent, "no-such-command-here")
    assert caught.value.code == "not_found"
    with pytest.raises(AgentRequestError) as caught:
        await agent.link.call("process.connect", {"pid": 999_999})
    assert caught.value.code == "process_not_found"


async def test_stdin_is_written_and_closed(agent: RunningAgent) -> None:
    started = await start(agent, "cat", stdin=True)
    await send(agent, started["pid"], b"line one\n")
    await send(agent, started["pid"], b"line two\n")
    await agent.link.call("process.close_stdin", {"pid": started["pid"]})
    done = await connect(agent, started["pid"])
    assert done.output["stdout"] == b"line one\nline two\n" and done.reply["exit_code"] == 0


async def test_without_stdin_a_reader_sees_its_end_at_once(agent: RunningAgent) -> None:
    started = await start(agent, "cat")
    done = await connect(agent, started["pid"])
    assert done.reply["exit_code"] == 0 and done.output == {}
    with pytest.raises(AgentRequestError) as caught:
        await send(agent, started["pid"], b"late")
    assert caught.value.code == "exited"


async def test_a_signal_reaches_the_process_and_what_it_started(agent: RunningAgent) -> None:
    started = await start(agent, "sh", "-c", "sleep 60 & sleep 60; echo never")
    listed = await agent.link.call("process.list", {})
    assert started["pid"] in [p["pid"] for p in listed["processes"] if p["running"]]
    await agent.link.call("process.signal", {"pid": started["pid"], "signal": "SIGTERM"})
    done = await connect(agent, started["pid"])  # ends: the background sleep got it too
    assert done.reply["signal"] == "SIGTERM" and done.reply["exit_code"] is None
    with pytest.raises(AgentRequestError) as caught:
        await agent.link.call("process.signal", {"pid": started["pid"], "signal": "SIGFOO"})
    assert caught.value.code == "invalid"


async def test_a_timeout_kills_the_process(agent: RunningAgent) -> None:
    started = await start(agent, "sleep", "60", timeout_ms=300)
    done = await connect(agent, started["pid"])
    assert done.reply["signal"] == "SIGKILL" and done.reply["killed_by"] == "timeout"


async def test_a_terminal_of_the_size_asked_that_can_be_resized(agent: RunningAgent) -> None:
    script = "tty; stty size; read line; stty size; echo got:$line"
    started = await start(agent, "sh", "-c", script, pty={"cols": 100, "rows": 30})
    assert started["pty"] is True
    pid = started["pid"]
    seen = Connected()
    connected = asyncio.create_task(connect(agent, pid, seen))

    async def sized() -> bool:
        return "30 100" in seen.text("pty")

    assert await until(sized, "the first stty")
    await agent.link.call("process.resize", {"pid": pid, "cols": 120, "rows": 40})
    await send(agent, pid, b"hello\n")
    done = await connected
    text = done.text("pty")
    assert text.startswith("/dev/pts/"), text
    assert "40 120" in text and "got:hello" in text  # the terminal echoed the input too
    assert set(done.output) == {"pty"} and done.reply["exit_code"] == 0
    other = await start(agent, "true")  # a plain process has no terminal
    with pytest.raises(AgentRequestError) as caught:
        await agent.link.call("process.resize", {"pid": other["pid"], "cols": 1, "rows": 1})
    assert caught.value.code == "no_pty"


async def test_output_before_the_connect_is_replayed_within_its_bound(
    agent: RunningAgent,
) -> None:
    size = 3 * REPLAY_BYTES
    started = await start(agent, "head", "-c", str(size), "/dev/zero")
    await asyncio.sleep(0.5)  # it has finished writing: only the bound's worth is kept
    done = await connect(agent, started["pid"])
    assert done.dropped > 0
    assert done.dropped + len(done.output["stdout"]) == size
    assert len(done.output["stdout"]) <= REPLAY_BYTES


async def test_a_process_outlives_its_connection_and_a_reconnect_resumes_its_output(
    agent: RunningAgent,
) -> None:
    started = await start(agent, "sh", "-c", "echo first; read x; echo second:$x", stdin=True)
    first = asyncio.create_task(connect(agent, started["pid"]))
    await asyncio.sleep(0.3)
    await agent.relink()  # the server restarted: its connect is cut, the process is not
    with pytest.raises(Exception):  # noqa: B017 - whichever way the cut link says it
        await first
    await send(agent, started["pid"], b"again\n")
    done = await connect(agent, started["pid"])
    assert done.output["stdout"] == b"first\nsecond:again\n" and done.reply["exit_code"] == 0

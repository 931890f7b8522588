"""File chunks on the agent channel: raw payloads, and base64 for an agent from before them."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from sandcastle.agent import protocol
from sandcastle.runtime.channel import AgentLink
from sandcastle.services.files import chunk_of, push_file


class RecordingLink:
    """Answers every call, and keeps what each carried."""

    def __init__(self, version: int) -> None:
        self.hello = {"type": "hello", "version": version}
        self.calls: list[tuple[str, dict[str, Any], bytes | None]] = []

    async def call(
        self,
        method: str,
        params: dict[str, Any],
        *,
        on_event: Any = None,
        payload: Any = None,
        returns_payload: bool = False,
    ) -> dict[str, Any]:
        self.calls.append((method, params, payload))
        if method == "file.write.close":
            info = {"name": "f", "path": "/f", "type": "file", "size": 6, "mode": 0o644}
            return {"created": True, "info": {**info, "mtime_ns": 0}}
        return {}


async def body(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def test_a_chunk_is_the_replys_payload() -> None:
    assert chunk_of({protocol.PAYLOAD: b"\x00\xff", "eof": True}) == b"\x00\xff"


def test_an_older_agents_chunk_is_its_base64() -> None:
    assert chunk_of({"data_b64": base64.b64encode(b"\x00\xff").decode()}) == b"\x00\xff"


@pytest.mark.parametrize("reply", [{}, {"data_b64": "***"}, {"data_b64": 5}, {"payload": "x"}])
def test_a_reply_without_its_bytes_has_no_chunk(reply: dict[str, Any]) -> None:
    assert chunk_of(reply) is None


@pytest.mark.parametrize(("version", "raw"), [(2, True), (1, False)])
async def test_an_upload_sends_raw_payloads_unless_the_agent_predates_them(
    version: int, raw: bool
) -> None:
    link = RecordingLink(version)
    created, _info = await push_file(cast(AgentLink, link), "h1", body(b"abc", b"def"))
    assert created
    (method, params, payload), *_ = link.calls
    assert method == "file.write.chunk"
    if raw:
        assert payload == b"abcdef" and "data_b64" not in params
    else:
        assert payload is None and base64.b64decode(params["data_b64"]) == b"abcdef"

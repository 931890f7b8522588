"""Framing of the agent channel: 4-byte big-endian length, then one UTF-8 JSON object."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

import pytest

from sandcastle.agent import protocol
from sandcastle.agent.protocol import MAX_FRAME_BYTES, FrameError, encode, read_frame


def reader_of(*chunks: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=2**26)
    for chunk in chunks:
        reader.feed_data(chunk)
    if eof:
        reader.feed_eof()
    return reader


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


MESSAGES: list[dict[str, Any]] = [
    {"type": "hello", "version": 1, "sandbox_id": "sb_00000001", "contexts": []},
    {"type": "request", "id": 1, "method": "execute", "params": {"code": "print('hé 🎉')"}},
    {"type": "event", "id": 2**31, "event": {"kind": "stdout", "text": "\x00\n\x1b[0m"}},
    {"type": "reply", "id": 3, "result": {"nested": [1, 2.5, None, True, {"k": "v"}]}},
    {"type": "reply", "id": 4, "error": {"code": "cancelled", "message": "cancelled"}},
    {"type": "cancel", "id": 5},
]


@pytest.mark.parametrize("message", MESSAGES)
async def test_round_trip(message: dict[str, Any]) -> None:
    assert await read_frame(reader_of(encode(message))) == message


def test_encoding_is_length_prefixed_compact_utf8() -> None:
    data = encode({"type": "x", "t": "é"})
    body = '{"type":"x","t":"é"}'.encode()
    assert data == struct.pack(">I", len(body)) + body


async def test_frames_are_read_one_at_a_time_from_a_stream() -> None:
    data = b"".join(encode(m) for m in MESSAGES)
    # Deliver in awkward pieces, as a socket may.
    reader = reader_of(*(data[i : i + 7] for i in range(0, len(data), 7)))
    assert [await read_frame(reader) for _ in MESSAGES] == MESSAGES
    assert await read_frame(reader) is None


async def test_clean_eof_between_frames_is_none() -> None:
    assert await read_frame(reader_of()) is None


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00",  # inside the header
        struct.pack(">I", 10) + b'{"type"',  # inside the body
        struct.pack(">I", 1),  # header only
    ],
)
async def test_truncated_frame_is_a_frame_error(data: bytes) -> None:
    with pytest.raises(FrameError, match="connection closed inside a frame"):
        await read_frame(reader_of(data))


def _message_of_size(size: int) -> dict[str, Any]:
    overhead = len(json.dumps({"type": "x", "p": ""}, separators=(",", ":")))
    return {"type": "x", "p": "a" * (size - overhead)}


async def test_a_frame_of_exactly_the_limit_passes_both_ways() -> None:
    message = _message_of_size(MAX_FRAME_BYTES)
    data = encode(message)
    assert len(data) == 4 + MAX_FRAME_BYTES
    assert await read_frame(reader_of(data)) == message


def test_oversized_frame_is_refused_on_encode() -> None:
    with pytest.raises(FrameError, match="exceeds"):
        encode(_message_of_size(MAX_FRAME_BYTES + 1))


@pytest.mark.parametrize("length", [MAX_FRAME_BYTES + 1, 20 * 1024 * 1024, 2**32 - 1])
async def test_oversized_frame_is_refused_on_read_before_reading_it(length: int) -> None:
    # No body follows and no EOF comes: the reader must refuse on the header alone, not wait.
    reader = reader_of(struct.pack(">I", length), eof=False)
    with pytest.raises(FrameError, match="exceeds"):
        await asyncio.wait_for(read_frame(reader), 1)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"\xff\xfe\x00garbage",
        b'{"type": "x"',
        b"NaN-ish",
    ],
)
async def test_garbage_is_a_frame_error(body: bytes) -> None:
    with pytest.raises(FrameError, match="not UTF-8 JSON"):
        await read_frame(reader_of(frame(body)))


@pytest.mark.parametrize(
    "value",
    [[1, 2], "hello", 42, None, {"no": "type"}, {"type": 1}, {"type": None}],
)
async def test_non_message_is_a_frame_error(value: Any) -> None:
    with pytest.raises(FrameError, match="not a message object"):
        await read_frame(reader_of(frame(json.dumps(value).encode())))


async def test_a_bad_frame_does_not_consume_the_next_one() -> None:
    reader = reader_of(frame(b"[1]"), encode({"type": "cancel", "id": 1}))
    with pytest.raises(FrameError):
        await read_frame(reader)
    assert await read_frame(reader) == {"type": "cancel", "id": 1}


# --- raw payloads ---------------------------------------------------------------------------


async def test_a_payload_travels_as_raw_bytes_after_the_json() -> None:
    data = bytes(range(256)) * 3
    message = {"type": "reply", "id": 7, "result": {"eof": True}, "payload": data}
    encoded = encode(message)
    assert encoded.endswith(data)
    assert b'"payload_bytes":768' in encoded and data not in encoded[: -len(data)]
    reader = reader_of(encoded, encode(MESSAGES[0]))
    got, size = await protocol.read_sized_frame(reader)
    assert got == message
    assert size == len(encoded) - 4
    # The next frame starts right after the payload.
    assert await read_frame(reader) == MESSAGES[0]


async def test_an_empty_payload_round_trips() -> None:
    message = {"type": "request", "id": 1, "method": "m", "params": {}, "payload": b""}
    assert await read_frame(reader_of(encode(message))) == message


@pytest.mark.parametrize("size", [-1, True, 1.5, "3", None, MAX_FRAME_BYTES + 1])
async def test_a_payload_length_that_is_not_a_bounded_count_is_a_frame_error(size: Any) -> None:
    body = json.dumps({"type": "reply", "id": 1, "payload_bytes": size}).encode()
    with pytest.raises(FrameError):
        await read_frame(reader_of(frame(body) + b"x" * 8))


async def test_a_payload_cut_short_is_a_frame_error() -> None:
    encoded = encode({"type": "reply", "id": 1, "payload": b"abcdef"})
    with pytest.raises(FrameError):
        await read_frame(reader_of(encoded[:-2]))


async def test_a_payload_in_the_json_itself_is_a_frame_error() -> None:
    body = json.dumps({"type": "reply", "id": 1, "payload": "YWJj"}).encode()
    with pytest.raises(FrameError):
        await read_frame(reader_of(frame(body)))


def test_a_payload_must_be_bytes_and_within_the_limit() -> None:
    with pytest.raises(FrameError):
        encode({"type": "reply", "id": 1, "payload": "text"})
    with pytest.raises(FrameError):
        encode({"type": "reply", "id": 1, "payload": b"x" * (MAX_FRAME_BYTES + 1)})


def test_protocol_version() -> None:
    assert protocol.PROTOCOL_VERSION == 2
    assert MAX_FRAME_BYTES == 16 * 1024 * 1024

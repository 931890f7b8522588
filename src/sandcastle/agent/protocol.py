"""The agent channel: a small framed, multiplexed protocol over one Unix stream connection.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON holding one
message object. A message may carry raw bytes besides (a file's chunk): its JSON then says how
many (``payload_bytes``) and they follow it directly; in memory they are the message's
``payload``, so bytes are never base64 in JSON on this channel.

The host sends ``request`` and ``cancel``; the agent sends one ``hello`` after it connects (the
host answers a first one with ``welcome``), any number of ``event`` messages for a request, and
exactly one ``reply`` that ends it.
Many requests are in flight at once; ``id`` ties events and replies to their request.
See ``docs/AGENT_PROTOCOL.md``. Standard library only: both ends import this module.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any, Final, Literal, NotRequired, TypedDict

#: 2: raw payloads after a frame (file chunks); 1 sent them as base64 in the JSON.
PROTOCOL_VERSION = 2
#: Frames above this size are refused by both ends; outputs are truncated well below it. A
#: payload is bounded by it too, separately.
MAX_FRAME_BYTES = 16 * 1024 * 1024
_HEADER = struct.Struct(">I")
#: The key of a message's raw bytes in memory, and of their length on the wire.
PAYLOAD: Final = "payload"
_PAYLOAD_BYTES = "payload_bytes"


class FrameError(Exception):
    """A frame could not be read: oversized, not JSON, or not an object with a ``type``."""


class Hello(TypedDict):
    type: Literal["hello"]
    version: int
    sandbox_id: str
    contexts: list[str]
    #: The secret the host gave this agent in its ``welcome``; absent on the first connection.
    secret: NotRequired[str]


class Welcome(TypedDict):
    """Host → agent, once, after the first hello: the secret later hellos must carry."""

    type: Literal["welcome"]
    secret: str


class Request(TypedDict):
    type: Literal["request"]
    id: int
    method: str
    params: dict[str, Any]
    #: Raw bytes the handler gets as ``params["payload"]`` (``file.write.chunk``).
    payload: NotRequired[bytes]


class Cancel(TypedDict):
    type: Literal["cancel"]
    id: int


class Event(TypedDict):
    type: Literal["event"]
    id: int
    event: dict[str, Any]


class ReplyError(TypedDict):
    code: str
    message: str


class Reply(TypedDict):
    type: Literal["reply"]
    id: int
    result: NotRequired[dict[str, Any]]
    error: NotRequired[ReplyError]
    #: Raw bytes of the result (``file.read.chunk``).
    payload: NotRequired[bytes]


# --- execution events (``Event.event``), agent → host -------------------------------------------


class StreamEvent(TypedDict):
    kind: Literal["stdout", "stderr"]
    text: str


class DataEvent(TypedDict):
    """An ``execute_result`` (``is_primary``) or a ``display_data``: a MIME bundle."""

    kind: Literal["result"]
    is_primary: bool
    data: dict[str, Any]


class ErrorEvent(TypedDict):
    kind: Literal["error"]
    name: str
    value: str
    traceback: list[str]


class CountEvent(TypedDict):
    kind: Literal["execution_count"]
    value: int


# --- framing -------------------------------------------------------------------------------------


def encode(message: Any) -> bytes:
    payload = message.get(PAYLOAD) if isinstance(message, dict) else None
    if payload is not None:
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise FrameError(f"a payload must be bytes, not {type(payload).__name__}")
        if len(payload) > MAX_FRAME_BYTES:
            raise FrameError(f"payload of {len(payload)} bytes exceeds {MAX_FRAME_BYTES}")
        message = {**message, _PAYLOAD_BYTES: len(payload)}
        del message[PAYLOAD]
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    if len(body) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    frame = _HEADER.pack(len(body)) + body
    return frame if payload is None else frame + bytes(payload)


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """Read one message; ``None`` at a clean end of stream; ``FrameError`` on garbage."""
    message, _ = await read_sized_frame(reader)
    return message


async def read_sized_frame(reader: asyncio.StreamReader) -> tuple[dict[str, Any] | None, int]:
    """Like :func:`read_frame`, also returning the frame's size in bytes, its payload's
    included."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise FrameError("connection closed inside a frame header") from exc
        return None, 0
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {length} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise FrameError("connection closed inside a frame") from exc
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FrameError("frame is not UTF-8 JSON") from exc
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise FrameError("frame is not a message object with a type")
    # The agent dispatches requests by id; the host ignores events and replies it cannot match.
    if message["type"] in ("request", "cancel") and not isinstance(message.get("id"), int):
        raise FrameError(f"a {message['type']} frame needs an integer id")
    if _PAYLOAD_BYTES in message:
        size = message.pop(_PAYLOAD_BYTES)
        # bool is an int to Python; a count of True bytes is garbage all the same.
        if type(size) is not int or not 0 <= size <= MAX_FRAME_BYTES:
            raise FrameError(f"payload_bytes must be a count up to {MAX_FRAME_BYTES}")
        try:
            message[PAYLOAD] = await reader.readexactly(size)
        except asyncio.IncompleteReadError as exc:
            raise FrameError("connection closed inside a payload") from exc
        length += size
    elif PAYLOAD in message:
        raise FrameError("a payload must travel as bytes after the frame, not in its JSON")
    return message, length

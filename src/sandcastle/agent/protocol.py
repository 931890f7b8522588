"""The agent channel: a small framed, multiplexed protocol over one Unix stream connection.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON holding one
message object. The host sends ``request`` and ``cancel``; the agent sends one ``hello`` after it
connects (the host answers a first one with ``welcome``), any number of ``event`` messages for a
request, and exactly one ``reply`` that ends it.
Many requests are in flight at once; ``id`` ties events and replies to their request.
See ``docs/AGENT_PROTOCOL.md``. Standard library only: both ends import this module.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any, Literal, NotRequired, TypedDict

PROTOCOL_VERSION = 1
#: Frames above this size are refused by both ends; outputs are truncated well below it.
MAX_FRAME_BYTES = 16 * 1024 * 1024
_HEADER = struct.Struct(">I")


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
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    if len(body) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    return _HEADER.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """Read one message; ``None`` at a clean end of stream; ``FrameError`` on garbage."""
    message, _ = await read_sized_frame(reader)
    return message


async def read_sized_frame(reader: asyncio.StreamReader) -> tuple[dict[str, Any] | None, int]:
    """Like :func:`read_frame`, also returning the frame's size in bytes."""
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
    return message, length

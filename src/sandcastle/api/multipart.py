"""A streaming ``multipart/form-data`` reader (RFC 7578) for uploads of any size.

The body is parsed as it arrives and handed on as events (a part starts, some of its bytes, it
ends), so a part's content goes on to the sandbox chunk by chunk and is never held whole in
memory or spooled to the server's disk. Only what the upload route needs: part headers up to
:data:`MAX_HEADER_BYTES`, the ``name`` and ``filename`` (or RFC 5987 ``filename*``) parameters
of ``Content-Disposition``, and the part's ``Content-Type``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from enum import Enum, auto
from urllib.parse import unquote

MAX_HEADER_BYTES = 16 * 1024
MAX_BOUNDARY_BYTES = 200


class MultipartError(ValueError):
    """The body is not well-formed ``multipart/form-data``."""


@dataclass(frozen=True)
class PartStart:
    name: str
    #: ``None`` for a plain form field.
    filename: str | None
    content_type: str | None


@dataclass(frozen=True)
class PartData:
    data: bytes


@dataclass(frozen=True)
class PartEnd:
    pass


Event = PartStart | PartData | PartEnd

_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def header_params(value: str) -> tuple[str, dict[str, str]]:
    """``'form-data; name="a"; filename="b.txt"'`` → ``('form-data', {'name': 'a', ...})``."""
    main, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for match in _PARAM.finditer(";" + rest):
        key, raw = match.group(1).lower(), match.group(2).strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[key] = raw
    return main.strip().lower(), params


def boundary_of(content_type: str | None) -> bytes:
    kind, params = header_params(content_type or "")
    if kind != "multipart/form-data":
        raise MultipartError("the body must be multipart/form-data")
    boundary = params.get("boundary", "")
    if not boundary or len(boundary) > MAX_BOUNDARY_BYTES:
        raise MultipartError("multipart/form-data needs a boundary of 1 to 200 characters")
    return boundary.encode("latin-1", "replace")


def _part_start(raw_headers: bytes) -> PartStart:
    headers: dict[str, str] = {}
    for line in raw_headers.decode("utf-8", "replace").split("\r\n"):
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise MultipartError(f"malformed part header {line[:80]!r}")
        headers[key.strip().lower()] = value.strip()
    kind, params = header_params(headers.get("content-disposition", ""))
    if kind != "form-data" or "name" not in params:
        raise MultipartError("every part needs Content-Disposition: form-data with a name")
    filename = params.get("filename")
    extended = params.get("filename*")
    if extended is not None and "''" in extended:
        charset, _, encoded = extended.partition("''")
        filename = unquote(encoded, encoding=charset or "utf-8", errors="replace")
    return PartStart(params["name"], filename, headers.get("content-type"))


class _State(Enum):
    PREAMBLE = auto()
    AFTER_DELIMITER = auto()
    HEADERS = auto()
    DATA = auto()
    DONE = auto()


class MultipartParser:
    """Feed bytes in, get events out; :meth:`close` checks that the body ended properly."""

    def __init__(self, boundary: bytes) -> None:
        # Every delimiter follows a CRLF; pretending the body starts with one lets the first
        # delimiter be found like the others.
        self._delimiter = b"\r\n--" + boundary
        self._buffer = bytearray(b"\r\n")
        self._state = _State.PREAMBLE

    def feed(self, data: bytes) -> list[Event]:
        self._buffer += data
        events: list[Event] = []
        while self._step(events):
            pass
        return events

    def close(self) -> None:
        if self._state is not _State.DONE:
            raise MultipartError("the multipart body ended before its closing delimiter")

    def _step(self, events: list[Event]) -> bool:
        """Advance once; ``False`` when more input is needed."""
        buffer, delimiter = self._buffer, self._delimiter
        if self._state is _State.PREAMBLE:
            at = buffer.find(delimiter)
            if at < 0:
                # Keep only what could be the start of a delimiter.
                del buffer[: max(0, len(buffer) - len(delimiter) + 1)]
                return False
            del buffer[: at + len(delimiter)]
            self._state = _State.AFTER_DELIMITER
            return True
        if self._state is _State.AFTER_DELIMITER:
            if len(buffer) < 2:
                return False
            if buffer[:2] == b"--":
                self._state = _State.DONE
                buffer.clear()
                return False
            end = buffer.find(b"\r\n")
            if end < 0:
                if len(buffer) > 256:
                    raise MultipartError("malformed delimiter line")
                return False
            if buffer[:end].strip(b" \t"):
                raise MultipartError("malformed delimiter line")
            del buffer[: end + 2]
            self._state = _State.HEADERS
            return True
        if self._state is _State.HEADERS:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEADER_BYTES:
                    raise MultipartError(f"part headers exceed {MAX_HEADER_BYTES} bytes")
                return False
            events.append(_part_start(bytes(buffer[:end])))
            del buffer[: end + 4]
            self._state = _State.DATA
            return True
        if self._state is _State.DATA:
            at = buffer.find(delimiter)
            if at < 0:
                keep = len(delimiter) - 1
                if len(buffer) > keep:
                    events.append(PartData(bytes(buffer[:-keep])))
                    del buffer[:-keep]
                return False
            if at:
                events.append(PartData(bytes(buffer[:at])))
            events.append(PartEnd())
            del buffer[: at + len(delimiter)]
            self._state = _State.AFTER_DELIMITER
            return True
        buffer.clear()  # DONE: the epilogue is ignored
        return False


async def parse(body: AsyncIterable[bytes], boundary: bytes) -> AsyncIterator[Event]:
    """Events of a streamed ``multipart/form-data`` body, as the bytes arrive."""
    parser = MultipartParser(boundary)
    async for chunk in body:
        for event in parser.feed(chunk):
            yield event
    parser.close()


async def part_content(events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
    """The content of the part that just started, read from ``events`` up to its end (the
    iteration then goes on with the next part)."""
    async for item in events:
        if isinstance(item, PartEnd):
            return
        if isinstance(item, PartData):
            yield item.data


async def file_parts(
    events: AsyncIterator[Event],
) -> AsyncIterator[tuple[str, AsyncIterator[bytes]]]:
    """The file name and content of each part that has a file name (plain form fields are
    skipped); read the content before asking for the next part."""
    async for event in events:
        if isinstance(event, PartStart) and event.filename is not None:
            yield event.filename, part_content(events)

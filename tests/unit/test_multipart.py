"""``sandcastle.api.multipart``: a streamed form parsed the same however it is split."""

from __future__ import annotations

import os

import httpx
import pytest

from sandcastle.api.multipart import (
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    boundary_of,
    header_params,
)


def encode(files: list[tuple[str, tuple[str | None, bytes]]]) -> tuple[bytes, str]:
    """A form as httpx (a real client) encodes it."""
    request = httpx.Request("POST", "http://x/", files=files)
    return request.read(), request.headers["content-type"]


def parse_in_pieces(body: bytes, boundary: bytes, size: int) -> list[tuple[str, str | None, bytes]]:
    parser = MultipartParser(boundary)
    parts: list[tuple[str, str | None, bytes]] = []
    current: list[bytes] = []
    start: PartStart | None = None
    for i in range(0, len(body), size):
        for event in parser.feed(body[i : i + size]):
            if isinstance(event, PartStart):
                start, current = event, []
            elif isinstance(event, PartData):
                current.append(event.data)
            else:
                assert isinstance(event, PartEnd) and start is not None
                parts.append((start.name, start.filename, b"".join(current)))
    parser.close()
    return parts


@pytest.mark.parametrize("size", [1, 2, 7, 64, 1000, 1 << 20])
def test_parts_survive_any_split(size: int) -> None:
    payload = os.urandom(5000) + b"\r\n--not-the-boundary\r\n" + os.urandom(100)
    body, content_type = encode(
        [
            ("file", ("a.bin", payload)),
            ("field", (None, b"value")),
            ("file", ("empty.txt", b"")),
            ("file", ("résumé.txt", b"text\r\n")),
        ]
    )
    parts = parse_in_pieces(body, boundary_of(content_type), size)
    assert parts == [
        ("file", "a.bin", payload),
        ("field", None, b"value"),
        ("file", "empty.txt", b""),
        ("file", "résumé.txt", b"text\r\n"),
    ]


def test_preamble_epilogue_and_extended_filename() -> None:
    body = (
        b"ignored preamble\r\n--XyZ\r\n"
        b"Content-Disposition: form-data; name=\"f\"; filename*=UTF-8''na%C3%AFve%20file.txt\r\n"
        b"Content-Type: text/plain\r\n\r\n"
        b"data\r\n--XyZ--\r\nepilogue"
    )
    assert parse_in_pieces(body, b"XyZ", 5) == [("f", "naïve file.txt", b"data")]


@pytest.mark.parametrize(
    "body",
    [
        b'--B\r\nContent-Disposition: form-data; name="f"\r\n\r\ndata',  # no closing delimiter
        b"--B\r\nX-Nothing: here\r\n\r\ndata\r\n--B--",  # no Content-Disposition
        b'--B\r\nContent-Disposition: attachment; name="f"\r\n\r\ndata\r\n--B--',
        b"--B\r\nno colon\r\n\r\ndata\r\n--B--",
        b"--Bjunk\r\n",
    ],
)
def test_malformed_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(MultipartError):
        parse_in_pieces(body, b"B", 3)


def test_oversized_headers_are_refused() -> None:
    parser = MultipartParser(b"B")
    with pytest.raises(MultipartError):
        parser.feed(b"--B\r\nX: " + b"y" * 20_000)


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "multipart/form-data", "multipart/form-data; boundary="]
)
def test_a_boundary_is_required(content_type: str | None) -> None:
    with pytest.raises(MultipartError):
        boundary_of(content_type)


def test_header_params() -> None:
    assert header_params('form-data; name="a;b"; filename="q\\"uote.txt"') == (
        "form-data",
        {"name": "a;b", "filename": 'q"uote.txt'},
    )
    assert boundary_of('multipart/form-data; boundary="quoted=="') == b"quoted=="

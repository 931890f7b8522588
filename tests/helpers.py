"""Helpers every kind of test shares: waiting for a state, reading timestamps, a wheel to install."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
import zipfile
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

#: A timestamp as the API writes it: RFC 3339 in UTC with a ``Z``.
RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def parse_time(value: str) -> datetime:
    """An API timestamp, checked to be in the API's format."""
    assert RFC3339_Z.match(value), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def until(check: Callable[[], Awaitable[Any]], what: str, *, tries: int = 5000) -> Any:
    """Yield to the app under test until ``await check()`` is truthy; that value.

    For in-process apps: each round lets the server's tasks run (about 10 s in all)."""
    for _ in range(tries):
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.002)
    raise AssertionError(f"never happened: {what}")


def eventually(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    """Poll ``predicate()`` (against a real server) until it is truthy; that value."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def write_wheel(path: Path) -> None:
    """A one-module wheel, made by hand: what ``pip install`` takes without building anything."""
    files = {
        "greeter.py": "def greet():\n    return 'hi from greeter'\n",
        "greeter-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: greeter\nVersion: 1.0\n",
        "greeter-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [f"{name},," for name in files] + ["greeter-1.0.dist-info/RECORD,,"]
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
        wheel.writestr("greeter-1.0.dist-info/RECORD", "\n".join(record) + "\n")


def new_org(api: httpx.Client, prefix: str) -> tuple[str, str]:
    slug = f"{prefix}-{secrets.token_hex(3)}"
    created = api.post("/v1/orgs", json={"slug": slug})
    assert created.status_code == 201, created.text
    return slug, created.json()["key"]["key"]


#: Python source defining ``probe(host, port)``: ``'open'`` when a TCP connection is made within
#: 3 s, else the name of the error (what code in a sandbox or a build tries of the host).
PROBE = """
import socket
def probe(host, port):
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((host, port)); return 'open'
    except OSError as exc:
        return type(exc).__name__
    finally:
        s.close()
"""

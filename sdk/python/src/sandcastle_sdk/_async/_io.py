"""The few steps whose asynchronous and synchronous forms differ by more than ``await``.

Written by hand in both ``_async/_io.py`` and ``_sync/_io.py``; everything else in ``_sync`` is
generated from ``_async`` (``tools/generate_sync.py``).
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Callable
from typing import IO, Any

from sandcastle_sdk import _context


async def sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def call(callback: Callable[[Any], Any] | None, value: Any) -> None:
    """Call a user's callback, awaiting it if it is a coroutine function."""
    if callback is None:
        return
    result = callback(value)
    if inspect.isawaitable(result):
        await result


async def read_chunk(file: IO[bytes], size: int) -> bytes:
    # A local disk read can block for long on a slow device: off the event loop.
    return await asyncio.to_thread(file.read, size)


async def write_chunk(file: IO[bytes], data: bytes) -> None:
    await asyncio.to_thread(file.write, data)


async def tar_directory(directory: str | os.PathLike[str]) -> IO[bytes]:
    # Reads the whole tree and compresses it: off the event loop.
    return await asyncio.to_thread(_context.tar_directory, directory)

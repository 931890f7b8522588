"""The few steps whose asynchronous and synchronous forms differ by more than ``await``.

Written by hand in both ``_async/_io.py`` and ``_sync/_io.py``; everything else in ``_sync`` is
generated from ``_async`` (``tools/generate_sync.py``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import IO, Any

from sandcastle_sdk import _context


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def call(callback: Callable[[Any], Any] | None, value: Any) -> None:
    """Call a user's callback."""
    if callback is not None:
        callback(value)


def read_chunk(file: IO[bytes], size: int) -> bytes:
    return file.read(size)


def write_chunk(file: IO[bytes], data: bytes) -> None:
    file.write(data)


def tar_directory(directory: str | os.PathLike[str]) -> IO[bytes]:
    return _context.tar_directory(directory)

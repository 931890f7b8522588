"""A build's log: ``build.log`` in the build directory, and whoever follows the build.

What a ``RUN`` step prints is the tenant's to choose, and it may print without end: the log keeps
its first :data:`MAX_LOG_BYTES` and then says it stopped (the last lines still reach the build's
error, which keeps its own tail). Everything written to the file is also handed to ``on_output``,
the API's copy of the log that a client follows while the build runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

MAX_LOG_BYTES = 8 * 2**20

OutputCallback = Callable[[bytes], None]


class BuildLog:
    def __init__(
        self, path: Path, on_output: OutputCallback | None = None, max_bytes: int = MAX_LOG_BYTES
    ) -> None:
        self._file = path.open("ab")
        self._on_output = on_output
        self._room = max_bytes
        self._max = max_bytes

    @property
    def closed(self) -> bool:
        return self._file.closed

    def write(self, data: bytes) -> None:
        if self._file.closed or self._room <= 0:
            return
        kept = data[: self._room]
        self._room -= len(kept)
        if self._room <= 0:
            kept += f"\n[the log stops here: it reached {self._max} bytes]\n".encode()
        self._file.write(kept)
        self._file.flush()
        if self._on_output is not None:
            self._on_output(kept)

    def close(self) -> None:
        self._file.close()

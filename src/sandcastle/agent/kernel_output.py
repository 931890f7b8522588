"""What a kernel process writes to its own stdout and stderr, outside any execution.

Not user output (that travels on the kernel's iopub channel): crash messages, a runtime's panic,
warnings printed before the kernel is ready. Kernels never get the agent's descriptors for it:
those lead to the sandbox's log on the host, and a descriptor in user code's reach is a host
path in ``/proc/<pid>/fd`` and a file it could write without bound. A kernel's stdout goes
nowhere and its stderr into a pipe the agent drains, keeping the last :data:`TAIL_BYTES` to say
why a kernel died.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque

TAIL_BYTES = 4096


class OutputTail:
    """A pipe for a kernel's stderr (``write_fd``), drained by a thread into a bounded tail.

    The agent keeps the write end for the kernel's whole life, restarts included (jupyter_client
    relaunches with the same descriptors); :meth:`close` gives it up.
    """

    def __init__(self, limit: int = TAIL_BYTES) -> None:
        self._read_fd, self.write_fd = os.pipe()
        os.set_inheritable(self._read_fd, False)
        self._limit = limit
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._lock = threading.Lock()
        # A thread, not the event loop: draining must go on while the loop is busy, or a
        # chatty kernel would block on a full pipe.
        self._thread = threading.Thread(target=self._drain, name="kernel-stderr", daemon=True)
        try:
            self._thread.start()
        except RuntimeError:  # no thread to be had: the sandbox's process table is full
            os.close(self._read_fd)
            os.close(self.write_fd)
            raise

    def _drain(self) -> None:
        try:
            while chunk := os.read(self._read_fd, 65536):
                with self._lock:
                    self._chunks.append(chunk)
                    self._size += len(chunk)
                    while self._size - len(self._chunks[0]) >= self._limit:
                        self._size -= len(self._chunks.popleft())
        except OSError:
            pass
        finally:
            os.close(self._read_fd)

    def text(self) -> str:
        """The last bytes the kernel wrote, decoded leniently."""
        with self._lock:
            data = b"".join(self._chunks)[-self._limit :]
        return data.decode(errors="replace").strip()

    def close(self) -> None:
        """Give up the write end: the drain ends once no kernel process holds it either."""
        with contextlib.suppress(OSError):
            os.close(self.write_fd)

"""The record of the temporary files that writes in progress go to.

A write goes to a hidden ``….sandcastle-part`` file beside its target (``files.py``). If the
agent ends in the middle (the sandbox was stopped, a bwrap sandbox hibernated and resumed on the
same layer), that file would stay in the user's directory, taking the sandbox's disk, until the
sandbox ends. So each one is noted here when it is made, and an agent starting over a layer
removes the ones a previous agent noted. The record is emptied whenever no write is in progress,
so it stays small.

User code runs as the agent's user and can edit the record: it gains nothing (the agent removes
only files the user could remove itself), and only names of our temporary files are removed.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat

#: The record, on the sandbox's own disk (it must outlive the agent).
RECORD = "/tmp/.sandcastle-partial"
#: How every temporary file's name ends; nothing else is ever removed.
SUFFIX = ".sandcastle-part"
#: What is read of the record at most (user code may have grown it).
MAX_RECORD_BYTES = 1024 * 1024
#: Never blocks (user code may have put a FIFO there), never follows a link.
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _open_regular(record: str, flags: int) -> int:
    """The record opened with ``flags``, if it is a regular file; OSError otherwise."""
    fd = os.open(record, flags | _OPEN_FLAGS, 0o600)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{record} is not a regular file")
    return fd


def note(path: str, record: str = RECORD) -> None:
    """Add ``path`` (absolute) to the record; best effort (a full disk fails the write anyway)."""
    with contextlib.suppress(OSError):
        fd = _open_regular(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, path.encode("utf-8", "surrogateescape") + b"\n")
        finally:
            os.close(fd)


def forget_all(record: str = RECORD) -> None:
    """Empty the record (no write is in progress)."""
    with contextlib.suppress(OSError):
        os.unlink(record)


def remove_left_over(record: str = RECORD) -> int:
    """Remove the temporary files a previous agent noted and did not finish; how many."""
    try:
        fd = _open_regular(record, os.O_RDONLY)
    except OSError:
        forget_all(record)
        return 0
    with os.fdopen(fd, "rb") as text:
        lines = text.read(MAX_RECORD_BYTES).split(b"\n")
    paths = [line.decode("utf-8", "surrogateescape") for line in lines if line]
    removed = 0
    for path in paths:
        name = posixpath.basename(path)
        if not (posixpath.isabs(path) and name.startswith(".") and name.endswith(SUFFIX)):
            continue
        # unlink never follows a link at the name itself: a link put there is what goes.
        with contextlib.suppress(OSError):
            os.unlink(path)
            removed += 1
    forget_all(record)
    return removed

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

#: The record, on the sandbox's own disk (it must outlive the agent).
RECORD = "/tmp/.sandcastle-partial"
#: How every temporary file's name ends; nothing else is ever removed.
SUFFIX = ".sandcastle-part"


def note(path: str, record: str = RECORD) -> None:
    """Add ``path`` (absolute) to the record; best effort (a full disk fails the write anyway)."""
    with contextlib.suppress(OSError):
        fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
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
        fd = os.open(record, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return 0
    with os.fdopen(fd, "rb") as lines:
        paths = [line.rstrip(b"\n").decode("utf-8", "surrogateescape") for line in lines]
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

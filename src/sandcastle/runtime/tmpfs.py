"""Small tmpfs mounts of the host's that a sandbox gets bound in (its channel directory, the
agent package).

A bind mount shows, in the sandbox's ``/proc/self/mountinfo``, the path of its source relative
to the source's filesystem: a directory under ``/run/sandcastle`` on the host's root filesystem
would show ``/run/sandcastle/<instance>/<id>/chan``. The root of a tmpfs of its own shows ``/``.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from sandcastle.errors import RuntimeBackendError

_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_NOEXEC = 8
_MS_REMOUNT = 32
_MNT_DETACH = 2


def _mount(directory: Path, flags: int, options: bytes | None, failing: str) -> None:
    """mount(2) of a tmpfs at ``directory``; ``failing`` says what could not be done."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"tmpfs", bytes(directory), b"tmpfs", flags, options) != 0:
        raise RuntimeBackendError(f"{failing}: {os.strerror(ctypes.get_errno())}")


def mount(directory: Path, *, size_kib: int, mode: int) -> None:
    """Make ``directory`` (created if missing) the root of a new tmpfs, unless it is a mount
    point already (a restarted server finds its mounts in place)."""
    directory.mkdir(parents=True, exist_ok=True)
    if not os.path.ismount(directory):
        options = f"size={size_kib}k,mode={mode:o}".encode()
        flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
        _mount(directory, flags, options, f"cannot mount a tmpfs at {directory}")


def make_read_only(directory: Path) -> None:
    """Remount the tmpfs at ``directory`` read-only (its contents are final)."""
    flags = _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    _mount(directory, flags, None, f"cannot remount {directory} read-only")


def unmount(directory: Path) -> None:
    """Detach the mount at ``directory`` if there is one (binds of it in sandboxes stay)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if os.path.ismount(directory) and libc.umount2(bytes(directory), _MNT_DETACH) != 0:
        raise RuntimeBackendError(f"cannot unmount {directory}: {os.strerror(ctypes.get_errno())}")

"""Host-side writes into a tree a sandbox can write, without ever following a link it planted.

A sandbox's writable layer (and anything copied from it) is the sandbox's to shape: any name in
it may be a symlink to a host path, set up in the hope that the server, running as root, writes
through it. Every operation here walks from a directory descriptor of the tree's root, one
component at a time, with ``O_NOFOLLOW``: a link is never followed, and a link found where a
directory or file of ours must be is removed (it is the sandbox's own, in its own layer) and
replaced by the real thing. Nothing here resolves ``..``; paths are absolute inside the tree.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

#: Given the directory's path inside the tree, the (mode, uid, gid) to create it with.
DirAttrs = Callable[[str], tuple[int, int, int]]


def _parts(inner: str) -> list[str]:
    parts = [part for part in inner.split("/") if part not in ("", ".")]
    if not inner.startswith("/") or ".." in parts or not parts:
        raise ValueError(f"not a plain absolute path inside the tree: {inner!r}")
    return parts


@contextlib.contextmanager
def _open_root(root: Path) -> Iterator[int]:
    fd = os.open(root, _DIR_FLAGS)
    try:
        yield fd
    finally:
        os.close(fd)


def _open_dir(parent: int, name: str, inner: str, attrs: DirAttrs) -> int:
    """Open directory ``name`` below ``parent``, making it (with ``attrs``) if it is missing and
    replacing whatever non-directory (a planted link, a file) stands in its place."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            raise
        if exc.errno != errno.ENOENT:
            os.unlink(name, dir_fd=parent)  # never rmtree: it is not a directory
    mode, uid, gid = attrs(inner)
    os.mkdir(name, 0o700, dir_fd=parent)
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    os.fchown(fd, uid, gid)
    os.fchmod(fd, mode)
    return fd


def _walk_to_parent(root_fd: int, parts: list[str], attrs: DirAttrs | None) -> int:
    """A descriptor of the directory that holds ``parts[-1]``: made as needed with ``attrs``;
    without them, nothing is made and a link or a missing directory raises ``OSError``."""
    fd = os.dup(root_fd)
    try:
        for depth, name in enumerate(parts[:-1], start=1):
            if attrs is None:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            else:
                child = _open_dir(fd, name, "/" + "/".join(parts[:depth]), attrs)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_file(
    root: Path,
    inner: str,
    content: bytes,
    *,
    mode: int,
    uid: int,
    gid: int,
    dir_attrs: DirAttrs,
    keep_existing: bool = False,
) -> bool:
    """Write ``content`` to ``inner`` below ``root`` as a new regular file owned by ``uid``.

    Missing parent directories are made with ``dir_attrs``. A link or special file at ``inner``
    is replaced; with ``keep_existing`` a regular file (or a directory) already there is left
    as it is. Returns whether the file was written.
    """
    parts = _parts(inner)
    with _open_root(root) as root_fd:
        parent = _walk_to_parent(root_fd, parts, dir_attrs)
        try:
            name = parts[-1]
            try:
                st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is not None:
                if keep_existing and stat.S_ISREG(st.st_mode) | stat.S_ISDIR(st.st_mode):
                    return False
                if stat.S_ISDIR(st.st_mode):
                    raise IsADirectoryError(errno.EISDIR, "a directory stands there", inner)
                os.unlink(name, dir_fd=parent)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(name, flags, 0o600, dir_fd=parent)
            try:
                os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            return True
        finally:
            os.close(parent)


def open_read(root: Path, inner: str) -> int:
    """A non-blocking read descriptor of the regular file at ``inner`` below ``root``; no link
    on the way is followed. Raises ``OSError`` if anything on the way is a link, is missing, or
    the file is not a regular one (a FIFO is never waited on)."""
    parts = _parts(inner)
    with _open_root(root) as root_fd:
        parent = _walk_to_parent(root_fd, parts, None)
        try:
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            fd = os.open(parts[-1], flags, dir_fd=parent)
        finally:
            os.close(parent)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", inner)
    return fd

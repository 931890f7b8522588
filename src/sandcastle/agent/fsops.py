"""Filesystem operations inside the sandbox, each one blocking call for a worker thread.

Listings, stat, mkdir, delete, rename and snapshots of a tree, with their bounds (a reply must
fit in one channel frame) and the translation of ``OSError`` into the protocol's error codes.
Paths arrive checked by :mod:`sandcastle.agent.paths`; the sessions that move file contents
in chunks are :mod:`sandcastle.agent.files`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import shutil
import stat
import time
from typing import Literal, NotRequired, TypedDict

from sandcastle.agent.channel import RequestFailed
from sandcastle.agent.paths import check_not_ancestor

#: Bounds on one listing or snapshot, so its reply always fits in a frame.
MAX_LIST_ENTRIES = 10_000
SNAPSHOT_MAX_FILES = 10_000
SNAPSHOT_MAX_DEPTH = 16
_REPLY_BUDGET_BYTES = 8 * 1024 * 1024

FileType = Literal["file", "dir", "symlink", "other"]

_ERRNO_CODES = {
    errno.ENOENT: "not_found",
    errno.EEXIST: "exists",
    errno.ENOTEMPTY: "not_empty",
    errno.EISDIR: "is_a_directory",
    errno.ENOTDIR: "not_a_directory",
    errno.EACCES: "permission_denied",
    errno.EPERM: "permission_denied",
    errno.EROFS: "permission_denied",
    errno.ENOSPC: "no_space",
    errno.EDQUOT: "no_space",
    errno.EFBIG: "no_space",
    errno.ENAMETOOLONG: "invalid_path",
    # O_NOFOLLOW met a symlink: the last component was swapped for one after it was resolved.
    errno.ELOOP: "invalid_path",
    errno.EBUSY: "busy",
    errno.EXDEV: "cross_device",
}


class FileInfo(TypedDict):
    name: str
    path: str
    type: FileType
    size: int
    #: Permission bits (``st_mode & 0o7777``).
    mode: int
    mtime_ns: int
    #: Where a symlink points (not resolved).
    target: NotRequired[str]


class Listing(TypedDict):
    path: str
    entries: list[FileInfo]
    truncated: bool


class Snapshot(TypedDict):
    root: str
    #: Path relative to ``root`` → ``[size, mtime_ns]``, regular files only.
    files: dict[str, list[int]]
    truncated: bool
    #: The agent's clock (ns) when the listing started.
    taken_ns: int


def os_error(exc: OSError, path: str) -> RequestFailed:
    """Translate a filesystem error into the reply's error code, once, where it happens."""
    code = _ERRNO_CODES.get(exc.errno or 0, "io_error")
    return RequestFailed(code, f"{path}: {exc.strerror or exc}")


def _encodable(name: str) -> bool:
    # A name that is not UTF-8 on disk arrives with surrogate escapes; JSON cannot carry it.
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _type_of(mode: int) -> FileType:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def info_of(path: str, st: os.stat_result) -> FileInfo:
    info: FileInfo = {
        "name": posixpath.basename(path) or "/",
        "path": path,
        "type": _type_of(st.st_mode),
        "size": st.st_size,
        "mode": stat.S_IMODE(st.st_mode),
        "mtime_ns": st.st_mtime_ns,
    }
    if stat.S_ISLNK(st.st_mode):
        with contextlib.suppress(OSError):
            info["target"] = _printable(os.readlink(path))
    return info


def lstat_info(path: str) -> FileInfo:
    try:
        return info_of(path, os.lstat(path))
    except OSError as exc:
        raise os_error(exc, path) from exc


# --- directory operations (run in worker threads) ------------------------------------------------


def list_dir(path: str, limit: int) -> Listing:
    entries: list[FileInfo] = []
    budget = _REPLY_BUDGET_BYTES
    truncated = False
    try:
        with os.scandir(path) as it:
            for entry in it:
                if not _encodable(entry.name):
                    continue
                if len(entries) >= limit or budget <= 0:
                    truncated = True
                    break
                try:
                    info = info_of(entry.path, entry.stat(follow_symlinks=False))
                except OSError:
                    continue  # vanished while listing
                entries.append(info)
                budget -= 200 + 2 * len(info["path"]) + len(info.get("target", ""))
    except OSError as exc:
        raise os_error(exc, path) from exc
    entries.sort(key=lambda e: e["name"])
    return {"path": path, "entries": entries, "truncated": truncated}


def make_dir(path: str) -> tuple[bool, FileInfo]:
    existed = os.path.isdir(path)
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError as exc:
        raise RequestFailed("exists", f"{path} exists and is not a directory") from exc
    except OSError as exc:
        raise os_error(exc, path) from exc
    return not existed, lstat_info(path)


def delete(path: str) -> None:
    check_not_ancestor(path)
    try:
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            # rmtree works on directory fds and never follows a symlink out of the tree.
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except OSError as exc:
        raise os_error(exc, getattr(exc, "filename", None) or path) from exc


def rename(source: str, target: str, overwrite: bool) -> FileInfo:
    check_not_ancestor(source)
    try:
        os.lstat(source)
        if not overwrite and os.path.lexists(target):
            raise RequestFailed("exists", f"{target} exists")
        try:
            os.rename(source, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            shutil.move(source, target)  # another filesystem (e.g. /dev/shm): copy, then delete
    except OSError as exc:
        raise os_error(exc, getattr(exc, "filename", None) or source) from exc
    return lstat_info(target)


def snapshot(root: str, max_files: int, max_depth: int) -> Snapshot:
    """Size and mtime of the regular files under ``root``: hidden entries and symlinks skipped.

    ``taken_ns`` is the clock when the listing starts: whatever is written after it is newer.
    """
    taken_ns = time.time_ns()
    files: dict[str, list[int]] = {}
    budget = _REPLY_BUDGET_BYTES
    truncated = False
    stack: list[tuple[str, str, int]] = [(root, "", 0)]
    while stack and not truncated:
        directory, prefix, depth = stack.pop()
        try:
            it = os.scandir(directory)
        except OSError as exc:
            if directory == root:
                raise os_error(exc, root) from exc
            continue
        with it:
            for entry in it:
                if entry.name.startswith(".") or not _encodable(entry.name):
                    continue
                relative = prefix + entry.name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if depth + 1 < max_depth:
                            stack.append((entry.path, relative + "/", depth + 1))
                        else:
                            truncated = True
                    elif entry.is_file(follow_symlinks=False):
                        if len(files) >= max_files or budget <= 0:
                            truncated = True
                            break
                        st = entry.stat(follow_symlinks=False)
                        files[relative] = [st.st_size, st.st_mtime_ns]
                        budget -= 64 + len(relative)
                except OSError:
                    continue
    return {"root": root, "files": files, "truncated": truncated, "taken_ns": taken_ns}


# --- read and write sessions ---------------------------------------------------------------------

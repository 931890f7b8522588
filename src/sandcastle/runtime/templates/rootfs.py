"""Edit a root filesystem from the host side, resolving paths as a chroot would, so a symlink
in the tree can never redirect a write onto the host."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from sandcastle.runtime.templates.recipes import (
    AddUser,
    Chown,
    Clean,
    CopyIn,
    Placed,
    Write,
)


def first_missing(rootfs: Path, inner: str) -> Path:
    parts = Path(inner).parts[1:]
    for depth in range(1, len(parts) + 1):
        candidate = rootfs.joinpath(*parts[:depth])
        if not os.path.lexists(candidate):
            return candidate
    return rootfs.joinpath(*parts)


def resolve_inside(rootfs: Path, inner: str, *, follow_last: bool = True) -> Path:
    """Map absolute in-rootfs path ``inner`` to a host path, resolving symlinks as a chroot would.

    An absolute symlink target restarts at ``rootfs`` and ``..`` stops there, so a link in the tree
    (which packages and pip install freely) cannot make a host-side write land outside it.
    """
    if not inner.startswith("/"):
        raise ValueError(f"not an absolute path: {inner!r}")
    pending = [part for part in inner.split("/") if part not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = rootfs.joinpath(*resolved, part)
        if (pending or follow_last) and candidate.is_symlink():
            links += 1
            if links > 40:
                raise ValueError(f"too many symlinks resolving {inner!r}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            pending = [p for p in target.split("/") if p not in ("", ".")] + pending
            continue
        resolved.append(part)
    return rootfs.joinpath(*resolved)


def apply_on_host(rootfs: Path, step: Write | AddUser | Clean | CopyIn | Chown) -> None:
    """Carry out a host-side step on ``rootfs``; raises ``OSError``/``ValueError`` on failure."""
    match step:
        case Write():
            for directory in step.directories:
                _make_dir(rootfs, directory.path, directory.mode, directory.uid, directory.gid)
            for file in step.files:
                parent = os.path.dirname(file.path)
                _make_dir(rootfs, parent, None, 0, 0)
                _write_file(rootfs, file.path, file.content, file.mode, file.uid, file.gid)
        case AddUser():
            _add_user(rootfs, step)
        case Clean():
            for inner in step.directories:
                _empty_dir(resolve_inside(rootfs, inner))
        case CopyIn():
            for entry in step.entries:
                _place(rootfs, entry)
        case Chown():
            for inner in step.paths:
                _chown_tree(resolve_inside(rootfs, inner), step.uid, step.gid)


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    """``top`` and everything below it, without following a link (``os.walk`` does not descend
    into linked directories; ``lchown`` changes a link, not its target). Run when none of the
    image's programs runs any more, so nothing changes the tree under the walk."""
    if not os.path.lexists(top):
        return
    os.chown(top, uid, gid, follow_symlinks=False)
    for directory, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            os.chown(os.path.join(directory, name), uid, gid, follow_symlinks=False)


def _make_dir(rootfs: Path, inner: str, mode: int | None, uid: int, gid: int) -> None:
    """Create ``inner`` and missing parents (0755, root); set mode and owner of ``inner`` if
    ``mode`` is given, otherwise leave an existing directory as it is."""
    parts = [part for part in inner.split("/") if part]
    for depth in range(1, len(parts) + 1):
        host = resolve_inside(rootfs, "/" + "/".join(parts[:depth]))
        if not os.path.lexists(host):
            # A dangling link's target can be several levels deep; none of its missing levels can
            # be a link, so creating them in order stays inside the rootfs.
            missing = [host, *(p for p in host.parents if not os.path.lexists(p))]
            for directory in reversed(missing):
                directory.mkdir()
                os.chmod(directory, 0o755)  # explicit: mkdir's mode is subject to the umask
        elif not host.is_dir():
            raise ValueError(f"{'/'.join(parts[:depth])} exists and is not a directory")
    if mode is not None:
        host = resolve_inside(rootfs, inner)
        os.chmod(host, mode)
        os.chown(host, uid, gid)


def _write_file(rootfs: Path, inner: str, content: str, mode: int, uid: int, gid: int) -> None:
    host = resolve_inside(rootfs, inner, follow_last=False)
    if host.is_symlink():
        # Replace the link itself (e.g. a resolv.conf link) rather than write through it.
        host.unlink()
    fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with open(fd, "w", encoding="utf-8") as handle:
        handle.write(content)
        os.fchmod(fd, mode)
        os.fchown(fd, uid, gid)


def _place(rootfs: Path, entry: Placed) -> None:
    if not entry.sha256:
        _make_dir(rootfs, entry.path, entry.mode, entry.uid, entry.gid)
        return
    _make_dir(rootfs, os.path.dirname(entry.path), None, 0, 0)
    host = resolve_inside(rootfs, entry.path, follow_last=False)
    if host.is_symlink() or host.is_dir():
        # Replace what is there, as Docker's COPY does (a directory only if empty: rmdir).
        host.unlink() if host.is_symlink() else host.rmdir()
    # O_NOFOLLOW on both ends: the context was checked for links, and the tree may hold any.
    source = os.open(entry.source, os.O_RDONLY | os.O_NOFOLLOW)
    target = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with open(source, "rb") as reader, open(target, "wb") as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)
        os.fchmod(target, entry.mode)
        os.fchown(target, entry.uid, entry.gid)


def _add_user(rootfs: Path, user: AddUser) -> None:
    days = int(time.time() // 86400)
    _add_entry(
        resolve_inside(rootfs, "/etc/passwd"),
        f"{user.name}:x:{user.uid}:{user.gid}::{user.home}:{user.shell}",
        id_field=2,
    )
    _add_entry(resolve_inside(rootfs, "/etc/group"), f"{user.name}:x:{user.gid}:", id_field=2)
    # Locked password ("!"): the account exists for ownership and ``getpwuid``, not for logins.
    _add_entry(resolve_inside(rootfs, "/etc/shadow"), f"{user.name}:!:{days}:0:99999:7:::")
    _add_entry(resolve_inside(rootfs, "/etc/gshadow"), f"{user.name}:!::")


def _add_entry(path: Path, line: str, *, id_field: int | None = None) -> None:
    """Append ``line`` unless present; a different entry with its name or id is an error."""
    if not path.exists() and id_field is None:
        return  # shadow files are optional
    text = path.read_text()
    fields = line.split(":")
    for existing in text.splitlines():
        if existing == line:
            return
        other = existing.split(":")
        same_name = other[0] == fields[0]
        same_id = (
            id_field is not None and len(other) > id_field and other[id_field] == fields[id_field]
        )
        if same_name and id_field is None:
            return  # shadow entries carry dates; the passwd/group checks own the conflicts
        if same_name or same_id:
            raise ValueError(f"{path.name}: {existing!r} conflicts with {line!r}")
    with path.open("a") as handle:
        handle.write(("" if text.endswith("\n") or not text else "\n") + line + "\n")


def _empty_dir(directory: Path) -> None:
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def tree_size(root: Path) -> int:
    """Sum of ``lstat`` sizes below ``root``, not following symlinks, hard links counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for directory, dirnames, filenames in os.walk(root):
        for name in (None, *dirnames, *filenames):
            st = os.lstat(directory if name is None else os.path.join(directory, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total

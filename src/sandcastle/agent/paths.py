"""Path rules for the agent's file operations: what a path names, and what it may not touch.

Paths are sandbox paths. A relative path resolves against the user's home. Before any file
operation its path is checked here:

- ``invalid_path``: not a non-empty string, a NUL byte, longer than 4096 bytes, a component
  longer than 255 bytes, or ``..`` that would climb above ``/``;
- ``forbidden_path``: the path, or any step of resolving it through symlinks, is inside one of
  the agent's own mounts (:data:`FORBIDDEN_ROOTS`). Checking every step matters: a symlink to
  ``/proc/1/root/etc`` resolves to a harmless-looking path only after passing through ``/proc``.

The sandbox is the real confinement (the agent runs as the sandbox user, in the sandbox's mount
namespace); these rules keep the API's answers clear and the agent's plumbing out of its reach.
Standard library only: this runs inside the sandbox.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections import deque

from sandcastle.agent import layout
from sandcastle.agent.channel import RequestFailed

MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
#: Symlinks followed while resolving one path, as the kernel's own limit.
MAX_SYMLINKS = 40
#: The agent's socket and code, and the kernel's views: never read, written or listed.
FORBIDDEN_ROOTS = (layout.CHANNEL_DIR, "/opt/sandcastle", "/proc", "/sys", "/dev")


def invalid(message: str) -> RequestFailed:
    return RequestFailed("invalid_path", message)


def forbidden(path: str) -> RequestFailed:
    return RequestFailed("forbidden_path", f"{path} is reserved for the sandbox's agent")


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


def check_allowed(path: str) -> None:
    """Refuse an absolute, normalised ``path`` that lies in a forbidden root."""
    for root in FORBIDDEN_ROOTS:
        if _within(path, root):
            raise forbidden(path)


def check_not_ancestor(path: str) -> None:
    """Refuse ``path`` if deleting or moving it would take a forbidden root with it."""
    if path == "/":
        raise invalid("/ cannot be deleted or moved")
    for root in FORBIDDEN_ROOTS:
        if _within(root, path):
            raise forbidden(path)


class PathRules:
    """Validation and resolution of sandbox paths, relative ones against ``home``."""

    def __init__(self, home: str = layout.USER_HOME) -> None:
        self.home = home

    def lexical(self, raw: object) -> str:
        """The absolute, normalised form of ``raw`` without touching the filesystem."""
        if not isinstance(raw, str) or not raw:
            raise invalid("a path must be a non-empty string")
        if "\x00" in raw:
            raise invalid("a path must not contain NUL bytes")
        if len(raw.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
            raise invalid(f"a path must be at most {MAX_PATH_BYTES} bytes long")
        full = raw if raw.startswith("/") else f"{self.home}/{raw}"
        parts: list[str] = []
        for name in full.split("/"):
            if name in ("", "."):
                continue
            if name == "..":
                if not parts:
                    raise invalid(f"{raw!r} climbs above /")
                parts.pop()
                continue
            if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
                raise invalid(f"a path component must be at most {MAX_NAME_BYTES} bytes long")
            parts.append(name)
        return "/" + "/".join(parts)

    def resolve(self, raw: object, *, follow: bool) -> str:
        """The physical path ``raw`` names, following symlinks in every component but the last
        (and the last too if ``follow``), refusing any step into a forbidden root."""
        path = self.lexical(raw)
        check_allowed(path)
        return physical(path, follow_last=follow)


def physical(path: str, *, follow_last: bool) -> str:
    """Resolve symlinks in an absolute, normalised path, checking every step."""
    parts = deque(p for p in path.split("/") if p)
    resolved = "/"
    followed = 0
    while parts:
        name = parts.popleft()
        if name == ".":
            continue
        if name == "..":
            resolved = posixpath.dirname(resolved)
            continue
        candidate = posixpath.join(resolved, name)
        check_allowed(candidate)
        if not parts and not follow_last:
            resolved = candidate
            break
        try:
            st = os.lstat(candidate)
        except OSError:
            # Missing or unreadable: nothing here to follow; the operation reports the error.
            resolved = candidate
            continue
        if not stat.S_ISLNK(st.st_mode):
            resolved = candidate
            continue
        followed += 1
        if followed > MAX_SYMLINKS:
            raise invalid(f"too many levels of symbolic links in {path}")
        target = os.readlink(candidate)
        try:
            target.encode("utf-8")
        except UnicodeEncodeError:
            # Not UTF-8 on disk: the resolved path could not travel back in a JSON reply.
            raise invalid(f"the symlink {candidate} points to a name that is not UTF-8") from None
        if target.startswith("/"):
            resolved = "/"
        parts.extendleft(reversed([p for p in target.split("/") if p]))
    check_allowed(resolved)
    return resolved

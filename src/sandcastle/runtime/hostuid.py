"""A host uid of its own for every bwrap sandbox, and the user namespace that uid owns.

Linux keeps many per-user counters (inotify instances and watches, user namespaces, pending
signals, message-queue bytes, locked memory) in "ucounts", charged at every level of the user
namespace tree: inside a sandbox's namespace against the sandbox's uid, and in the host's
namespace against the namespace's *owner*, the euid that created it. When every sandbox's
namespace was owned by the one sandbox uid, a sandbox holding all 128 inotify instances made
``inotify_init()`` fail in every other sandbox on the host, another server's included.

So each sandbox's user namespace is owned by a host uid claimed for it alone, from a configured
range. The code inside still runs as the template's user (uid ``HOST_UID``, mapped to itself), so
the files of one template are right in every sandbox, and nothing on disk is owned by the
claimed uid: a uid can be given to the next sandbox as soon as this one is destroyed.

Claims are files named by the uid in a host-wide directory under ``/run`` (emptied at boot,
when every sandbox is gone too), shared by every server on the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import os
import pwd
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sandcastle.agent import layout
from sandcastle.errors import RuntimeBackendError

_CLONE_NEWUSER = 0x10000000


@dataclass(frozen=True)
class UidRange:
    """Host uids ``first`` to ``last`` inclusive, used by nothing else on the host."""

    first: int
    last: int

    @classmethod
    def parse(cls, text: str) -> UidRange:
        """``"FIRST-LAST"``; a ValueError says what is wrong."""
        first_text, sep, last_text = text.partition("-")
        if not sep:
            raise ValueError(f"a uid range is FIRST-LAST, not {text!r}")
        first, last = int(first_text), int(last_text)
        if not 0 < first <= last < 2**31 - 1:
            raise ValueError(f"uid range {text!r} must be 0 < FIRST <= LAST < 2147483647")
        if first <= layout.HOST_UID <= last:
            raise ValueError(f"uid range {text!r} must not hold the sandbox user {layout.HOST_UID}")
        return cls(first, last)

    def check_unused(self) -> None:
        """Refuse a range that holds a host account: its uid would own sandboxes' namespaces,
        with every capability in them."""
        for account in pwd.getpwall():
            if self.first <= account.pw_uid <= self.last:
                raise RuntimeBackendError(
                    f"the sandbox uid range {self.first}-{self.last} holds the host account "
                    f"{account.pw_name!r} (uid {account.pw_uid}); set "
                    "SANDCASTLE_SANDBOX_UID_RANGE to uids no account uses"
                )


class HostUids:
    """Claims and releases host uids for the sandboxes of one server.

    A claim names the sandbox's durable directory. One whose directory is gone is free again
    however its sandbox ended (a purge by another backend, a crash, a wiped data directory);
    a hibernated sandbox keeps its directory and its uid. A host-wide lock on the claims
    directory serializes claims, so a stale claim is taken over by one server only.
    """

    def __init__(self, claims_dir: Path, uids: UidRange, *, sandboxes_dir: Path) -> None:
        self._dir = claims_dir
        self._uids = uids
        self._sandboxes = sandboxes_dir

    def claim(self, sandbox_id: str) -> int:
        """The uid ``sandbox_id`` holds, claiming a free one if it holds none."""
        owner = str(self._sandboxes / sandbox_id)
        self._dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self._dir, 0o700)
        with _locked(self._dir):
            claims = self._claims()
            for uid, claimant in claims.items():
                if claimant == owner:
                    return uid
            for uid in range(self._uids.first, self._uids.last + 1):
                holder = claims.get(uid)
                if holder is not None and os.path.lexists(holder):
                    continue
                tmp = self._dir / f".{uid}.new"
                tmp.write_text(owner)
                os.replace(tmp, self._dir / str(uid))
                return uid
        raise RuntimeBackendError(
            f"every host uid of {self._uids.first}-{self._uids.last} is held by a sandbox; "
            "widen SANDCASTLE_SANDBOX_UID_RANGE or end sandboxes"
        )

    def release(self, sandbox_id: str) -> None:
        """Give back the uid ``sandbox_id`` held (its processes must be gone)."""
        owner = str(self._sandboxes / sandbox_id)
        if not self._dir.is_dir():
            return
        with _locked(self._dir):
            for uid, claimant in self._claims().items():
                if claimant == owner:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self._dir / str(uid))

    def _claims(self) -> dict[int, str]:
        claims = {}
        for entry in self._dir.iterdir():
            with contextlib.suppress(OSError, ValueError, UnicodeDecodeError):
                claims[int(entry.name)] = entry.read_text()
        return claims


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


async def user_namespace(owner_uid: int) -> int:
    """A new user namespace owned by ``owner_uid``, as a descriptor (the caller closes it).

    The sandbox user (``HOST_UID``) is mapped to itself, nothing else is; the namespace allows
    no namespaces below it. bubblewrap joins it with ``--userns``: as its owner it holds every
    capability there until it drops to the sandbox user.
    """
    libc = ctypes.CDLL(None, use_errno=True)

    def enter() -> None:
        # In the child, between fork and exec: the namespace must be created with the owner's
        # euid, and its limit set while the child still holds its capabilities there (exec as
        # an unmapped uid drops them).
        os.setgroups([])
        os.setresgid(owner_uid, owner_uid, owner_uid)
        os.setresuid(owner_uid, owner_uid, owner_uid)
        if libc.unshare(_CLONE_NEWUSER) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER)")
        limit = os.open("/proc/sys/user/max_user_namespaces", os.O_WRONLY)
        try:
            os.write(limit, b"0")
        finally:
            os.close(limit)

    try:
        # ``cat`` holds the namespace until its stdin closes: long enough to map and open it.
        holder = await asyncio.create_subprocess_exec(
            "cat",
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={},
            preexec_fn=enter,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        # What fails in ``enter`` arrives as a SubprocessError naming no cause: the usual one
        # is a host that forbids unprivileged user namespaces.
        raise RuntimeBackendError(
            f"cannot create a user namespace owned by uid {owner_uid} ({exc}); does this host "
            "allow user namespaces (sysctl user.max_user_namespaces, AppArmor's "
            "kernel.apparmor_restrict_unprivileged_userns)?"
        ) from exc
    try:
        return await asyncio.to_thread(_map_and_open, holder.pid)
    except OSError as exc:
        raise RuntimeBackendError(f"cannot map the sandbox's user namespace: {exc}") from exc
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        await holder.wait()


def _map_and_open(pid: int) -> int:
    """Map the sandbox user to itself in ``pid``'s new namespace; a descriptor of it."""
    for name, inside in (("uid_map", layout.HOST_UID), ("gid_map", layout.HOST_GID)):
        Path(f"/proc/{pid}/{name}").write_text(f"{inside} {inside} 1\n")
    return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)

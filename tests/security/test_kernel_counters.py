"""Attacks on what sandboxes share on one host kernel: per-user counters.

Linux counts some resources per user (inotify instances, message-queue bytes, ...); a sandbox
that takes all of its user's share must not take another sandbox's.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.executing import run
from tests.security.test_attacks import value

#: Takes inotify instances until the kernel refuses one, keeping them open in the kernel's
#: globals; the value is how many it got and why it stopped.
_TAKE_INOTIFY = """
import ctypes, errno
_libc = ctypes.CDLL(None, use_errno=True)
held = globals().setdefault('held', [])
while len(held) < 100_000:
    fd = _libc.inotify_init()
    if fd < 0:
        break
    held.append(fd)
(len(held), errno.errorcode.get(ctypes.get_errno(), '?'))
"""

#: The same with POSIX message queues, counted in bytes per user (RLIMIT_MSGQUEUE).
_TAKE_MQUEUE = """
import ctypes, errno, os
_libc = ctypes.CDLL(None, use_errno=True)
class _Attr(ctypes.Structure):
    _fields_ = [('flags', ctypes.c_long), ('maxmsg', ctypes.c_long), ('msgsize', ctypes.c_long), ('cur', ctypes.c_long), ('pad', ctypes.c_long * 4)]
queues = globals().setdefault('queues', [])
while len(queues) < 1000:
    attr = _Attr(0, 10, 8192, 0)
    name = f'/q{os.getpid()}-{len(queues)}'.encode()
    fd = _libc.mq_open(name, os.O_CREAT | os.O_RDWR, 0o600, ctypes.byref(attr))
    if fd < 0:
        break
    queues.append(fd)
(len(queues), errno.errorcode.get(ctypes.get_errno(), '?'))
"""


@pytest.mark.parametrize(
    "take", [_TAKE_INOTIFY, _TAKE_MQUEUE], ids=["inotify instances", "message queue bytes"]
)
def test_a_sandbox_holding_all_of_a_per_user_counter_leaves_others_theirs(
    api: httpx.Client, fresh: Any, take: str
) -> None:
    greedy, other = fresh(), fresh()
    taken, why = value(run(api, greedy, code=take))
    assert taken > 0, why

    got, why_other = value(run(api, other, code=take))

    assert got == taken, f"the other sandbox got {got} ({why_other}), the first {taken} ({why})"

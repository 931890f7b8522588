"""What a user namespace of its own per bwrap sandbox costs at start.

Run by hand from the repository root, as root::

    .venv/bin/python -m bench.bench_bwrap_userns [--iterations 40]

Measures, in one run, median and p95 of:

- making the namespace alone (``hostuid.user_namespace``: a helper process as the claimed uid
  unshares it, the server maps the sandbox user and opens it);
- ``bwrap … true`` as Sandcastle started it before: bubblewrap makes the user namespace itself
  (``--unshare-user --disable-userns``), running as the shared sandbox uid (the baseline);
- the same with the namespace made beforehand and joined (``--userns``), as now.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import time

from bench.common import p95
from sandcastle.agent import layout
from sandcastle.runtime import hostuid

OWNER = 1_000_065_000  # in the default range, far from the sandboxes a server may hold
_COMMON = [
    "--unshare-ipc",
    "--unshare-pid",
    "--unshare-uts",
    "--unshare-net",
    "--ro-bind",
    "/",
    "/",
]
_SANDBOX_USER = ["--uid", str(layout.USER_UID), "--gid", str(layout.USER_GID)]


def _as(uid: int) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def _bwrap(args: list[str], uid: int, pass_fds: tuple[int, ...] = ()) -> float:
    bwrap = shutil.which("bwrap") or "bwrap"
    started = time.perf_counter()
    subprocess.run(
        [bwrap, *args, "true"], check=True, pass_fds=pass_fds, preexec_fn=lambda: _as(uid)
    )
    return time.perf_counter() - started


async def _namespace() -> tuple[float, int]:
    started = time.perf_counter()
    fd = await hostuid.user_namespace(OWNER)
    return time.perf_counter() - started, fd


def _report(name: str, samples: list[float]) -> None:
    ms = [s * 1000 for s in samples]
    print(f"{name:<52} median {statistics.median(ms):7.2f} ms   p95 {p95(ms):7.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=40)
    args = parser.parse_args()
    made, before, after = [], [], []
    for _ in range(args.iterations):
        before.append(
            _bwrap(
                ["--unshare-user", "--disable-userns", *_SANDBOX_USER, *_COMMON], layout.HOST_UID
            )
        )
        took, fd = asyncio.run(_namespace())
        try:
            made.append(took)
            userns = ["--userns", str(fd), "--assert-userns-disabled", *_SANDBOX_USER, *_COMMON]
            after.append(took + _bwrap(userns, OWNER, pass_fds=(fd,)))
        finally:
            os.close(fd)
    _report("user namespace made beforehand (alone)", made)
    _report("baseline: bwrap makes it (--unshare-user)", before)
    _report("now: made beforehand + bwrap --userns", after)


if __name__ == "__main__":
    main()

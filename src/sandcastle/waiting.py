"""Waiting, by polling, for a state nothing announces.

Some states have no event to await: a process group emptying, a peer hanging up as seen by a
loop of another task. The loops that wait for them are written once, here, with a deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(done: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.01) -> bool:
    """Poll ``done`` every ``interval_s`` until it holds (True) or ``timeout_s`` passed (False)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not done():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(interval_s)
    return True

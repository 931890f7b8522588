"""When each sandbox was last used, kept in memory (the agent API's ``last_activity``).

Touched by every successful request that reaches into a sandbox (files, executions, the agent
API; see ``sandcastle.api.activity``). Not persisted: after a server restart a sandbox's last
activity falls back to its ``started_at``, and with several API replicas each knows only its
own requests. Bounded: the least recently used entries are forgotten past :data:`MAX_ENTRIES`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime

from sandcastle.domain.clock import utcnow

MAX_ENTRIES = 100_000


class ActivityTracker:
    def __init__(self, clock: Callable[[], datetime] = utcnow) -> None:
        self._clock = clock
        self._last: OrderedDict[str, datetime] = OrderedDict()

    def touch(self, sandbox_id: str) -> None:
        self._last[sandbox_id] = self._clock()
        self._last.move_to_end(sandbox_id)
        while len(self._last) > MAX_ENTRIES:
            self._last.popitem(last=False)

    def last(self, sandbox_id: str, since: datetime) -> datetime:
        """The last activity recorded for the sandbox, never earlier than ``since``."""
        seen = self._last.get(sandbox_id)
        return since if seen is None or seen < since else seen

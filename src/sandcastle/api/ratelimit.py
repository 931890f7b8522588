"""Per-key request rate limits: a token bucket per API key, kept in memory.

A key may send ``burst`` requests at once and ``rate`` more per second after that; the request
that finds its bucket empty is refused with 429 (``e2b_rate_limit_error``, the envelope's one
type about request rates) and a ``Retry-After`` of the seconds until a token is back. Limits are
per key, not per org: one noisy client cannot starve its colleagues' other keys. Buckets live in
this process (one server owns the database); a restart refills them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sandcastle.errors import RateLimitedError

#: Buckets kept before full (idle) ones are dropped; a dropped bucket is a full one anyway.
_MAX_BUCKETS = 100_000


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        #: Monotonic seconds; replaceable so tests can move time.
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, at)

    def check(self, key_id: str, rate: float, burst: int) -> None:
        """Take one token from ``key_id``'s bucket, or raise :class:`RateLimitedError`.

        ``rate`` 0 means unlimited.
        """
        if rate <= 0:
            return
        now = self.clock()
        tokens, at = self._buckets.get(key_id, (float(burst), now))
        tokens = min(float(burst), tokens + max(0.0, now - at) * rate)
        if tokens < 1.0:
            self._buckets[key_id] = (tokens, now)
            raise RateLimitedError(
                f"too many requests: this key may send {rate:g} per second "
                f"(bursts of {burst}); retry later",
                retry_after_s=(1.0 - tokens) / rate,
            )
        self._buckets[key_id] = (tokens - 1.0, now)
        if len(self._buckets) > _MAX_BUCKETS:
            self._prune(now, rate, burst)

    def _prune(self, now: float, rate: float, burst: int) -> None:
        full_after = burst / rate
        for key_id, (_tokens, at) in list(self._buckets.items()):
            if now - at >= full_after:
                del self._buckets[key_id]

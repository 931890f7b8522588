"""The per-key token bucket."""

from __future__ import annotations

import pytest

from sandcastle.api.ratelimit import RateLimiter
from sandcastle.errors import RateLimitedError


def test_a_burst_then_the_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    for _ in range(5):
        limiter.check("k", rate=2.0, burst=5)
    with pytest.raises(RateLimitedError) as refused:
        limiter.check("k", rate=2.0, burst=5)
    assert refused.value.retry_after_s == pytest.approx(0.5)
    limiter.check("other", rate=2.0, burst=5)  # its own bucket
    now[0] = 0.5
    limiter.check("k", rate=2.0, burst=5)
    with pytest.raises(RateLimitedError):
        limiter.check("k", rate=2.0, burst=5)
    now[0] = 100.0  # refilled, but never past the burst
    for _ in range(5):
        limiter.check("k", rate=2.0, burst=5)
    with pytest.raises(RateLimitedError):
        limiter.check("k", rate=2.0, burst=5)


def test_rate_zero_is_unlimited() -> None:
    limiter = RateLimiter(clock=lambda: 0.0)
    for _ in range(1000):
        limiter.check("k", rate=0, burst=1)

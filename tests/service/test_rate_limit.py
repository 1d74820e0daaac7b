"""The token bucket behind the per-caller rate limit, on a clock the test moves."""

from __future__ import annotations

import pytest

from service import rate_limit
from service.rate_limit import RateLimited, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_average_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    for _ in range(3):
        limiter.take("a")
    with pytest.raises(RateLimited) as refused:
        limiter.take("a")
    assert refused.value.status_code == 429
    assert refused.value.headers == {"Retry-After": "1"}  # 0.5 s to the next token, rounded up
    limiter.take("b")  # another caller has its own bucket
    clock.now += 0.5
    limiter.take("a")  # one token came back
    with pytest.raises(RateLimited):
        limiter.take("a")
    clock.now += 3600  # an idle hour refills the bucket to the burst, not beyond
    for _ in range(3):
        limiter.take("a")
    with pytest.raises(RateLimited):
        limiter.take("a")


def test_retry_after_is_whole_seconds_until_the_next_token() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=0.1, burst=1, clock=clock)
    limiter.take("a")
    clock.now += 2.5
    with pytest.raises(RateLimited) as refused:
        limiter.take("a")
    assert refused.value.headers == {"Retry-After": "8"}  # 7.5 s left, rounded up
    assert "rate_limit_per_second" in refused.value.detail


def test_a_refused_request_takes_no_token() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=1, clock=clock)
    limiter.take("a")
    for _ in range(5):  # retrying too early does not push the next token further away
        with pytest.raises(RateLimited):
            limiter.take("a")
    clock.now += 1.0
    limiter.take("a")


def test_rate_zero_is_off() -> None:
    limiter = RateLimiter(rate=0.0, burst=1, clock=Clock())
    for _ in range(1000):
        limiter.take("a")


def test_buckets_stay_bounded_whatever_the_number_of_callers(monkeypatch) -> None:
    monkeypatch.setattr(rate_limit, "MAX_BUCKETS", 10)
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=2, clock=clock)
    limiter.take("busy")
    limiter.take("busy")
    for i in range(100):
        limiter.take(f"client {i}")
        assert len(limiter._buckets) <= 10
    # Dropping a bucket forgets at most that its caller was busy; the newest callers are kept.
    assert "client 99" in limiter._buckets

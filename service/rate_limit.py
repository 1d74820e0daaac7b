"""A per-caller rate limit: a token bucket per API key, or per client address with no keys.

Each caller has a bucket of ``rate_limit_burst`` tokens that refills at
``rate_limit_per_second``; a request takes one token, and a request finding the bucket empty is
refused with a 429 whose ``Retry-After`` says in how many seconds a token will be there (an
OpenAI client waits that long and retries). Off when the rate is 0, the default: the engine's
queue (``max_queue``) already bounds the load, and how much each caller may use is a decision of
each deployment. One process keeps its own buckets: behind N replicas a caller gets N times the
rate.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException

from core.settings import Settings

# Buckets kept at most; beyond it full buckets are dropped (a full bucket is the same as none),
# then the least recently used, so callers with ever new addresses cannot grow memory.
MAX_BUCKETS = 10_000


class RateLimited(HTTPException):
    """429 in the API's error shape (service.errors reads ``code``)."""

    code = "rate_limited"

    def __init__(self, caller: str, rate: float, retry_after: float):
        seconds = max(1, math.ceil(retry_after))
        super().__init__(
            429,
            f"rate limit of {caller} exceeded ({rate:g} requests per second, "
            f"rate_limit_per_second); retry after {seconds} s",
            headers={"Retry-After": str(seconds)},
        )


class RateLimiter:
    """Token buckets by caller. Thread-safe: FastAPI runs sync dependencies in threads."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, caller: str) -> None:
        """Take a token of ``caller``'s bucket; RateLimited if there is none."""
        if self.rate <= 0:
            return
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.pop(caller, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens < 1:
                self._buckets[caller] = (tokens, now)
                raise RateLimited(caller, self.rate, (1 - tokens) / self.rate)
            self._buckets[caller] = (tokens - 1, now)  # re-inserted last: dicts keep LRU order
            if len(self._buckets) > MAX_BUCKETS:
                self._prune(now)

    def _prune(self, now: float) -> None:
        full = [c for c, (t, at) in self._buckets.items() if t + (now - at) * self.rate >= self.burst]
        for caller in full:
            del self._buckets[caller]
        while len(self._buckets) > MAX_BUCKETS:
            del self._buckets[next(iter(self._buckets))]


def take_token(request: Request, caller: str, open_access: bool) -> None:
    """Count a request of ``caller`` (a key's name; with no keys, the client's address)."""
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is None:
        return
    if open_access:
        caller = f"client {request.client.host if request.client else 'unknown'}"
    else:
        caller = f"API key {caller!r}"
    limiter.take(caller)


def install_rate_limit(app: FastAPI, settings: Settings) -> None:
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)

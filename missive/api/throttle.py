"""Requests per second per caller: one token bucket per api_key (Basic) or application (JWT).

The buckets live in the process (a dict lookup and a few float operations on the accept
path), so `serve --workers N` or N API processes let a caller through N times the rate.
Past the limit the answer is 429 with `Retry-After` (whole seconds, at least 1) and the
usual problem body; a refused request takes no token.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from missive.api.errors import ERRORS, ProblemError

# Buckets are only made for authenticated callers, so their number is bounded by the
# accounts and applications in the database; this is a guard, not a tuning knob.
MAX_BUCKETS = 100_000


def too_many_requests(retry_after: int) -> ProblemError:
    return ProblemError(
        429,
        f"{ERRORS}#throttled",
        "Too Many Requests",
        "You have exceeded the request rate allowed for these credentials. Retry after the number of seconds in Retry-After.",
        headers={"Retry-After": str(retry_after)},
    )


class RequestThrottle:
    """`take(key)` returns when `key` may make a request now, else raises the 429 problem."""

    def __init__(self, rate: float, burst: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = rate > 0
        self._rate = rate
        self._burst = max(burst if burst > 0 else 2 * rate, 1.0)
        self._clock = clock
        # key -> [tokens, time of the last refill]
        self._buckets: dict[str, list[float]] = {}

    def take(self, key: str) -> None:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._buckets.clear()
            self._buckets[key] = [self._burst - 1.0, now]
            return
        tokens = bucket[0] + (now - bucket[1]) * self._rate
        if tokens > self._burst:
            tokens = self._burst
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return
        bucket[0] = tokens
        raise too_many_requests(max(1, math.ceil((1.0 - tokens) / self._rate)))

"""Messages per second per channel link: a token bucket; over the limit, senders wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class _Bucket:
    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        # Up to one second of burst.
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = now

    def take(self, units: float, now: float) -> float:
        """Take `units`; return how long the caller must wait before sending (0: at once)."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= units
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class RateLimiter:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[str, _Bucket] = {}
        # Until when each link is slowed down after the provider throttled it.
        self._paused: dict[str, float] = {}
        self.waits = 0

    async def acquire(self, key: str, rate: float | None, units: float = 1.0) -> None:
        now = self._clock()
        delay = max(0.0, self._paused.get(key, 0.0) - now)
        if rate:
            bucket = self._buckets.get(key)
            if bucket is None or bucket.rate != rate:
                bucket = self._buckets[key] = _Bucket(rate, now)
            delay = max(delay, bucket.take(units, now))
        if delay > 0:
            self.waits += 1
            await self._sleep(delay)

    def slow_down(self, key: str, seconds: float) -> None:
        self._paused[key] = max(self._paused.get(key, 0.0), self._clock() + seconds)

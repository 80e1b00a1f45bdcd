"""Messages per second per channel link; over the limit, senders wait (they never fail).

The limit holds across processes: tokens come from the link's bucket in the database
(`missive/store/rates.py`), reserved a tenth of a second's worth at a time so that a
busy link costs about ten small transactions a second per dispatcher, not one per
message. Within a reservation, sends are spaced at the link's rate. A reservation not
used within a second is dropped (a process idle on a link does not bank tokens).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from missive.observability.metrics import rate_limited

# Seconds of a link's rate reserved from the shared bucket at a time.
CHUNK_SECONDS = 0.1
# A reservation is spent within this long after its start, or dropped.
CHUNK_LIFETIME = 1.0

Reserve = Callable[[str, float, float], Awaitable[float]]


@dataclass
class _Reservation:
    rate: float
    tokens: float
    start: float
    used: float = 0.0

    def usable(self, units: float, rate: float, now: float) -> bool:
        return self.rate == rate and self.tokens - self.used >= units and now < self.start + CHUNK_LIFETIME


class RateLimiter:
    def __init__(self, reserve: Reserve, clock: Callable[[], float] = time.monotonic) -> None:
        """`reserve(key, rate, units)` takes units from the shared bucket and answers
        the seconds to wait before they may be spent."""
        self._reserve = reserve
        self._clock = clock
        self._held: dict[str, _Reservation] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # Until when each link is slowed down after the provider throttled it.
        self._paused: dict[str, float] = {}
        self.waits = 0

    async def delay(self, key: str, rate: float | None, units: float = 1.0) -> float:
        """Take `units` of `key`'s rate: the seconds the caller must wait before sending
        (the caller waits; it may have a lease to extend first)."""
        delay = max(0.0, self._paused.get(key, 0.0) - self._clock())
        if rate:
            delay = max(delay, await self._slot(key, rate, units))
        if delay > 0:
            self.waits += 1
            rate_limited(key, delay)
        return delay

    async def _slot(self, key: str, rate: float, units: float) -> float:
        """Seconds until `units` of `key` may be sent, after taking them."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            held = self._held.get(key)
            now = self._clock()
            if held is None or not held.usable(units, rate, now):
                chunk = max(units, rate * CHUNK_SECONDS)
                wait = await self._reserve(key, rate, chunk)
                held = self._held[key] = _Reservation(rate, chunk, self._clock() + wait)
            ready = held.start + held.used / rate
            held.used += units
            return max(0.0, ready - self._clock())

    def slow_down(self, key: str, seconds: float) -> None:
        self._paused[key] = max(self._paused.get(key, 0.0), self._clock() + seconds)

"""The retry policy: exponential backoff with jitter, a limit, and the provider's hint."""

from __future__ import annotations

import random
from dataclasses import dataclass

from missive.channels.base import SendError, Throttled


@dataclass(frozen=True)
class RetryPolicy:
    base: float = 1.0
    cap: float = 300.0
    max_attempts: int = 10
    jitter: float = 0.2

    def delay(self, attempt: int, error: SendError, rand: float | None = None) -> float | None:
        """Seconds until the next try after failed try number `attempt`, or None: give up."""
        if not error.retryable or attempt >= self.max_attempts:
            return None
        spread = random.random() if rand is None else rand
        delay = min(self.cap, self.base * 2 ** (attempt - 1)) * (1 - self.jitter + 2 * self.jitter * spread)
        if isinstance(error, Throttled) and error.retry_after:
            delay = max(delay, error.retry_after)
        return delay

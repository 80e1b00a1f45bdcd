"""A small time-bounded cache: lookups that hot paths repeat thousands of times a second
(credentials, webhook URLs, channel links) are read from the database at most every few
seconds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

CACHE_SECONDS = 5.0
CACHE_MAX = 10_000


class TTLCache:
    def __init__(self, clock: Callable[[], float], ttl: float = CACHE_SECONDS) -> None:
        self._clock = clock
        self._ttl = ttl
        self._items: dict[object, tuple[float, Any]] = {}

    def get(self, key: object) -> tuple[bool, Any]:
        """(True, value) while fresh; (False, None) when absent or expired."""
        hit = self._items.get(key)
        if hit is None or hit[0] < self._clock():
            return False, None
        return True, hit[1]

    def put(self, key: object, value: Any, until: float | None = None) -> None:
        if len(self._items) >= CACHE_MAX:
            self._items.clear()
        expires = self._clock() + self._ttl
        self._items[key] = (min(expires, until) if until is not None else expires, value)

"""A small time-bounded cache: lookups that hot paths repeat thousands of times a second
(credentials, webhook URLs, channel links) are read from the database at most every few
seconds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

CACHE_SECONDS = 5.0
CACHE_MAX = 10_000


class TTLCache:
    def __init__(self, clock: Callable[[], float], ttl: float = CACHE_SECONDS) -> None:
        self._clock = clock
        self._ttl = ttl
        self._items: dict[object, tuple[float, Any]] = {}
        self._loading: dict[object, asyncio.Task[Any]] = {}

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

    async def load(self, key: object, loader: Callable[[], Awaitable[Any]]) -> Any:
        """The fresh value of `key`, else what `loader()` returns, then cached. Callers
        that miss the same key together share one load: when an entry expires under load,
        the requests waiting on it (64 at once on the accept bench, every 5 s) make one
        database read between them, not one each in turn on the process's connection."""
        hit, value = self.get(key)
        if hit:
            return value
        loading = self._loading.get(key)
        if loading is None:
            # A task of its own: a caller that goes away does not cancel the others' load.
            loading = asyncio.ensure_future(self._load(key, loader))
            loading.add_done_callback(_retrieved)
            self._loading[key] = loading
        return await asyncio.shield(loading)

    async def _load(self, key: object, loader: Callable[[], Awaitable[Any]]) -> Any:
        try:
            value = await loader()
            self.put(key, value)
            return value
        finally:
            del self._loading[key]


def _retrieved(task: asyncio.Task[Any]) -> None:
    # Its callers got its error; if they all went away, nobody needs it logged.
    if not task.cancelled():
        task.exception()

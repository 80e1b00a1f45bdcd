"""A small time-bounded cache: lookups that hot paths repeat thousands of times a second
(credentials, webhook URLs, channel links) are read from the database at most every few
seconds, and never across a change of configuration.

Every change an operator makes (an account, a secret, an application, a link, a number)
bumps `config_version` in its transaction (store/config_version.py). Each process follows
that counter (config_watch.py) and its `GENERATION`: an entry cached under an older
generation is a miss. The process that made a change moves on at its commit; the others
when their watcher reads the counter (every 0.25 s), or sooner when a send must not use
configuration older than its message (`ConfigWatch.fresh_since`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

CACHE_SECONDS = 5.0
CACHE_MAX = 10_000


class Generation:
    """Which configuration this process's caches hold; it moves on at every change seen."""

    def __init__(self) -> None:
        self.value = 0
        self._listeners: list[Callable[[], None]] = []

    def changed(self) -> None:
        self.value += 1
        for listener in self._listeners:
            listener()

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` at every change (e.g. to wake a loop that reads links)."""
        self._listeners.append(listener)

    def forget(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)


# One per process: what every cache of the process compares its entries with.
GENERATION = Generation()


class TTLCache:
    def __init__(
        self, clock: Callable[[], float], ttl: float = CACHE_SECONDS, generation: Generation = GENERATION
    ) -> None:
        self._clock = clock
        self._ttl = ttl
        self._generation = generation
        self._items: dict[object, tuple[float, Any, int]] = {}
        self._loading: dict[object, asyncio.Task[Any]] = {}

    def get(self, key: object) -> tuple[bool, Any]:
        """(True, value) while fresh; (False, None) when absent, expired or cached under
        an older configuration."""
        hit = self._items.get(key)
        if hit is None or hit[0] < self._clock() or hit[2] != self._generation.value:
            return False, None
        return True, hit[1]

    def put(self, key: object, value: Any, until: float | None = None, generation: int | None = None) -> None:
        """Cache `value`; `generation` is the one it was read under (by default the
        current one)."""
        if len(self._items) >= CACHE_MAX:
            self._items.clear()
        expires = self._clock() + self._ttl
        seen = self._generation.value if generation is None else generation
        self._items[key] = (min(expires, until) if until is not None else expires, value, seen)

    def drop(self, key: object) -> None:
        self._items.pop(key, None)

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
        # Cached under the generation the read started in: a change committed while it
        # ran makes it stale at once.
        generation = self._generation.value
        try:
            value = await loader()
            self.put(key, value, generation=generation)
            return value
        finally:
            del self._loading[key]


def _retrieved(task: asyncio.Task[Any]) -> None:
    # Its callers got its error; if they all went away, nobody needs it logged.
    if not task.cancelled():
        task.exception()

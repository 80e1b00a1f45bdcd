"""Follow the configuration version, so that every change takes effect within a second
in every process (missive/cache.py says how the caches use it).

Each API and dispatcher process reads `config_version` every `INTERVAL` seconds: one
single-row read (about 30 µs on SQLite, one round trip on PostgreSQL), four times a
second, whatever the load. A process that sees a new version moves its caches' generation
on. A send that must not use configuration older than its message (routing: a link
added just before the message was accepted) asks `fresh_since(t)`: answered at once when
the last read started after `t`, else by one read shared by every caller waiting then,
started at most every `SPACING` seconds: under load every message is recent, and reads
back to back would cost a core's fifth; spaced, they cost under 1% and add at most
`SPACING` to a send. The process that makes a change moves on at its commit
(`store.config_version.bump`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from missive.cache import GENERATION, Generation
from missive.store.config_version import current
from missive.store.faults import describe

log = logging.getLogger("missive.config")

# How often the version is read; the bound on how late another process's change is seen.
INTERVAL = 0.25
# The shortest time between two reads that sends wait for.
SPACING = 0.02


class ConfigWatch:
    def __init__(
        self, engine: AsyncEngine, generation: Generation = GENERATION, clock: Callable[[], float] = time.time,
        interval: float = INTERVAL,
    ) -> None:
        self._engine = engine
        self._generation = generation
        self._clock = clock
        self._interval = interval
        self._version: int | None = None
        # When the last read that succeeded started: changes committed before it are seen.
        self.checked_at = 0.0
        self._started_at = 0.0
        self._reading: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="missive-config-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def fresh_since(self, moment: float) -> None:
        """Return once the version read started after `moment` has been applied (or a
        read failed: the caches then keep what they hold, as they would anyway)."""
        moment = min(moment, self._clock())  # a time to come is now
        while self.checked_at < moment:
            if self._reading is None or self._reading.done():
                self._reading = asyncio.ensure_future(self._read(spaced=True))
            try:
                await asyncio.shield(self._reading)
            except Exception:  # noqa: BLE001 - logged by the watcher's loop; serve what is cached
                return

    async def _read(self, spaced: bool = False) -> None:
        if spaced:
            await asyncio.sleep(max(0.0, self._started_at + SPACING - self._clock()))
        started = self._started_at = self._clock()
        async with self._engine.connect() as conn:
            version = await current(conn)
        if self._version is not None and version != self._version:
            self._generation.changed()
        self._version = version
        self.checked_at = max(self.checked_at, started)

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                await self._read()
                if failing:
                    log.info("reading the configuration version works again")
                failing = False
            except Exception as exc:  # noqa: BLE001 - the database may come back
                if not failing:
                    log.warning("reading the configuration version failed: %s", describe(exc))
                failing = True
            await asyncio.sleep(self._interval)

"""Waiting in the dispatch loops: until stopped, woken, or a poll interval has passed; and
what they log while the database fails them."""

from __future__ import annotations

import asyncio
import logging
import time

from missive.store.faults import describe


async def wait_any(stopping: asyncio.Event, wake: asyncio.Event | None, timeout: float) -> None:
    waiters = [asyncio.ensure_future(stopping.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class Outage:
    """The failures of one loop's database work, logged once per outage rather than at
    every try (a loop polling every 0.2 s would log five lines a second), again when the
    error changes, and once more when the work succeeds again."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log = log
        self._what = what
        self._since: float | None = None
        self._tries = 0
        self._last = ""

    def failed(self, exc: BaseException) -> None:
        text = describe(exc)
        if self._since is None or text != self._last:
            self._log.warning("%s failed: %s (tried again; logged again when it changes or recovers)", self._what, text)
        if self._since is None:
            self._since = time.monotonic()
        self._tries += 1
        self._last = text

    def recovered(self) -> None:
        if self._since is None:
            return
        self._log.info("%s works again, after %.1f s and %d failed tries", self._what, time.monotonic() - self._since, self._tries)
        self._since, self._tries, self._last = None, 0, ""

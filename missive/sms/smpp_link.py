"""One SMPP connection of a bind: its pending requests and its window of submit_sm.

`SmppBind` (smpp_session) owns the session around it: binding, reading, keep-alive and
reconnects. A Link only writes, counts and fails: once shut, every request waiting on it
fails with SessionDown, and so does every later write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any


class SessionDown(Exception):
    """No usable bind, or the connection dropped, or no response in time."""


# (command_status, decoded PDU or None, when it was read: time.time()); a
# submit_sm_resp's decoded PDU is its message_id (str).
Response = tuple[int, Any, float]


class Link:
    """One TCP connection: its pending requests and its window of submit_sm."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, window: int) -> None:
        self.reader, self.writer = reader, writer
        self.window = window
        self.pending: dict[int, asyncio.Future[Response]] = {}
        self.in_flight = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.closed = asyncio.Event()
        self.reason = ""
        self.bound = False

    @property
    def load(self) -> int:
        return self.in_flight + len(self.waiters)

    def write(self, data: bytes) -> None:
        if self.closed.is_set():
            raise SessionDown(self.reason)
        self.writer.write(data)

    async def send(self, data: bytes) -> None:
        self.write(data)
        try:
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            self.shut(f"write failed: {exc!r}")
            raise SessionDown(self.reason) from exc

    def expect(self, sequence: int) -> asyncio.Future[Response]:
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.pending[sequence] = future
        return future

    async def take_slot(self) -> None:
        """Wait for room in the window (first come, first served); SessionDown on a drop."""
        if self.closed.is_set():
            raise SessionDown(self.reason)
        if self.in_flight < self.window and not self.waiters:
            self.in_flight += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter  # release() hands its slot over: in_flight is already counted
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release()  # handed a slot while being cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.in_flight -= 1

    def shut(self, reason: str) -> None:
        """Close once; every pending request and window waiter fails with SessionDown."""
        if self.closed.is_set():
            return
        self.reason, self.bound = reason, False
        self.closed.set()
        for future in [*self.pending.values(), *self.waiters]:
            if not future.done():
                future.set_exception(SessionDown(reason))
                future.exception()  # retrieved: no "never retrieved" warning if nobody waits
        self.pending.clear()
        self.waiters.clear()
        self.writer.close()

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

# Past this many bytes waiting in the transport, a `send` waits for them to drain.
DRAIN_ABOVE = 64 * 1024


class Link:
    """One TCP connection: its pending requests and its window of submit_sm.

    What is written during one turn of the event loop goes out in one write to the
    socket, at the end of the turn: under load a turn writes tens of submit_sm and
    deliver_sm_resp, and a system call each was 6% of a dispatcher's CPU (py-spy, peers'
    harness, 2,000 messages/s)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, window: int) -> None:
        self.reader, self.writer = reader, writer
        self.window = window
        # By sequence number: a request's future, or where a submit of a batch is answered
        # (smpp_session._Answer: done, set_result, set_exception as a future has them).
        self.pending: dict[int, Any] = {}
        self.in_flight = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.closed = asyncio.Event()
        self.reason = ""
        self.bound = False
        self._out: list[bytes] = []

    @property
    def load(self) -> int:
        return self.in_flight + len(self.waiters)

    def write(self, data: bytes) -> None:
        """Queue `data` for the write at the end of this turn of the loop."""
        if self.closed.is_set():
            raise SessionDown(self.reason)
        self._out.append(data)
        if len(self._out) == 1:
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        if not self._out:
            return
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out.clear()
        if self.writer.transport.is_closing():
            return
        try:
            self.writer.write(data)
        except (ConnectionError, OSError, RuntimeError) as exc:
            self.shut(f"write failed: {exc!r}")

    async def send(self, data: bytes) -> None:
        """`write`, waiting for the socket to take what is queued when much is."""
        self.write(data)
        if self.writer.transport.get_write_buffer_size() < DRAIN_ABOVE:
            return
        self.flush()
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
        self.flush()  # what was answered before (an unbind_resp) still goes
        self.reason, self.bound = reason, False
        self.closed.set()
        for future in [*self.pending.values(), *self.waiters]:
            if not future.done():
                future.set_exception(SessionDown(reason))
                future.exception()  # retrieved: no "never retrieved" warning if nobody waits
        self.pending.clear()
        self.waiters.clear()
        self.writer.close()

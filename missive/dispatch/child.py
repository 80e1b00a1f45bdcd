"""`missive serve --dispatch-process`: the dispatcher in a process of its own beside the
API, started, woken, restarted and stopped by the API process.

One `serve` process runs the API and the dispatcher on one core. With this switch the
API process starts `missive dispatch` as its child: each process has a core, and on
SQLite they take turns at the writer lock (store/sqlite_driver.py). On the peers'
harness the pair carried more messages a second than one process (docs/benchmarks.md).

The child's standard input is a pipe from the API process:

    one byte "m"   messages were accepted: claim now, not at the next poll
    one byte "w"   webhooks were stored: send them now
    end of file    the API process is gone (stopped, or killed): stop cleanly

so that a message waits for no poll interval, and the child never outlives its parent.
A child that dies is started again (after 1 s, then up to 30 s between tries while it
keeps dying); what it held is claimed again by its next life (missive/node.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable

from missive.config import Settings

log = logging.getLogger("missive.dispatch")

MESSAGES = b"m"
WEBHOOKS = b"w"
RESTART_MIN = 1.0
RESTART_MAX = 30.0
# A life this long starts the restart backoff over.
STEADY = 60.0


class DispatchProcess:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._process: asyncio.subprocess.Process | None = None
        self._watching: asyncio.Task[None] | None = None
        self._stopping = False
        # What to tell the child at the end of this turn of the loop: one write for
        # every accept of the turn.
        self._told = bytearray()

    async def start(self) -> None:
        await self._spawn()
        self._watching = asyncio.get_running_loop().create_task(self._watch(), name="missive-dispatch-process")

    async def _spawn(self) -> None:
        env = {**os.environ, "MISSIVE_DISPATCH_WOKEN_BY_STDIN": "true"}
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "missive", "dispatch", stdin=asyncio.subprocess.PIPE, env=env)
        log.info("dispatcher process %d started", self._process.pid)

    def notify(self) -> None:
        """Messages were accepted."""
        self._tell(MESSAGES)

    def webhooks_stored(self) -> None:
        self._tell(WEBHOOKS)

    def _tell(self, what: bytes) -> None:
        if what in self._told:
            return
        if not self._told:
            asyncio.get_running_loop().call_soon(self._flush)
        self._told += what

    def _flush(self) -> None:
        told, self._told = bytes(self._told), bytearray()
        process = self._process
        if process is None or process.stdin is None or process.returncode is not None:
            return  # being restarted: it claims what is due when it starts
        with contextlib.suppress(ConnectionError, RuntimeError):
            process.stdin.write(told)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while not self._stopping:
            assert self._process is not None
            started = loop.time()
            code = await self._process.wait()
            if self._stopping:
                return
            failures = 0 if loop.time() - started >= STEADY else failures + 1
            delay = min(RESTART_MAX, RESTART_MIN * 2 ** max(failures - 1, 0))
            log.error("dispatcher process %d exited with %s; starting another in %.0f s", self._process.pid, code, delay)
            await asyncio.sleep(delay)
            if not self._stopping:
                await self._spawn()

    async def stop(self) -> None:
        """End the child's input (it stops as on SIGTERM) and wait for it; past the
        shutdown timeout and a margin, kill it."""
        self._stopping = True
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching
        process = self._process
        if process is None or process.returncode is not None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), self._settings.shutdown_timeout + 5)
        except TimeoutError:
            log.error("dispatcher process %d did not stop in time; killed", process.pid)
            process.kill()
            await process.wait()


async def read_wakes(
    on_messages: Callable[[], None], on_webhooks: Callable[[], None], on_end: Callable[[], None]
) -> asyncio.BaseTransport:
    """In the child: call `on_messages()` / `on_webhooks()` for what the API process
    writes on standard input, `on_end()` at its end. The caller keeps the transport."""
    loop = asyncio.get_running_loop()

    class Wakes(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            if MESSAGES in data:
                on_messages()
            if WEBHOOKS in data:
                on_webhooks()

        def eof_received(self) -> None:
            on_end()

        def connection_lost(self, exc: Exception | None) -> None:
            on_end()

    transport, _ = await loop.connect_read_pipe(Wakes, sys.stdin)
    return transport

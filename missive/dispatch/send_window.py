"""The send window: how many sends may be out at once (handed to their channel, their
result not yet committed), which is what a SIGKILL sends twice."""

from __future__ import annotations

import asyncio
from collections import deque

# A send's result is to be committed within this long of the provider's answer: what a
# crash sends twice is then what was answered in this last moment (SendWindow).
RESULT_TARGET = 0.1
# The fewest sends the window lets out at once, however slow the commits.
WINDOW_FLOOR = 8


class SendWindow:
    """How many sends may be out (handed to their channel, their result not yet
    committed) at once: what a SIGKILL sends twice.

    The in-flight limit alone let results queue behind slow commits: on a loaded
    machine with three dispatchers on PostgreSQL a batch of ~300 results took 0.4 to 1.1 s
    to commit, results were 0.5 to 1.6 s old when committed, and a kill re-sent every one
    of the 300 to 500 sends out (tests/test_many_processes.py). The window follows each
    result's age at its commit: older than RESULT_TARGET, the window shrinks in
    proportion (at most once per RESULT_TARGET, to let the smaller batches show); younger,
    it grows by half a send per result, up to the in-flight limit. Smaller windows make
    smaller batches and shorter commits, so the age comes back under the target."""

    def __init__(self, ceiling: int, start: int = 64) -> None:
        self._ceiling = max(ceiling, 1)
        self._floor = min(WINDOW_FLOOR, self._ceiling)
        self.limit = float(min(max(start, self._floor), self._ceiling))
        self._out: set[str] = set()
        self._waiting: deque[asyncio.Future[None]] = deque()
        # Waiters woken for a place that have not entered yet: their places are kept
        # for them (`take` would otherwise fill them first).
        self._handed = 0
        self._cut_at = 0.0

    @property
    def capacity(self) -> int:
        return int(self.limit)

    async def enter(self, uuid: str) -> None:
        while len(self._out) + self._handed >= int(self.limit):
            turn = asyncio.get_running_loop().create_future()
            self._waiting.append(turn)
            try:
                await turn
            finally:
                if turn.done() and not turn.cancelled():
                    self._handed -= 1
        self._out.add(uuid)

    def take(self, uuid: str) -> bool:
        """Enter at once if there is room and nobody waits for it; else False."""
        if self._waiting or len(self._out) + self._handed >= int(self.limit):
            return False
        self._out.add(uuid)
        return True

    def leave(self, uuid: str, age: float | None, now: float) -> None:
        """`uuid`'s result is committed `age` seconds after its answer (None: not at all)."""
        if uuid not in self._out:
            return
        self._out.discard(uuid)
        if age is not None:
            if age > RESULT_TARGET:
                if now - self._cut_at >= RESULT_TARGET:
                    self.limit = max(self._floor, self.limit * max(0.5, RESULT_TARGET / age))
                    self._cut_at = now
            else:
                self.limit = min(self._ceiling, self.limit + 0.5)
        free = int(self.limit) - len(self._out) - self._handed
        while free > 0 and self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                self._handed += 1
                free -= 1

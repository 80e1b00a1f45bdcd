"""Group commit: many callers' writes in one transaction.

Each caller hands its work to the batcher and waits; the batcher commits everything
that arrived while the previous commit ran, in one transaction. SQLite then pays one
fsync for many messages instead of one each (~12,000 single-row commits/s against
~80,000 rows/s batched on our 2-core machine), and PostgreSQL one round trip.
A caller returns only after the transaction holding its work has committed. A batch
whose commit fails is committed again in halves, down to single items, so that one
bad item (a row breaking a constraint) fails alone rather than with every caller of
its batch; a database fault fails the batch at once.

`GroupWriter` batches row inserts (the accept path); `Batcher` takes any commit
function over a list of items (the dispatcher's results).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypeVar

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from missive.store.bulk import write_at_once
from missive.store.faults import classify, describe

log = logging.getLogger("missive.store")

T = TypeVar("T")
# An item, the future its caller waits on, and when it was handed in (the loop's clock).
Entry = tuple[T, asyncio.Future[None], float]


class Batcher(Generic[T]):
    def __init__(
        self,
        engine: AsyncEngine,
        commit: Callable[[AsyncConnection, list[T]], Awaitable[Any]],
        batch_max: int = 512,
        name: str = "batcher",
        on_committed: Callable[[Any], None] | None = None,
        one_statement: bool = False,
    ) -> None:
        self._engine = engine
        # `commit` is `bulk.write_at_once`, atomic on its own: one statement in autocommit
        # mode on PostgreSQL (no BEGIN and COMMIT round trips), one call of the driver on
        # SQLite. It gets a connection with no transaction open.
        self._one_statement = one_statement
        self._commit = commit
        # Called with what `commit` returned, once its transaction has committed.
        self._on_committed = on_committed
        self._batch_max = batch_max
        self._name = name
        # Each item with the future its caller waits on. A deque and one future to wake
        # the committing task: asyncio.Queue's put and get cost a few microseconds of
        # Python each, per item, on every hot path.
        self._queue: deque[Entry[T]] = deque()
        self._arrived: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop  # the loop `start` runs the batcher on
        self._committing = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name=f"missive-{self._name}")

    async def stop(self, timeout: float = 10.0) -> None:
        if self._task is None:
            return
        # Let every waiting caller's work be committed before stopping, the batch being
        # committed now included (cancelled mid-commit, it would roll back); within
        # `timeout`, should the database hang.
        deadline = asyncio.get_running_loop().time() + timeout
        while (self._queue or self._committing) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def submit(self, item: T) -> None:
        """Return once `item` is committed; raise what the commit raised otherwise."""
        await self.enqueue(item)

    def enqueue(self, item: T) -> asyncio.Future[None]:
        """`submit` without the wait: the future done once `item` is committed (or failed
        with what the commit raised). A caller with many items waits on their futures
        in turn, rather than a task each."""
        if self._task is None or self._task.done():
            stopped = asyncio.get_running_loop().create_future()
            stopped.set_exception(RuntimeError(f"the {self._name} is not running"))
            return stopped
        done = self._loop.create_future()
        self._queue.append((item, done, self._loop.time()))
        arrived = self._arrived
        if arrived is not None and not arrived.done():
            arrived.set_result(None)
        return done

    async def _gather(self) -> None:
        """Let the items still arriving join the batch, while they keep coming.

        Answers go out in bursts (a whole batch at once), so the next requests come back
        in a trickle: committing at the first one made a batch of one to five items for
        every large one, each paying a whole commit. Two turns of the loop let requests
        that arrived meanwhile be read (the first turn polls the sockets and starts their
        tasks) and reach `submit` (the second runs them); when none did, the batch goes.
        Idle, that costs two turns of an otherwise empty loop: microseconds."""
        while len(self._queue) < self._batch_max:
            waiting = len(self._queue)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            if len(self._queue) == waiting:
                return

    def _transaction(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        if not self._one_statement:
            return self._engine.begin()
        return _autocommit(self._engine) if self._engine.dialect.name == "postgresql" else self._engine.connect()

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._arrived = self._loop.create_future()
                await self._arrived
            await self._gather()
            queue = self._queue
            batch = [queue.popleft() for _ in range(min(len(queue), self._batch_max))]
            self._committing = True
            try:
                began = self._loop.time()
                await self._settle(batch)
                if log.isEnabledFor(logging.DEBUG):
                    now = self._loop.time()
                    log.debug("%s: %d items committed in %.1f ms, the oldest %.1f ms after it was handed in",
                              self._name, len(batch), 1000 * (now - began), 1000 * (now - batch[0][2]))
            finally:
                self._committing = False

    async def _settle(self, batch: list[Entry[T]], apart: bool = False) -> None:
        """Commit `batch`, or failing that its halves, down to single items: the items
        that fail alone are the ones the commit cannot take (a row that breaks a
        constraint, a value the driver cannot bind), and only their callers get the
        error. A database fault (classify) fails the whole batch at once, as it would
        fail each of its parts."""
        try:
            async with self._transaction() as conn:
                committed = await self._commit(conn, [item for item, _done, _at in batch])
        except Exception as exc:  # noqa: BLE001 - handed to the callers of what fails alone
            if len(batch) > 1 and classify(exc) is None:
                if not apart:
                    log.warning("%s: commit of %d items failed: %s; committing them apart",
                                self._name, len(batch), describe(exc))
                half = len(batch) // 2
                await self._settle(batch[:half], True)
                await self._settle(batch[half:], True)
                return
            if len(batch) == 1 and apart:
                log.warning("%s: an item failed alone: %s", self._name, describe(exc))
            else:
                log.warning("%s: commit of %d items failed: %s", self._name, len(batch), describe(exc))
            for _item, done, _at in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        if self._on_committed is not None:
            try:
                self._on_committed(committed)
            except Exception:  # the work is committed: its callers' answer stands
                log.exception("%s: after the commit", self._name)
        for _item, done, _at in batch:
            if not done.done():
                done.set_result(None)


@contextlib.asynccontextmanager
async def _autocommit(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with engine.connect() as conn:
        yield await conn.execution_options(isolation_level="AUTOCOMMIT")


Rows = dict[Table, list[dict]]


class GroupWriter(Batcher[Rows]):
    """Inserts rows, table by table in the given order (parents before children)."""

    def __init__(
        self,
        engine: AsyncEngine,
        tables: list[Table],
        batch_max: int = 512,
        on_committed: Callable[[list[Rows]], None] | None = None,
    ) -> None:
        async def insert(conn: AsyncConnection, items: list[Rows]) -> list[Rows]:
            by_table: dict[Table, list[dict]] = {table: [] for table in tables}
            for rows in items:
                for table, table_rows in rows.items():
                    by_table[table].extend(table_rows)
            await write_at_once(conn, list(by_table.items()))
            return items

        # `on_committed` gets each committed batch, once per batch rather than per item.
        super().__init__(engine, insert, batch_max, name="group-writer", on_committed=on_committed, one_statement=True)

    # Return once `rows` are committed (the name callers use; no wrapper on the hot path).
    write = Batcher.submit

"""aiosqlite with one thread hop per statement.

aiosqlite runs every call of the sqlite3 module in its own thread and hands the result
back to the event loop: a hop, two context switches and a wake-up of the loop. Through
SQLAlchemy a statement takes four of them (open a cursor, execute, fetch the rows, close
the cursor), and every connection checkout ends with a rollback hop even when no
transaction is open. Measured here, one process pinned to one core, through
SQLAlchemy: a transaction of one insert cost ~300 us of CPU and 48 context switches.

Here a statement is one hop: the worker thread opens a cursor, executes, fetches every
row and closes the cursor in one go, and the cursor SQLAlchemy sees hands out those rows.
A rollback with no transaction open is skipped. Everything else is aiosqlite's (the
thread, the queue, commit, close, the adapter SQLAlchemy wraps it in). The same
transaction: ~200 us and 18 context switches.

Writes whose results nobody reads (BEGIN IMMEDIATE, the batched inserts and updates of
store/bulk.py) can also be deferred: they wait in the connection and go in the hop of
the transaction's next statement or of its COMMIT, in order. A process has one SQLite
connection, which its transactions queue for, and each hop gives the event loop back to
whatever else is ready (HTTP requests, webhooks) before the transaction goes on: on the
end-to-end bench the connection was checked out 96% of the time, ~3 ms per transaction
of ~6 hops. An accept batch (BEGIN, two inserts, COMMIT) is now one hop. A deferred
statement that fails raises from the hop it went in, inside the same transaction. A
batch of writes with no transaction open goes as a transaction of its own (BEGIN
IMMEDIATE, the writes, COMMIT) in one hop: `Connection.transaction`.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections import deque
from collections.abc import Sequence
from functools import partial
from typing import Any

import aiosqlite

_Result = tuple[Any, list[Any], int, int | None]
Statement = tuple[str, Any, bool]  # SQL, parameters, executemany


def _null(_value: None) -> None:
    return None


# The sqlite3 module binds only exact int, float, str and bytearray directly; anything
# else, None included, goes through its adaptation protocol, which for None looks up
# `__adapt__` on its PrepareProtocol class and raises and clears an AttributeError (its
# message formatted) every time: ~0.19 us per NULL parameter, five per accepted message
# (client_ref, webhook_url, workflow_id, claimed_until, last_error), a tenth of what
# SQLite's thread spends on one. A registered adapter is found at the first lookup
# (~0.04 us). Registrations are the sqlite3 module's, process-wide; this one binds None
# as NULL, as without it.
sqlite3.register_adapter(type(None), _null)


def _execute(target: sqlite3.Connection | sqlite3.Cursor, sql: str, parameters: Any, many: bool) -> None:
    # In the worker thread.
    if many:
        target.executemany(sql, parameters)
    elif parameters is None:
        target.execute(sql)
    else:
        target.execute(sql, parameters)


class WriterLock:
    """The database's writer lock between processes, as a lock on a file beside it,
    taken before BEGIN IMMEDIATE and given back when the transaction ends.

    SQLite's own writer lock, when taken, makes the other process sleep in its busy
    handler (1, 2, 5, 10 ... 100 ms between tries) however soon it is free again. With an
    API process and a dispatcher on one SQLite file (peers' harness), the dispatcher sat
    at 54-67% of a core and the API's p99 was 140-440 ms. Waiting here instead, the
    waiter looks every POLL seconds; SQLite's lock is then free when BEGIN comes.
    Bounded by the busy timeout: past it BEGIN goes ahead and SQLite's handler decides,
    so a process that holds the file lock and waits for another cannot hang it.
    Processes that do not take it (a sync engine, the sqlite3 shell) meet SQLite's."""

    POLL = 0.0005

    def __init__(self, database: str, timeout: float) -> None:
        self._fd = os.open(database + "-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
        self._timeout = timeout
        self.held = False

    def take(self) -> None:
        # In the worker thread.
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return
                time.sleep(self.POLL)
                continue
            self.held = True
            return

    def give_back(self) -> None:
        if self.held:
            self.held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.give_back()
        os.close(self._fd)


def _run_deferred(conn: Connection, deferred: list[Statement]) -> None:
    # In the worker thread.
    for sql, parameters, many in deferred:
        if sql == BEGIN and conn.writer_lock is not None:
            conn.writer_lock.take()
        _execute(conn._conn, sql, parameters, many)


def _run(conn: Connection, deferred: list[Statement], sql: str, parameters: Any, many: bool) -> _Result:
    # In the worker thread: the deferred writes, then the whole statement, the cursor
    # closed before returning.
    _run_deferred(conn, deferred)
    cursor = conn._conn.cursor()
    try:
        _execute(cursor, sql, parameters, many)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class Cursor:
    """The async cursor SQLAlchemy's aiosqlite adapter drives, its rows fetched with
    the statement."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._rows: deque[Any] = deque()
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._rows.clear()

    async def execute(self, sql: str, parameters: Any = None) -> Cursor:
        self._take(await self._conn.statement(sql, parameters, False))
        return self

    async def executemany(self, sql: str, parameters: Sequence[Any]) -> Cursor:
        self._take(await self._conn.statement(sql, parameters, True))
        return self

    def _take(self, result: _Result) -> None:
        self.description, rows, self.rowcount, self.lastrowid = result
        self._rows = deque(rows)

    async def fetchone(self) -> Any:
        return self._rows.popleft() if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = min(self.arraysize if size is None else size, len(self._rows))
        return [self._rows.popleft() for _ in range(count)]

    async def fetchall(self) -> list[Any]:
        taken = list(self._rows)
        self._rows.clear()
        return taken

    async def close(self) -> None:
        self._rows.clear()


def _commit(conn: Connection, deferred: list[Statement]) -> None:
    # In the worker thread.
    try:
        _run_deferred(conn, deferred)
        conn._conn.commit()
    finally:
        if not conn._conn.in_transaction and conn.writer_lock is not None:
            conn.writer_lock.give_back()


def _rollback(conn: Connection) -> None:
    # In the worker thread.
    try:
        if conn._conn.in_transaction:
            conn._conn.rollback()
    finally:
        if conn.writer_lock is not None:
            conn.writer_lock.give_back()


BEGIN = "BEGIN IMMEDIATE"


class Connection(aiosqlite.Connection):
    def __init__(self, *args: Any, writer_lock: WriterLock | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deferred: list[Statement] = []
        self.writer_lock = writer_lock

    def cursor(self) -> Cursor:  # type: ignore[override]
        return Cursor(self)

    def defer(self, sql: str, parameters: Any = None, many: bool = False) -> None:
        """Run this write with the next statement or commit, before it."""
        self._deferred.append((sql, parameters, many))

    async def call(self, fn: Any, *args: Any) -> Any:
        """`fn(*args)` on the SQLite connection: in the worker thread, or here at once
        when a transaction is open. Inside one the writer lock is held, so no statement
        waits for another process; what is left is the statement's own work (tens to
        hundreds of microseconds), less than a hop's. A hop also waited for the event loop
        to come round to its answer: a results batch of ~160 items took 44 ms (median)
        over its ~6 hops while hundreds of sends were ready, holding the writer lock all
        along. BEGIN (which may wait for the lock) and COMMIT (which may checkpoint the
        WAL, with its fsync) still go to the thread."""
        if self._in_transaction():
            return fn(*args)
        return await self._execute(fn, *args)

    async def statement(self, sql: str, parameters: Any, many: bool) -> _Result:
        """Run one statement, the deferred writes before it: (description, rows,
        rowcount, lastrowid)."""
        return await self.call(_run, self, self.take_deferred(), sql, parameters, many)

    def take_deferred(self) -> list[Statement]:
        deferred, self._deferred = self._deferred, []
        return deferred

    async def transaction(self, statements: list[Statement]) -> None:
        """Run `statements` as one transaction, in one hop: writes whose results nobody
        reads, on a connection with no transaction open (SQLAlchemy's included)."""
        if self._deferred or self._in_transaction():
            raise RuntimeError("a transaction is open on this connection")
        self._deferred = [(BEGIN, None, False), *statements]
        try:
            await self.commit()
        except BaseException:
            await self.rollback()  # a hop of its own, on failure only
            raise

    async def commit(self) -> None:
        deferred = self.take_deferred()
        if deferred or self._in_transaction() or self._holds_lock():
            await self._execute(_commit, self, deferred)

    async def rollback(self) -> None:
        # Deferred writes are dropped unrun (a deferred BEGIN included).
        self._deferred.clear()
        if self._in_transaction() or self._holds_lock():
            await self._execute(_rollback, self)

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            if self.writer_lock is not None:
                self.writer_lock.close()
                self.writer_lock = None

    def _holds_lock(self) -> bool:
        return self.writer_lock is not None and self.writer_lock.held

    def _in_transaction(self) -> bool:
        # A flag of the connection, read without a hop; the worker is idle, since
        # SQLAlchemy awaits each call on a connection before the next.
        return self._connection is not None and self._connection.in_transaction


def deferring(dbapi_connection: Any) -> Connection | None:
    """The driver connection under a SQLAlchemy DBAPI connection if it can defer writes."""
    driver = getattr(dbapi_connection, "driver_connection", None)
    return driver if isinstance(driver, Connection) else None


def connector(database: str, **kwargs: Any):  # type: ignore[no-untyped-def]
    """For `create_async_engine(async_creator=...)`: a connection to `database`, its
    transactions under the writer lock between processes (WriterLock)."""

    async def connect() -> Connection:
        # Used from the event loop's thread too (Connection.call), never at the same time
        # as from the worker's: SQLAlchemy awaits each call before the next.
        conn = Connection(partial(sqlite3.connect, database, check_same_thread=False, **kwargs), iter_chunk_size=64,
                          writer_lock=WriterLock(database, float(kwargs.get("timeout", 5.0))))
        # A daemon thread, as SQLAlchemy makes aiosqlite's: a process exiting without
        # disposing of its engine must not hang on it.
        conn._thread.daemon = True
        return await conn

    return connect

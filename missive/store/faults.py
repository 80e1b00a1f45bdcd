"""What a database error means for the caller: out of space, unavailable for a while, or neither.

    classify(exc) -> FULL | UNAVAILABLE | None
    describe(exc) -> one line naming the driver's error, without SQL or parameters

FULL: the database cannot grow (SQLite's SQLITE_FULL, from a full disk or the
`max_page_count` cap of MISSIVE_SQLITE_MAX_PAGES; PostgreSQL's SQLSTATE 53100 disk_full).
UNAVAILABLE: the database cannot be reached or is locked past the wait (SQLite busy or
locked beyond the busy timeout, a lost or refused connection, a pool that gave no
connection in time, PostgreSQL's connection, operator-intervention and other
insufficient-resources classes). Both are worth retrying later; anything else is a bug.

An error is looked at with what it wraps (`orig`, `__cause__`), since
SQLAlchemy wraps the driver's exception, and the asyncpg adapter wraps asyncpg's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from sqlalchemy import exc as sa

# The classes a fault arrives as: SQLAlchemy's (it wraps the drivers'), the driver's own
# when unwrapped, and the socket's (a refused or timed-out connection).
FAULT_TYPES: tuple[type[Exception], ...] = (sa.SQLAlchemyError, sqlite3.Error, OSError)

FULL = "full"
UNAVAILABLE = "unavailable"
_OTHER = "other"

# SQLite primary result codes (the low byte of an extended code).
_SQLITE_FULL = 13
_SQLITE_UNAVAILABLE = frozenset({
    5,   # SQLITE_BUSY: locked by another connection past the busy timeout
    6,   # SQLITE_LOCKED
    10,  # SQLITE_IOERR
    14,  # SQLITE_CANTOPEN
    15,  # SQLITE_PROTOCOL
})
_PG_DISK_FULL = "53100"
# SQLSTATE classes: 08 connection exception, 53 insufficient resources (too many
# connections, out of memory), 57P operator intervention (shutdown, cannot connect now).
_PG_UNAVAILABLE_PREFIXES = ("08", "53", "57P")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 16:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        # Not __context__: an error raised while another was being handled is not caused by it.
        for inner in (getattr(current, "orig", None), current.__cause__):
            if isinstance(inner, BaseException):
                todo.append(inner)


def _driver(error: BaseException) -> str | None:
    """The driver's verdict: FULL, UNAVAILABLE, OTHER (a driver error of another kind) or
    None (not a driver error with a code)."""
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorcode", None)
        if code is None:
            return FULL if "database or disk is full" in str(error) else None
        code &= 0xFF
        if code == _SQLITE_FULL:
            return FULL
        return UNAVAILABLE if code in _SQLITE_UNAVAILABLE else _OTHER
    sqlstate = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    if not isinstance(sqlstate, str):
        return None
    if sqlstate == _PG_DISK_FULL:
        return FULL
    if sqlstate.startswith(_PG_UNAVAILABLE_PREFIXES):
        return UNAVAILABLE
    # 55000 is a broad class; a database closed to connections refuses them with it.
    if sqlstate == "55000" and "accepting connections" in str(error):
        return UNAVAILABLE
    return _OTHER


def _wrapper(error: BaseException) -> str | None:
    """Errors without a driver code: the pool's, the connection's, SQLAlchemy's classes."""
    if isinstance(error, sa.DBAPIError) and error.connection_invalidated:
        return UNAVAILABLE
    if isinstance(error, (sa.TimeoutError, sa.DisconnectionError, ConnectionError, TimeoutError)):
        return UNAVAILABLE
    # DB-API: OperationalError is the database's operation failing (a lost connection, a
    # transaction that could not be processed), InterfaceError the connection's.
    if isinstance(error, (sa.OperationalError, sa.InterfaceError)):
        return UNAVAILABLE
    if type(error).__name__ == "InterfaceError" and "closed" in str(error):
        return UNAVAILABLE  # asyncpg's "connection is closed", unwrapped
    return None


def classify(exc: BaseException) -> str | None:
    """FULL, UNAVAILABLE or None (not a database fault). A driver's code decides when
    there is one (SQLite's "no such table" is an OperationalError, and a bug, not an
    outage); SQLAlchemy's and the connection's classes otherwise."""
    chain = list(_chain(exc))
    verdicts = {_driver(error) for error in chain}
    for kind in (FULL, UNAVAILABLE, _OTHER):
        if kind in verdicts:
            return None if kind == _OTHER else kind
    return next((kind for kind in map(_wrapper, chain) if kind), None)


def describe(exc: BaseException) -> str:
    """The innermost driver error's type and message: SQLAlchemy's own text would add the
    statement and its parameters (message content, credentials) to the log."""
    inner = exc.orig if isinstance(exc, sa.DBAPIError) and exc.orig is not None else exc
    text = str(inner).splitlines()[0] if str(inner) else ""
    return f"{type(inner).__name__}: {text}"[:300]

"""Result rows as plain dicts, on the paths that turn many of them into dicts."""

from __future__ import annotations

import functools
from collections.abc import Collection
from typing import Any

import orjson
from sqlalchemy import JSON, CursorResult, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from missive.store import sqlite_driver
from missive.store.bulk import driver_error


def as_dicts(result: CursorResult[Any]) -> list[dict[str, Any]]:
    """The rows of `result` as dicts: `dict(row._mapping)` goes through SQLAlchemy's
    mapping view per column, a third slower on the claim paths, which turn every
    message and webhook of a busy process into dicts."""
    keys = list(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result]


# Values per `rows_in` statement on SQLite at most, and the sizes its statements come in
# (powers of two, the last value repeated to fill one): few texts, all in the driver's
# statement cache.
_IN_MAX = 512


@functools.lru_cache(maxsize=256)
def _in_sql(table: Table, names: tuple[str, ...], key: str, equal: tuple[str, ...], count: int, pg: bool, lock: bool) -> str:
    if pg:
        conditions = [f"{name} = ${i}" for i, name in enumerate(equal, 1)]
        kind = table.c[key].type.compile(dialect=postgresql.dialect())
        conditions.append(f"{key} = ANY(${len(equal) + 1}::{kind}[])")
    else:
        conditions = [f"{name} = ?" for name in equal] + [f"{key} IN ({', '.join('?' * count)})"]
    return f"SELECT {', '.join(names)} FROM {table.name} WHERE {' AND '.join(conditions)}" + (" FOR UPDATE" if lock else "")


async def rows_in(
    conn: AsyncConnection, table: Table, names: tuple[str, ...], key: str, values: Collection[Any],
    equal: tuple[tuple[str, Any], ...] = (), lock: bool = False,
) -> list[dict[str, Any]]:
    """The `names` columns, as dicts, of the rows of `table` whose `key` is one of `values`
    and whose `equal` columns hold those values (locked FOR UPDATE on PostgreSQL with
    `lock`).

    Written as the driver's own SQL: on the dispatcher's hot path (the messages a claim
    took, the rows every status change reads, the references receipts name) SQLAlchemy's
    compiling of a 256-value IN list and its result objects were ~9% of the dispatcher's
    CPU (py-spy, peers' harness)."""
    if not values:
        return []
    pg = conn.dialect.name == "postgresql"
    fixed = tuple(name for name, _ in equal)
    given = tuple(value for _, value in equal)
    jsons = [i for i, name in enumerate(names) if isinstance(table.c[name].type, JSON)]
    listed = list(values)
    found: list[Any] = []
    if pg:
        sql = _in_sql(table, names, key, fixed, 0, True, lock)
        found = list((await conn.exec_driver_sql(sql, (*given, listed))).all())
    else:
        # Inside a transaction on Missive's driver, straight to it: SQLAlchemy's execution
        # context, result object and greenlet hand-over were a third of a lookup's time.
        driver = sqlite_driver.deferring(conn.sync_connection.connection.dbapi_connection) \
            if conn.in_transaction() else None  # type: ignore[union-attr]
        for start in range(0, len(listed), _IN_MAX):
            chunk = listed[start:start + _IN_MAX]
            count = 1 << (len(chunk) - 1).bit_length()
            chunk += [chunk[-1]] * (count - len(chunk))
            sql = _in_sql(table, names, key, fixed, count, False, False)
            if driver is None:
                found.extend((await conn.exec_driver_sql(sql, (*given, *chunk))).all())
                continue
            try:
                found.extend((await driver.statement(sql, (*given, *chunk), False))[1])
            except conn.dialect.loaded_dbapi.Error as exc:
                raise driver_error(conn, sql, exc) from exc
    rows = [dict(zip(names, row, strict=True)) for row in found]
    for row in rows if jsons else ():
        for i in jsons:
            value = row[names[i]]
            if isinstance(value, str | bytes):
                row[names[i]] = orjson.loads(value)
    return rows

"""Many rows in one statement: the batched inserts and updates of the hot paths.

On PostgreSQL a batch goes as one statement over arrays, one array per column:

    INSERT INTO t (a, b) SELECT * FROM unnest($1::VARCHAR(36)[], $2::DOUBLE PRECISION[])
    UPDATE t SET b = u.b FROM unnest($1::..., $2::...) AS u(k, b) WHERE t.k = u.k

asyncpg's executemany sends and PostgreSQL executes one statement per row; measured on
the end-to-end bench, it took a sixth of a dispatcher's CPU. On SQLite, whose driver
runs executemany in C in one call, inserts and updates go as an executemany of the
driver's own statement, rows as tuples: SQLAlchemy's per-row parameter processing cost
more than the insert itself on the accept path (the rows are plain values we built; JSON
columns are serialised with orjson). Inserts go as multi-row statements, `VALUES (...),
(...)`, of 64, 32, ... 1 rows: per row, the driver's executemany resets the statement,
releases and takes back the GIL and steps it again, ~0.5 us of SQLite's thread per
message row on the accept path. Powers of two keep the statement texts few (seven per
table and column set), so that they stay in the driver's statement cache.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from itertools import chain
from operator import itemgetter
from typing import Any

import orjson
from sqlalchemy import JSON, Column, Table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from missive.store import sqlite_driver


def _array_type(column: Column[Any], conn: AsyncConnection) -> str:
    # JSON travels as text, cast back per element.
    if isinstance(column.type, JSON):
        return "TEXT[]"
    return f"{column.type.compile(dialect=conn.dialect)}[]"


def _json_text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _given_columns(table: Table, keys: Collection[str]) -> list[Column[Any]]:
    # The columns the rows give: a column left out (an autoincrement id) takes its default.
    return [c for c in table.c if c.name in keys]


def _values(column: Column[Any], rows: list[dict[str, Any]], key: str) -> list[Any]:
    values = [row.get(key) for row in rows]
    if isinstance(column.type, JSON):
        return [_json_text(v) for v in values]
    return values


def _as_tuples(names: tuple[str, ...], jsons: tuple[int, ...], rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    # `jsons`: the positions of JSON columns in `names`, given as text.
    try:
        tuples = [(row[names[0]],) for row in rows] if len(names) == 1 else list(map(itemgetter(*names), rows))
    except KeyError:  # a row leaves a column out: NULL, as with `_values`
        tuples = [tuple(row.get(name) for name in names) for row in rows]
    if not jsons:
        return tuples
    out = []
    for values in tuples:
        listed = list(values)
        for i in jsons:
            listed[i] = _json_text(listed[i])
        out.append(tuple(listed))
    return out


def _select(column: Column[Any], alias: str) -> str:
    return f"{alias}::json" if isinstance(column.type, JSON) else alias


async def _sqlite_run(conn: AsyncConnection, statements: list[sqlite_driver.Statement]) -> None:
    # Inside a transaction on Missive's SQLite driver the writes are deferred: they go in
    # the same thread hop as the transaction's next statement or its commit
    # (store/sqlite_driver.py). Nothing reads their results here.
    driver = sqlite_driver.deferring(conn.sync_connection.connection.dbapi_connection) if conn.in_transaction() else None
    for sql, parameters, many in statements:
        if driver is None:
            await conn.exec_driver_sql(sql, parameters if many else tuple(parameters))
        else:
            driver.defer(sql, parameters, many)


# A statement's text and the columns its parameters fill, made once per table and set of
# keys: the hot paths write the same few shapes thousands of times a second.
_Shape = tuple[str, tuple[str, ...], tuple[int, ...]]  # SQL, parameter names, JSON positions


def _shape(sql: str, columns: list[Column[Any]]) -> _Shape:
    return sql, tuple(c.name for c in columns), tuple(i for i, c in enumerate(columns) if isinstance(c.type, JSON))


@functools.lru_cache(maxsize=256)
def _insert_shape(table: Table, keys: frozenset[str]) -> _Shape:
    columns = _given_columns(table, keys)
    return _shape(f"INSERT INTO {table.name} ({', '.join(c.name for c in columns)}) VALUES", columns)


# Rows per multi-row INSERT at most: 64 x the widest table's columns stays far below
# SQLite's bound on parameters (32,766), and a larger batch is several statements.
_ROWS_PER_INSERT = 64


@functools.lru_cache(maxsize=512)
def _rows_sql(head: str, width: int, count: int) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return f"{head} {', '.join([row] * count)}"


@functools.lru_cache(maxsize=256)
def _update_shape(table: Table, key: str, names: tuple[str, ...], nulls: tuple[str, ...]) -> _Shape:
    sets = [f"{name} = ?" for name in names] + [f"{name} = NULL" for name in nulls]
    return _shape(f"UPDATE {table.name} SET {', '.join(sets)} WHERE {key} = ?", [table.c[name] for name in [*names, key]])


@functools.lru_cache(maxsize=64)
def _upsert_tail(table: Table, replace: tuple[str, ...]) -> str:
    """What makes an insert of rows whose key exists replace `replace` columns instead."""
    if not replace:
        return ""
    keys = ", ".join(c.name for c in table.primary_key.columns)
    return f" ON CONFLICT ({keys}) DO UPDATE SET " + ", ".join(f"{name} = excluded.{name}" for name in replace)


def _sqlite_insert(table: Table, rows: list[dict[str, Any]], replace: tuple[str, ...] = ()) -> list[sqlite_driver.Statement]:
    head, names, jsons = _insert_shape(table, frozenset(rows[0]))
    tuples = _as_tuples(names, jsons, rows)
    tail = _upsert_tail(table, replace)
    statements: list[sqlite_driver.Statement] = []
    start = 0
    while start < len(tuples):
        count = min(_ROWS_PER_INSERT, 1 << ((len(tuples) - start).bit_length() - 1))
        chunk = tuples[start:start + count]
        statements.append((_rows_sql(head, len(names), count) + tail, list(chain.from_iterable(chunk)), False))
        start += count
    return statements


def _sqlite_update(
    table: Table, key: str, rows: list[dict[str, Any]], nulls: tuple[str, ...]
) -> sqlite_driver.Statement:
    sql, names, jsons = _update_shape(table, key, tuple(name for name in rows[0] if name != key), nulls)
    return sql, _as_tuples(names, jsons, rows), True


async def insert_many(
    conn: AsyncConnection, table: Table, rows: list[dict[str, Any]], replace: tuple[str, ...] = ()
) -> None:
    """Insert `rows` (dicts with the same keys; a left-out column takes its default). With
    `replace`, a row whose primary key exists sets those columns of the row there instead
    (the rows must then have distinct keys)."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        await _sqlite_run(conn, _sqlite_insert(table, rows, replace))
        return
    sql, params = _pg_insert(conn, table, rows, 1)
    await conn.exec_driver_sql(sql + _upsert_tail(table, replace), tuple(params))


async def update_many(
    conn: AsyncConnection, table: Table, key: str, rows: list[dict[str, Any]], nulls: tuple[str, ...] = ()
) -> None:
    """Set, in each row of `table` whose `key` column equals a row's `key`, the other
    columns that row names (every row names the same ones), and the `nulls` columns to NULL."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        await _sqlite_run(conn, [_sqlite_update(table, key, rows, nulls)])
        return
    sql, params = _pg_update(conn, table, key, rows, nulls, 1)
    await conn.exec_driver_sql(sql, tuple(params))


async def delete_many(conn: AsyncConnection, table: Table, key: str, values: list[Any]) -> None:
    """Delete the rows of `table` whose `key` column is one of `values`."""
    if not values:
        return
    if conn.dialect.name != "postgresql":
        await _sqlite_run(conn, [(f"DELETE FROM {table.name} WHERE {key} = ?", [(v,) for v in values], True)])
        return
    column = table.c[key]
    await conn.exec_driver_sql(f"DELETE FROM {table.name} WHERE {key} = ANY($1::{_array_type(column, conn)})", (values,))


Update = tuple[Table, str, list[dict[str, Any]], tuple[str, ...]]  # table, key, rows, nulls


def driver_error(conn: AsyncConnection, sql: str, exc: Exception) -> DBAPIError:
    """An error of Missive's SQLite driver, called without SQLAlchemy, as SQLAlchemy
    raises a driver's (its SQL kept, its parameters hidden)."""
    error = conn.dialect.loaded_dbapi.Error
    return DBAPIError.instance(sql, None, exc, error, hide_parameters=True, dialect=conn.dialect)


async def write_at_once(
    conn: AsyncConnection, inserts: Sequence[tuple[Table, list[dict[str, Any]]]], updates: Sequence[Update] = ()
) -> None:
    """The inserts, then the updates, of `insert_many` and `update_many`.

    On PostgreSQL they go as one statement, the first ones as data-modifying CTEs: one
    round trip, and atomic on its own, so that a connection in autocommit mode needs no
    BEGIN and COMMIT around it (two more round trips; see `Batcher(one_statement=True)`).
    Foreign keys are checked at the end of the statement, after all of its parts. The
    parts must not touch the same row twice. On SQLite they run in turn, in the caller's
    transaction; on a connection with none open, in one of their own: with Missive's
    driver, BEGIN IMMEDIATE, the statements and COMMIT in one call of the driver
    (`sqlite_driver.Connection.transaction`), without SQLAlchemy's transaction, whose
    begin, commit, events and greenlet hand-overs cost 40-60 µs of Python a batch (~2.5 µs
    a message on the accept path)."""
    if conn.dialect.name != "postgresql":
        statements = [statement for table, rows in inserts if rows for statement in _sqlite_insert(table, rows)]
        statements += [_sqlite_update(table, key, rows, nulls) for table, key, rows, nulls in updates if rows]
        if conn.in_transaction():
            await _sqlite_run(conn, statements)
            return
        driver = sqlite_driver.deferring(conn.sync_connection.connection.dbapi_connection)  # type: ignore[union-attr]
        if driver is not None:
            try:
                await driver.transaction(statements)
            except conn.dialect.loaded_dbapi.Error as exc:
                raise driver_error(conn, "; ".join(dict.fromkeys(sql for sql, _p, _m in statements)), exc) from exc
            return
        async with conn.begin():
            await _sqlite_run(conn, statements)
        return
    parts: list[str] = []
    params: list[Any] = []
    for table, rows in inserts:
        if rows:
            sql, values = _pg_insert(conn, table, rows, len(params) + 1)
            parts.append(sql)
            params.extend(values)
    for table, key, rows, nulls in updates:
        if rows:
            sql, values = _pg_update(conn, table, key, rows, nulls, len(params) + 1)
            parts.append(sql)
            params.extend(values)
    if not parts:
        return
    ctes = ", ".join(f"w{i} AS ({part})" for i, part in enumerate(parts[:-1]))
    await conn.exec_driver_sql(f"WITH {ctes} {parts[-1]}" if ctes else parts[-1], tuple(params))


def _pg_insert(conn: AsyncConnection, table: Table, rows: list[dict[str, Any]], first: int) -> tuple[str, list[Any]]:
    columns = _given_columns(table, rows[0])
    names = ", ".join(c.name for c in columns)
    arrays = ", ".join(f"${i}::{_array_type(c, conn)}" for i, c in enumerate(columns, first))
    selects = ", ".join(_select(c, f"u.{c.name}") for c in columns)
    sql = f"INSERT INTO {table.name} ({names}) SELECT {selects} FROM unnest({arrays}) AS u({names})"
    return sql, [_values(c, rows, c.name) for c in columns]


def _pg_update(
    conn: AsyncConnection, table: Table, key: str, rows: list[dict[str, Any]], nulls: tuple[str, ...], first: int
) -> tuple[str, list[Any]]:
    names = [name for name in rows[0] if name != key]
    columns = [table.c[key]] + [table.c[name] for name in names]
    arrays = ", ".join(f"${i}::{_array_type(c, conn)}" for i, c in enumerate(columns, first))
    sets = [f"{name} = {_select(table.c[name], f'u.{name}')}" for name in names] + [f"{name} = NULL" for name in nulls]
    sql = (f"UPDATE {table.name} SET {', '.join(sets)} "
           f"FROM unnest({arrays}) AS u({', '.join(c.name for c in columns)}) WHERE {table.name}.{key} = u.{key}")
    return sql, [_values(c, rows, c.name) for c in columns]

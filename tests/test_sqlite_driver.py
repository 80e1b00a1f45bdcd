"""The SQLite driver: at most one thread hop per statement (none inside an open
transaction), the same results as aiosqlite's.

Hops are counted where the driver hands work to its thread (aiosqlite's `_execute`):
through SQLAlchemy, stock aiosqlite took four per statement (cursor, execute, fetch,
close) and one more for the rollback at every checkout.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from missive.store import sqlite_driver
from missive.store.bulk import insert_many, update_many, write_at_once
from missive.store.db import make_engine, migrate
from missive.store.tables import webhook_attempts
from tests.harness import POSTGRES_URL, settings_for

pytestmark = pytest.mark.skipif(bool(POSTGRES_URL), reason="the SQLite driver: SQLite pass only")


def _attempt(webhook_id: str, code: int) -> dict:
    return {"webhook_id": webhook_id, "at": 1.0, "status_code": code, "error": None, "duration_ms": 2.5}


def _with_engine(tmp_path: Path, run: Callable[[AsyncEngine], Awaitable[None]]) -> None:
    """`run` on an engine over a migrated SQLite database in `tmp_path`."""

    async def main() -> None:
        engine = make_engine(settings_for(tmp_path))
        await migrate(engine)
        try:
            await run(engine)
        finally:
            await engine.dispose()

    asyncio.run(main())


async def _count_hops(engine: AsyncEngine) -> list[int]:
    """A one-item list counting the hops of the engine's one connection from now on."""
    hops = [0]
    async with engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        assert isinstance(driver, sqlite_driver.Connection)
        handed = driver._execute

        async def counted(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
            hops[0] += 1
            return await handed(fn, *args, **kwargs)

        driver._execute = counted  # type: ignore[method-assign]
        await conn.rollback()
    hops[0] = 0
    return hops


def test_a_statement_is_one_hop_and_a_closed_transaction_needs_no_rollback(tmp_path: Path) -> None:
    async def run(engine: AsyncEngine) -> None:
        hops = await _count_hops(engine)
        async with engine.begin() as conn:
            await conn.execute(insert(webhook_attempts).values(_attempt("w-1", 200)))
            rows = (await conn.execute(select(webhook_attempts.c.webhook_id))).all()
        # The insert (with the deferred BEGIN IMMEDIATE) and COMMIT; the select runs at
        # once, in the open transaction (Connection.call); no rollback at checkin.
        assert hops[0] == 2
        assert [r.webhook_id for r in rows] == ["w-1"]

    _with_engine(tmp_path, run)


def test_batched_writes_go_with_the_next_statement_or_the_commit(tmp_path: Path) -> None:
    async def run(engine: AsyncEngine) -> None:
        hops = await _count_hops(engine)
        async with engine.begin() as conn:
            await insert_many(conn, webhook_attempts, [_attempt(f"w-{i}", 500) for i in range(3)])
            await update_many(conn, webhook_attempts, "webhook_id", [{"webhook_id": "w-1", "status_code": 200}])
            assert hops[0] == 0
        # BEGIN, the insert, the update and COMMIT in one hop.
        assert hops[0] == 1
        async with engine.begin() as conn:
            await insert_many(conn, webhook_attempts, [_attempt("w-3", 200)])
            # A read sees the writes before it: they go first, in its hop.
            codes = dict((await conn.execute(select(webhook_attempts.c.webhook_id, webhook_attempts.c.status_code))).all())
            assert hops[0] == 2
        assert codes == {"w-0": 500, "w-1": 200, "w-2": 500, "w-3": 200}
        # A deferred write that fails fails its transaction, at the commit, and
        # leaves nothing of it.
        with pytest.raises(sqlalchemy.exc.IntegrityError):
            async with engine.begin() as conn:
                await insert_many(conn, webhook_attempts, [_attempt("w-4", 200)])
                await insert_many(conn, webhook_attempts, [{"id": 1, **_attempt("w-dup", 200)}])
        # Rolled back before it ran: nothing is written, nothing is sent.
        before = hops[0]
        async with engine.connect() as conn:
            await conn.begin()
            await insert_many(conn, webhook_attempts, [_attempt("w-5", 200)])
            await conn.rollback()
        assert hops[0] == before
        async with engine.connect() as conn:
            ids = (await conn.execute(select(webhook_attempts.c.webhook_id))).scalars().all()
        assert sorted(ids) == ["w-0", "w-1", "w-2", "w-3"]

    _with_engine(tmp_path, run)


def test_results_rowcounts_ids_and_errors_are_those_of_sqlite(tmp_path: Path) -> None:
    async def run(engine: AsyncEngine) -> None:
        async with engine.begin() as conn:
            first = await conn.execute(insert(webhook_attempts).values(_attempt("w-1", 500)))
            second = await conn.execute(insert(webhook_attempts).values(_attempt("w-1", 200)))
            assert second.inserted_primary_key[0] == first.inserted_primary_key[0] + 1
            await conn.execute(insert(webhook_attempts), [_attempt(f"w-{i}", 200) for i in range(2, 7)])
            changed = await conn.execute(
                update(webhook_attempts).where(webhook_attempts.c.status_code == 200).values(error="seen")
            )
            assert changed.rowcount == 6
        async with engine.connect() as conn:
            result = await conn.execute(select(webhook_attempts.c.webhook_id).order_by(webhook_attempts.c.id))
            assert [r.webhook_id for r in result.fetchmany(3)] == ["w-1", "w-1", "w-2"]
            assert result.fetchone().webhook_id == "w-3"
            assert [r.webhook_id for r in result.fetchall()] == ["w-4", "w-5", "w-6"]
            assert (await conn.execute(text("SELECT count(*) FROM webhook_attempts WHERE id < 0"))).scalar_one() == 0
            empty = await conn.execute(text("SELECT id FROM webhook_attempts WHERE id < 0"))
            assert empty.keys() == ["id"] and empty.all() == []
        with pytest.raises(sqlalchemy.exc.OperationalError):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT no_such_column FROM webhook_attempts"))
        with pytest.raises(sqlalchemy.exc.IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(insert(webhook_attempts).values(id=1, **_attempt("w-dup", 200)))
        async with engine.connect() as conn:
            # The failed transaction left nothing and the connection still works.
            assert (await conn.execute(text("SELECT count(*) FROM webhook_attempts"))).scalar_one() == 7

    _with_engine(tmp_path, run)


def test_writes_outside_a_transaction_are_one_transaction_in_one_hop(tmp_path: Path) -> None:
    async def run(engine: AsyncEngine) -> None:
        hops = await _count_hops(engine)
        async with engine.connect() as conn:
            await write_at_once(
                conn,
                [(webhook_attempts, [_attempt("w-1", 200), _attempt("w-2", 500)])],
                [(webhook_attempts, "webhook_id", [{"webhook_id": "w-2", "status_code": 201}], ())],
            )
            # BEGIN IMMEDIATE, the insert, the update and COMMIT: one hop, and SQLAlchemy
            # has no transaction to close.
            assert hops[0] == 1 and not conn.in_transaction()
            codes = dict((await conn.execute(select(webhook_attempts.c.webhook_id, webhook_attempts.c.status_code))).all())
            assert codes == {"w-1": 200, "w-2": 201}
            await conn.commit()
            # A statement that fails takes the others of its transaction with it.
            with pytest.raises(sqlalchemy.exc.IntegrityError):
                await write_at_once(conn, [(webhook_attempts, [_attempt("w-3", 200)]),
                                           (webhook_attempts, [{"id": 1, **_attempt("w-dup", 200)}])])
            ids = (await conn.execute(select(webhook_attempts.c.webhook_id))).scalars().all()
            assert sorted(ids) == ["w-1", "w-2"]

    _with_engine(tmp_path, run)


def test_none_is_bound_as_null_without_the_adaptation_lookup(tmp_path: Path) -> None:
    # Registered, None is adapted by a dict lookup rather than sqlite3's failing
    # `__adapt__` lookup per parameter; what is stored must still be NULL.
    assert sqlite3.adapters[(type(None), sqlite3.PrepareProtocol)] is sqlite_driver._null

    async def run(engine: AsyncEngine) -> None:
        async with engine.connect() as conn:
            await write_at_once(conn, [(webhook_attempts, [_attempt("w-1", 200), {**_attempt("w-2", 500), "error": "boom"}])])
        async with engine.connect() as conn:
            nulls = (await conn.execute(text("SELECT webhook_id FROM webhook_attempts WHERE error IS NULL"))).scalars().all()
            typed = (await conn.execute(text("SELECT typeof(error) FROM webhook_attempts ORDER BY webhook_id"))).scalars().all()
        assert nulls == ["w-1"]
        assert typed == ["null", "text"]

    _with_engine(tmp_path, run)


def test_inserts_go_as_multi_row_statements_of_powers_of_two(tmp_path: Path) -> None:
    # 100 rows: statements of 64, 32 and 4 rows, every value where it belongs.
    from missive.store.bulk import _sqlite_insert

    rows = [{**_attempt(f"w-{i:03d}", 200 + i), "error": None if i % 2 else f"e{i}"} for i in range(100)]
    statements = _sqlite_insert(webhook_attempts, rows)
    assert [sql.count("(?") for sql, _parameters, _many in statements] == [64, 32, 4]
    assert not any(many for _sql, _parameters, many in statements)

    async def run(engine: AsyncEngine) -> None:
        async with engine.connect() as conn:
            await write_at_once(conn, [(webhook_attempts, rows)])
        async with engine.connect() as conn:
            stored = (await conn.execute(select(webhook_attempts.c.webhook_id, webhook_attempts.c.status_code,
                                                webhook_attempts.c.error).order_by(webhook_attempts.c.webhook_id))).all()
        assert [tuple(r) for r in stored] == [(r["webhook_id"], r["status_code"], r["error"]) for r in rows]
        # A failing row in the last statement leaves nothing of the others.
        failing = [{"id": 1000 + i, **_attempt(f"x-{i}", 200)} for i in range(70)] + [{"id": 1, **_attempt("dup", 200)}]
        with pytest.raises(sqlalchemy.exc.IntegrityError):
            async with engine.connect() as conn:
                await write_at_once(conn, [(webhook_attempts, failing)])
        async with engine.connect() as conn:
            count = (await conn.execute(text("SELECT count(*) FROM webhook_attempts"))).scalar()
        assert count == 100

    _with_engine(tmp_path, run)


def _lock_free(database: Path) -> bool:
    """Whether another process could take the writer lock file now."""
    fd = os.open(str(database) + "-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def test_the_writer_lock_file_is_held_for_exactly_a_transaction(tmp_path: Path) -> None:
    database = tmp_path / "missive.db"

    async def run(engine: AsyncEngine) -> None:
        assert _lock_free(database)
        async with engine.begin() as conn:
            await conn.execute(insert(webhook_attempts).values(_attempt("w-1", 200)))
            assert not _lock_free(database)
        assert _lock_free(database)
        # A statement that fails inside the transaction: held until the rollback.
        with pytest.raises(sqlalchemy.exc.OperationalError):
            async with engine.begin() as conn:
                await conn.execute(select(webhook_attempts.c.webhook_id))
                assert not _lock_free(database)
                await conn.execute(text("SELECT * FROM no_such_table"))
        assert _lock_free(database)
        # A batch of writes in one hop (bulk.write_at_once), and a read-only transaction.
        async with engine.connect() as conn:
            await write_at_once(conn, [(webhook_attempts, [_attempt("w-2", 500)])])
            assert _lock_free(database)
        async with engine.connect() as conn:
            await conn.execute(select(webhook_attempts.c.webhook_id))
            assert not _lock_free(database)
        assert _lock_free(database)

    _with_engine(tmp_path, run)


def test_a_second_process_waits_for_the_writer_lock_and_then_writes(tmp_path: Path) -> None:
    # Another engine on the same file stands for another process (its own lock file
    # descriptor): its transaction begins once the first one's commits, without
    # SQLite's "database is locked" and without waiting out the busy timeout.
    async def run(first: AsyncEngine) -> None:
        second = make_engine(settings_for(tmp_path, sqlite_busy_timeout=30.0))
        try:
            async with first.begin() as conn:
                await conn.execute(insert(webhook_attempts).values(_attempt("w-1", 200)))
                waiting = asyncio.ensure_future(_insert(second, "w-2"))
                await asyncio.sleep(0.3)
                assert not waiting.done()
            started = asyncio.get_running_loop().time()
            await asyncio.wait_for(waiting, 10)
            assert asyncio.get_running_loop().time() - started < 5
            async with first.connect() as conn:
                ids = (await conn.execute(select(webhook_attempts.c.webhook_id))).scalars().all()
            assert sorted(ids) == ["w-1", "w-2"]
        finally:
            await second.dispose()

    _with_engine(tmp_path, run)


async def _insert(engine: AsyncEngine, webhook_id: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(webhook_attempts).values(_attempt(webhook_id, 200)))


def test_rows_in_a_transaction_go_straight_to_the_driver(tmp_path: Path) -> None:
    # rows_in inside a transaction: no SQLAlchemy execution, the writes deferred before
    # it seen, its errors raised as SQLAlchemy raises a driver's.
    from missive.store.rows import rows_in

    async def run(engine: AsyncEngine) -> None:
        hops = await _count_hops(engine)
        async with engine.begin() as conn:
            await insert_many(conn, webhook_attempts, [_attempt(f"w-{i}", 200 + i) for i in range(3)])
            executed: list[str] = []
            sqlalchemy.event.listen(conn.sync_engine, "before_cursor_execute", lambda *a: executed.append(a[2]))
            rows = await rows_in(conn, webhook_attempts, ("webhook_id", "status_code"), "webhook_id", ["w-0", "w-2", "w-9"])
            assert sorted((r["webhook_id"], r["status_code"]) for r in rows) == [("w-0", 200), ("w-2", 202)]
            # One hop: BEGIN and the insert deferred before it went with it.
            assert executed == [] and hops[0] == 1
        with pytest.raises(sqlalchemy.exc.DBAPIError):
            async with engine.begin() as conn:
                await rows_in(conn, webhook_attempts, ("webhook_id",), "webhook_id", [object()])
        assert _lock_free(tmp_path / "missive.db")

    _with_engine(tmp_path, run)

"""The database engine: creation, SQLite tuning, and migrations applied at start."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import event, inspect, make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from missive.config import Settings
from missive.secrets_box import Keyring, attach
from missive.store import sqlite_driver
from missive.store.locks import lock_name

MIGRATIONS = Path(__file__).parent / "migrations"


def _json_dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def make_engine(settings: Settings) -> AsyncEngine:
    """An engine on the configured database, with the keyring of the link secrets."""
    keyring = Keyring.from_settings(settings)  # a malformed MISSIVE_SECRET_KEY fails here
    engine = _engine(settings)
    attach(engine, keyring)
    return engine


def _engine(settings: Settings) -> AsyncEngine:
    url = settings.resolved_database_url()
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        parsed = make_url(url)
        one_hop: dict[str, Any] = {}
        if parsed.database and parsed.database != ":memory:" and not parsed.query:
            # aiosqlite with one thread hop per statement (missive/store/sqlite_driver.py).
            # Prepared statements kept: batched inserts come in seven sizes per table and
            # column set (store/bulk.py), more than the default 128 hold with the rest.
            one_hop["async_creator"] = sqlite_driver.connector(
                parsed.database, timeout=settings.sqlite_busy_timeout, cached_statements=512
            )
        engine = create_async_engine(
            url,
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
            connect_args={"timeout": settings.sqlite_busy_timeout},
            **one_hop,
            # One connection: the process's transactions queue for it in the event loop,
            # first come first served. With several, each BEGIN IMMEDIATE that found the
            # writer lock taken slept in SQLite's busy handler (1, 2, 5 ... 100 ms) long
            # after the lock was free; every transaction takes that lock anyway.
            pool_size=1,
            max_overflow=0,
            pool_timeout=settings.sqlite_busy_timeout,
        )
        synchronous = settings.sqlite_synchronous.upper()
        if synchronous not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"MISSIVE_SQLITE_SYNCHRONOUS: unknown mode {synchronous!r}")
        busy_ms = max(0, int(settings.sqlite_busy_timeout * 1000))
        max_pages = max(0, settings.sqlite_max_pages)

        @event.listens_for(engine.sync_engine, "connect")
        def _tune(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.execute("PRAGMA foreign_keys=ON")
            if max_pages:
                # Per connection, so on every one: past it, writes fail with SQLITE_FULL.
                cursor.execute(f"PRAGMA max_page_count={max_pages}")
            cursor.close()
            # The driver would only BEGIN before its first write, so a transaction's reads
            # ran outside it and a decision made on them (a status moving forward, a receipt
            # finding its message) could race a concurrent commit. Transactions are begun
            # here instead, IMMEDIATE: they hold the writer lock from their first read.
            dbapi_connection.isolation_level = None

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn):  # type: ignore[no-untyped-def]
            driver = sqlite_driver.deferring(conn.connection.dbapi_connection)
            if driver is None:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:  # sent with the transaction's first statement
                driver.defer("BEGIN IMMEDIATE")

        return engine
    return create_async_engine(
        url,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
        pool_size=10,
        max_overflow=10,
        # No ping before each checkout: it cost a round trip per transaction (8% of a
        # dispatcher's CPU). After a database restart the first statement on a dead
        # connection fails and SQLAlchemy drops the whole pool; that request answers 503
        # and a batch is retried, as for any database fault.
    )


def alembic_config() -> Any:
    from alembic.config import Config  # only where a migration runs: see `migrate`

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


@functools.lru_cache(maxsize=1)
def newest_revision() -> str:
    """The newest migration this code ships: each migration's file name starts with its
    revision id, and they follow each other in one line (tests/test_cli_and_storage.py
    checks both against Alembic's own reading of the files)."""
    return max(path.name.split("_", 1)[0] for path in (MIGRATIONS / "versions").glob("[0-9]*_*.py"))


def _revision(connection) -> str | None:  # type: ignore[no-untyped-def]
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _upgrade(connection) -> None:  # type: ignore[no-untyped-def]
    # Alembic is imported only when the schema is not the newest (~0.2 s of a CLI
    # command's or a server's start, most of them on a database already migrated).
    if _revision(connection) == newest_revision():
        return
    from alembic import command

    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision (idempotent, run at every start).

    Several processes starting together on one PostgreSQL would race to create the same
    tables; a transaction-scoped advisory lock lets one migrate while the others wait and
    then find nothing to do. (SQLite's BEGIN IMMEDIATE already serialises them.)
    """
    async with engine.begin() as connection:
        await lock_name(connection, "migrations")
        await connection.run_sync(_upgrade)


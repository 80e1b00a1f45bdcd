"""Named locks for decisions that two dispatcher processes could make at the same time.

On PostgreSQL (READ COMMITTED) a receipt and the send result it belongs to can be
recorded by two processes at once, each unable to see the other's uncommitted rows: the
receipt finds no message, the send result finds no kept receipt, and the message stays
`submitted` for ever. Both sides take transaction-scoped advisory locks on the names
they share (the SMSC reference's forms), so one waits for the other's commit and then
sees it. Locks are taken in one sorted statement, so two batches never wait on each
other crosswise. On SQLite every write transaction already holds the database's
writer lock (BEGIN IMMEDIATE), and this does nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT
from sqlalchemy.ext.asyncio import AsyncConnection

_LOCK = text(
    "SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT unnest(:keys) AS k ORDER BY 1) AS sorted"
).bindparams(bindparam("keys", type_=ARRAY(BIGINT)))


def _key(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


async def lock_name(conn: AsyncConnection, name: str, shared: bool = False) -> None:
    """Hold one named lock until the transaction ends, exclusive or shared (PostgreSQL
    only): the migrations at start, the key of the link secrets during a rotation."""
    if conn.dialect.name != "postgresql":
        return
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    await conn.execute(text(f"SELECT {function}(:key)"), {"key": _key(name)})


async def lock_names(conn: AsyncConnection, names: Iterable[str]) -> None:
    """Hold a lock on each name until the transaction ends (PostgreSQL only: on SQLite
    `names` is not read, so a generator of them costs nothing there)."""
    if conn.dialect.name != "postgresql":
        return
    keys = sorted({_key(name) for name in names})
    if keys:
        await conn.execute(_LOCK, {"keys": keys})

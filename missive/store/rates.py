"""Token buckets in the database: one per channel link, shared by every dispatcher process.

A bucket holds up to one second of its rate. `take` refills it for the time since its
last use, takes what was asked (it may go below zero: the caller then waits), and says
how long the caller must wait. The row is locked while this happens (FOR UPDATE on
PostgreSQL, the writer lock of BEGIN IMMEDIATE on SQLite), so two processes never spend
the same tokens.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from missive.store.tables import rate_buckets
from missive.store.upsert import insert


async def take(conn: AsyncConnection, key: str, rate: float, units: float, now: float) -> float:
    """Take `units` from `key`'s bucket at `rate` per second; the seconds to wait first."""
    capacity = max(1.0, rate)
    await conn.execute(
        insert(conn, rate_buckets).values(key=key, tokens=capacity, stamp=now).on_conflict_do_nothing()
    )
    query = select(rate_buckets.c.tokens, rate_buckets.c.stamp).where(rate_buckets.c.key == key)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    tokens, stamp = (await conn.execute(query)).one()
    tokens = min(capacity, tokens + max(0.0, now - stamp) * rate) - units
    await conn.execute(update(rate_buckets).where(rate_buckets.c.key == key).values(tokens=tokens, stamp=max(now, stamp)))
    return 0.0 if tokens >= 0 else -tokens / rate

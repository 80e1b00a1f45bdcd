"""Claiming due rows with a lease: the one queue mechanism of the outbox, timers and webhooks.

A row is due when `due_at <= now` and it is not leased (`claimed_until` empty or past).
Claiming sets `claimed_until = now + lease` and `claimed_by` (the claiming process's node,
missive/node.py) and returns the rows. A dispatcher that dies holding a lease lets it run
out; the rows are then claimed again (at least once) by any dispatcher, or at once by
its own next life, which hands back what its node held before it claims (`take_back`).
On PostgreSQL the candidate rows are locked with FOR UPDATE SKIP LOCKED, so concurrent
dispatchers take disjoint batches instead of waiting on each other.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Column, Table, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from missive.store.faults import describe
from missive.store.rows import as_dicts

log = logging.getLogger("missive.store")


async def claim_due(
    conn: AsyncConnection,
    table: Table,
    key: Column[Any],
    now: float,
    lease: float,
    limit: int,
    *conditions: Any,
    by: str | None = None,
) -> list[dict[str, Any]]:
    candidates = (
        select(key)
        .where(table.c.due_at <= now, or_(table.c.claimed_until.is_(None), table.c.claimed_until < now), *conditions)
        .order_by(table.c.due_at)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    result = await conn.execute(
        update(table)
        .where(key.in_(candidates.scalar_subquery()))
        .values(claimed_until=now + lease, claimed_by=by)
        .returning(*table.c)
    )
    # RETURNING gives no order: hand the oldest due rows out first.
    return sorted(as_dicts(result), key=lambda row: row["due_at"])


async def release(engine: AsyncEngine, key: Column[Any], ids: list[Any], what: str) -> None:
    """End the lease of rows a process holds but will not work on: claimable again now
    (rather than after their lease, long after a restart). Should the database fail, the
    leases run out instead; that is logged, not raised."""
    if not ids:
        return
    try:
        async with engine.begin() as conn:
            await conn.execute(update(key.table).where(key.in_(ids)).values(claimed_until=None))
    except Exception as exc:  # noqa: BLE001 - the leases run out instead
        log.warning("handing back %d %s failed: %s", len(ids), what, describe(exc))


async def take_back(engine: AsyncEngine, node: str, *queues: tuple[Table, Any]) -> int:
    """End every lease `node` holds on the `queues` (a table, and a condition that narrows
    it to rows that may be leased, for an index to find them): called by a process before
    it claims anything, the leases of its previous life, which died holding them. The
    rows taken back."""
    taken = 0
    async with engine.begin() as conn:
        for table, pending in queues:
            result = await conn.execute(
                update(table)
                .where(pending, table.c.claimed_by == node, table.c.claimed_until.is_not(None))
                .values(claimed_until=None)
            )
            taken += result.rowcount
    return taken

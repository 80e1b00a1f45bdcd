"""The `provider_logs` table: written in the dispatcher's results batches, read by the
API and the console, pruned after MISSIVE_PROVIDER_LOG_DAYS."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from missive.store.bulk import insert_many
from missive.store.faults import describe
from missive.store.messages import Scope
from missive.store.tables import messages, provider_logs
from missive.waiting import wait_any

log = logging.getLogger("missive.dispatch")

# Pruning deletes this many rows per statement, so that no transaction holds the
# table (or SQLite's one writer lock) for long.
PRUNE_CHUNK = 5_000


async def write(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    await insert_many(conn, provider_logs, rows)


async def for_message(engine: AsyncEngine, scope: Scope, message_uuid: str) -> list[dict[str, Any]] | None:
    """The message's exchanges, oldest first; None when the caller may not see it."""
    async with engine.connect() as conn:
        visible = (await conn.execute(
            select(messages.c.uuid).where(messages.c.uuid == message_uuid, scope.clause()))).first()
        if visible is None:
            return None
        rows = await conn.execute(
            select(provider_logs).where(provider_logs.c.message_uuid == message_uuid)
            .order_by(provider_logs.c.at, provider_logs.c.id))
        return [dict(r._mapping) for r in rows]


async def prune(engine: AsyncEngine, before: float) -> int:
    """Delete the rows older than `before`, a chunk per transaction; how many went."""
    gone = 0
    while True:
        async with engine.begin() as conn:
            ids = select(provider_logs.c.id).where(provider_logs.c.at < before).limit(PRUNE_CHUNK)
            deleted = (await conn.execute(delete(provider_logs).where(provider_logs.c.id.in_(ids)))).rowcount or 0
        gone += deleted
        if deleted < PRUNE_CHUNK:
            return gone


def prune_interval(keep_seconds: float) -> float:
    """How often to prune: a tenth of the retention, between half a second and ten minutes."""
    return min(600.0, max(0.5, keep_seconds / 10))


async def prune_loop(engine: AsyncEngine, keep_seconds: float, stopping: asyncio.Event,
                     clock: Callable[[], float]) -> None:
    """Prune now and then until `stopping` is set (every dispatcher does; the deletes of
    two at once only find less to do)."""
    interval = prune_interval(keep_seconds)
    while not stopping.is_set():
        try:
            gone = await prune(engine, clock() - keep_seconds)
            if gone:
                log.info("provider logs: %d older than %.4g days deleted", gone, keep_seconds / 86400)
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            log.warning("pruning provider logs failed: %s", describe(exc))
        await wait_any(stopping, None, interval)

"""Queue gauges, read from the database when /metrics is scraped.

Any process may answer a scrape (one of several workers, or an API-only server beside a
separate dispatcher), and only the database knows the whole queue, so these are not
kept in memory: one query per scrape counts the due rows of each queue and finds the
oldest due time.

    outbox    messages waiting to be handed to their channel (`outbox`)
    webhooks  webhooks waiting to be POSTed (`webhook_outbox` rows still pending)
    timers    promised statuses and failover expiries (`timers`)

A row is due once its `due_at` has passed; rows being worked on (leased) still count,
rows scheduled for later (a retry's backoff, a receipt in a second) do not.
"""

from __future__ import annotations

from typing import Any

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncEngine

from missive.store.tables import outbox, timers, webhook_outbox


def _due(name: str, table: Any, now: float, *conditions: Any) -> Any:
    return select(literal(name).label("queue"), func.count().label("due"), func.min(table.c.due_at).label("oldest")).where(
        table.c.due_at <= now, *conditions
    )


async def queue_families(engine: AsyncEngine, now: float) -> list[GaugeMetricFamily]:
    query = union_all(
        _due("outbox", outbox, now),
        _due("webhooks", webhook_outbox, now, webhook_outbox.c.state == "pending"),
        _due("timers", timers, now),
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    depth = GaugeMetricFamily("missive_queue_depth", "Due rows waiting in each queue.", labels=["queue"])
    age = GaugeMetricFamily(
        "missive_queue_oldest_age_seconds", "How long the oldest due row of each queue has been due (0 when none).", labels=["queue"]
    )
    for row in rows:
        depth.add_metric([row.queue], float(row.due))
        age.add_metric([row.queue], max(0.0, now - row.oldest) if row.oldest is not None else 0.0)
    return [depth, age]

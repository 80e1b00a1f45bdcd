"""Recording status changes: the one place every status goes through (send results,
provider receipts, promised statuses), with what follows a move: its webhook, and the
failover workflow the message belongs to."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from missive.observability import metrics
from missive.store.statuses import StatusChange, apply_changes
from missive.webhooks.outbox import WebhookTargets, enqueue_status_webhooks
from missive.workflows import engine as workflows


async def record_statuses(
    conn: AsyncConnection, targets: WebhookTargets, changes: list[StatusChange], now: float,
    columns: dict[str, dict[str, Any]] | None = None,
) -> list[tuple[StatusChange, dict[str, Any]]]:
    """`apply_changes` (`columns` set with the moves), then what follows each move."""
    applied = await apply_changes(conn, changes, columns)
    for change, row in applied:
        metrics.status_recorded(row["channel"], change.status)
    await enqueue_status_webhooks(conn, targets, applied, now)
    await workflows.on_statuses(conn, targets, applied, now)
    return applied

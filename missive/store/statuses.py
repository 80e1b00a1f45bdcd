"""The status model: statuses only move forward, and every move is one webhook.

    accepted -> submitted -> delivered -> read
                   \\-> rejected | undeliverable   (final)

Every reported status is kept as a `message_events` row, even one that arrives late
(a `delivered` after `read`); only a move forward changes the message and makes a
status webhook.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from missive.store.bulk import insert_many, update_many
from missive.store.rows import rows_in
from missive.store.tables import message_events, messages

_ROW = tuple(column.name for column in messages.c if column.name != "body")

RANK = {"accepted": 0, "submitted": 1, "delivered": 2, "rejected": 2, "undeliverable": 2, "read": 3}
FINAL = ("read", "rejected", "undeliverable")


@dataclass(frozen=True)
class StatusChange:
    message_uuid: str
    status: str
    at: float
    provider_ref: str | None = None
    error_code: int | None = None
    error_reason: str | None = None
    # Channel fields the v1 status webhook carries (StatusEvent.details).
    details: dict[str, Any] | None = None


def moves_forward(current: str, new: str) -> bool:
    if current in FINAL:
        return False
    return RANK[new] > RANK[current]


async def apply_changes(
    conn: AsyncConnection, changes: list[StatusChange], columns: dict[str, dict[str, Any]] | None = None,
) -> list[tuple[StatusChange, dict[str, Any]]]:
    """Record `changes`; return those that moved their message, with the message row.
    `columns` (by message uuid) are set on those messages too, in the same statement as
    their move (a send's link, with its `submitted`): an update of the row fewer."""
    if not changes:
        return []
    # Every column but the request body: what follows a move (webhooks, workflows,
    # metrics) never reads it, so it is neither fetched nor decoded.
    current = {row["uuid"]: row for row in await rows_in(conn, messages, _ROW, "uuid",
                                                         {c.message_uuid for c in changes}, lock=True)}
    for uuid, values in (columns or {}).items():
        if uuid in current:
            current[uuid].update(values)  # what follows a move reads the row as written
    events: list[dict[str, Any]] = []
    applied: list[tuple[StatusChange, dict[str, Any]]] = []
    # One update per message: its last move in this batch.
    moves: dict[str, dict[str, Any]] = {}
    for change in changes:
        row = current.get(change.message_uuid)
        if row is None:
            continue
        if moves_forward(row["status"], change.status) and change.at <= row["updated_at"]:
            # A receipt can be read before the send result it follows is recorded (SMSCs
            # answer fast); its time is put just after, so that timestamps tell the order.
            change = replace(change, at=row["updated_at"] + 0.001)
        events.append(
            {
                "message_uuid": change.message_uuid,
                "status": change.status,
                "timestamp": change.at,
                "provider_ref": change.provider_ref,
                "error_code": change.error_code,
                "error_reason": change.error_reason,
            }
        )
        if moves_forward(row["status"], change.status):
            row["status"] = change.status
            row["updated_at"] = change.at
            moves[change.message_uuid] = {"uuid": change.message_uuid, "status": change.status, "updated_at": change.at}
            applied.append((change, dict(row)))
    for uuid, values in (columns or {}).items():
        moves.setdefault(uuid, {"uuid": uuid}).update(values)
    # update_many takes rows naming the same columns: one statement for each set.
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for move in moves.values():
        shapes.setdefault(tuple(move), []).append(move)
    await insert_many(conn, message_events, events)
    for rows in shapes.values():
        await update_many(conn, messages, "uuid", rows)
    return applied

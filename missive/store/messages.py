"""Queries on messages and their status history."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from missive.ids import time_ordered_id
from missive.store.tables import message_events, messages, outbox, webhook_outbox


def new_message_rows(
    body: dict[str, Any], account_id: str, application_id: str | None, now: float | None = None
) -> tuple[str, dict[Table, list[dict]]]:
    """The rows that accept one message: the message itself and its outbox entry."""
    now = time.time() if now is None else now
    message_uuid = time_ordered_id()
    message = {
        "uuid": message_uuid,
        "account_id": account_id,
        "application_id": application_id,
        "channel": body["channel"],
        "message_type": body["message_type"],
        "to_addr": body["to"],
        "from_addr": body["from"],
        "body": body,
        "client_ref": body.get("client_ref"),
        "webhook_url": body.get("webhook_url"),
        "webhook_version": body.get("webhook_version") or "v1",
        "status": "accepted",
        "workflow_id": None,
        "created_at": now,
        "updated_at": now,
    }
    entry = {"message_uuid": message_uuid, "due_at": now, "attempts": 0, "claimed_until": None, "claimed_by": None,
             "last_error": None}
    return message_uuid, {messages: [message], outbox: [entry]}


@dataclass(frozen=True)
class Scope:
    """Whose messages a caller may read: an account's, or one application's."""

    account_id: str
    application_id: str | None = None

    def clause(self):  # type: ignore[no-untyped-def]
        clause = messages.c.account_id == self.account_id
        if self.application_id is not None:
            clause = and_(clause, messages.c.application_id == self.application_id)
        return clause


async def get_message(
    engine: AsyncEngine, scope: Scope, message_uuid: str
) -> tuple[dict, list[dict], list[dict]] | None:
    """The message, its status events, and its webhooks with their delivery state."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(select(messages).where(messages.c.uuid == message_uuid, scope.clause()))
        ).first()
        if row is None:
            return None
        events = await conn.execute(
            select(message_events)
            .where(message_events.c.message_uuid == message_uuid)
            .order_by(message_events.c.timestamp, message_events.c.id)
        )
        hooks = await conn.execute(
            select(webhook_outbox)
            .where(webhook_outbox.c.message_uuid == message_uuid)
            .order_by(webhook_outbox.c.created_at)
        )
        return dict(row._mapping), [dict(e._mapping) for e in events], [dict(h._mapping) for h in hooks]


@dataclass(frozen=True)
class MessageFilter:
    status: str | None = None
    channel: str | None = None
    to: str | None = None
    client_ref: str | None = None
    since: float | None = None
    # Keyset cursor: the (created_at, uuid) of the last row of the previous page.
    before: tuple[float, str] | None = None


async def list_messages(engine: AsyncEngine, scope: Scope, filters: MessageFilter, limit: int) -> list[dict]:
    query = select(messages).where(scope.clause())
    if filters.status:
        query = query.where(messages.c.status == filters.status)
    if filters.channel:
        query = query.where(messages.c.channel == filters.channel)
    if filters.to:
        query = query.where(messages.c.to_addr == filters.to)
    if filters.client_ref:
        query = query.where(messages.c.client_ref == filters.client_ref)
    if filters.since is not None:
        query = query.where(messages.c.created_at >= filters.since)
    if filters.before is not None:
        created_at, last_uuid = filters.before
        query = query.where(
            or_(
                messages.c.created_at < created_at,
                and_(messages.c.created_at == created_at, messages.c.uuid < last_uuid),
            )
        )
    query = query.order_by(messages.c.created_at.desc(), messages.c.uuid.desc()).limit(limit)
    async with engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(query)]

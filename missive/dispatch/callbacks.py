"""Provider callbacks (receipts and inbound messages) turned into statuses and webhooks.

A channel parses its provider's callback into events; this module finds each receipt's
message through `provider_refs`, drops events already handled (`seen_events`), and
writes statuses, inbound messages and their webhooks in one transaction. Both lookups
are scoped to the link the callback arrived on (and was verified against): another
account's link naming this link's message ids finds nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from missive.channels.base import InboundEvent, StatusEvent
from missive.dispatch.recording import record_statuses
from missive.ids import time_ordered_id
from missive.store.statuses import StatusChange
from missive.store.tables import inbound_messages, provider_refs, seen_events
from missive.webhooks.outbox import WebhookTargets, enqueue_inbound_webhook


@dataclass(frozen=True)
class LinkOwner:
    """The link that received the callback: whose references it may name, and where
    inbound messages go."""

    link_id: str
    kind: str
    account_id: str
    application_id: str | None


async def first_time(conn: AsyncConnection, link_id: str, key: str, now: float) -> bool:
    """Mark a provider event of a link handled; False when it already was (the provider
    resent it)."""
    where = (seen_events.c.link_id == link_id, seen_events.c.event_key == key)
    if (await conn.execute(select(seen_events.c.event_key).where(*where))).first() is not None:
        return False
    await conn.execute(seen_events.insert().values(link_id=link_id, event_key=key, created_at=now))
    return True


async def message_for_ref(conn: AsyncConnection, link_id: str, ref: str) -> str | None:
    """The message a link sent with provider reference `ref`."""
    row = (
        await conn.execute(
            select(provider_refs.c.message_uuid).where(provider_refs.c.link_id == link_id, provider_refs.c.ref == ref)
        )
    ).first()
    return row.message_uuid if row else None


async def ingest(
    engine: AsyncEngine,
    targets: WebhookTargets,
    owner: LinkOwner,
    events: list[StatusEvent | InboundEvent],
    dedupe_keys: list[str | None] | None = None,
) -> dict[str, int]:
    """Apply events; `dedupe_keys[i]`, when given, makes event i happen at most once.

    Returns counts: statuses applied, inbound stored, unknown references, duplicates.
    """
    now = time.time()
    counts = {"statuses": 0, "inbound": 0, "unknown": 0, "duplicates": 0}
    keys = dedupe_keys or [None] * len(events)
    async with engine.begin() as conn:
        changes = []
        for event, key in zip(events, keys, strict=True):
            if key is not None and not await first_time(conn, owner.link_id, key, now):
                counts["duplicates"] += 1
                continue
            if isinstance(event, StatusEvent):
                message_uuid = await message_for_ref(conn, owner.link_id, event.provider_ref)
                if message_uuid is None:
                    counts["unknown"] += 1
                    continue
                changes.append(
                    StatusChange(
                        message_uuid, event.status, now, event.provider_ref, event.error_code, event.error_reason,
                        event.details,
                    )
                )
            else:
                await store_inbound(conn, targets, owner, event, now)
                counts["inbound"] += 1
        counts["statuses"] = len(await record_statuses(conn, targets, changes, now))
    return counts


async def store_inbound(
    conn: AsyncConnection, targets: WebhookTargets, owner: LinkOwner, event: InboundEvent, now: float
) -> dict[str, Any]:
    row = {
        "uuid": time_ordered_id(),
        "account_id": owner.account_id,
        "application_id": owner.application_id,
        "channel": event.channel,
        "message_type": event.message_type,
        "to_addr": event.to,
        "from_addr": event.sender,
        "payload": event.payload,
        "provider_ref": event.provider_ref,
        "status": "received",
        "created_at": now,
    }
    await conn.execute(inbound_messages.insert().values(**row))
    await enqueue_inbound_webhook(conn, targets, row, now)
    return row


async def record_inbound(
    engine: AsyncEngine, targets: WebhookTargets, event: InboundEvent, account_id: str, application_id: str | None
) -> dict[str, Any]:
    """Store one inbound message (the sandbox's, made on demand) and queue its webhook."""
    async with engine.begin() as conn:
        owner = LinkOwner(f"sandbox:{event.channel}", "sandbox", account_id, application_id)
        return await store_inbound(conn, targets, owner, event, time.time())

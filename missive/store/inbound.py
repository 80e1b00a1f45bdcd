"""Inbound messages: stored, then handed to the webhook outbox in the same transaction."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from missive.channels.base import InboundEvent
from missive.store.tables import inbound_messages
from missive.webhooks.outbox import WebhookTargets, enqueue_inbound_webhook


async def record_inbound(
    engine: AsyncEngine,
    targets: WebhookTargets,
    event: InboundEvent,
    account_id: str,
    application_id: str | None,
) -> dict[str, Any]:
    now = time.time()
    row = {
        "uuid": str(uuid.uuid4()),
        "account_id": account_id,
        "application_id": application_id,
        "channel": event.channel,
        "message_type": event.message_type,
        "to_addr": event.to,
        "from_addr": event.sender,
        "payload": event.payload,
        "provider_ref": event.provider_ref,
        "status": "received",
        "created_at": now,
    }
    async with engine.begin() as conn:
        await conn.execute(inbound_messages.insert().values(**row))
        await enqueue_inbound_webhook(conn, targets, row, now)
    return row

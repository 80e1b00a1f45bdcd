"""What Missive checks before calling the WhatsApp Cloud API.

    to = await prepare(engine, message, link, now)    # raises the SendError of a refusal

- the 24-hour rule: a free-form message (anything but a template) goes only to a user
  who wrote to the link within the last 24 hours (`conversation_windows`, written on
  every inbound message); otherwise it is rejected (1340) without calling Meta;
- `context.message_uuid` (a reply, or the message a reaction is for) names a message of
  ours: an outbound one the link sent, or an inbound one it received. Its wamid is put in
  the body as `context.message_id` for the channel; an unknown uuid is rejected (1020).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from missive.channels.base import ChannelLink, Rejected
from missive.channels.whatsapp import OUTSIDE_WINDOW, needs_window
from missive.store.tables import conversation_windows, inbound_messages, provider_refs

WINDOW = 24 * 3600
CLOSED = (
    "Outside of the allowed window: the user has not written to this WhatsApp number in the last 24 hours, "
    "and WhatsApp allows only template messages then; send a template (message_type template, or custom "
    "of type template) to open the conversation"
)


async def prepare(engine: AsyncEngine, message: dict[str, Any], link: ChannelLink, now: float) -> str:
    """The recipient's wa_id, after the rules; the wamid of `context.message_uuid` is
    written into `message["body"]` (a new dict)."""
    body = message["body"]
    async with engine.connect() as conn:
        if needs_window(message["message_type"], body) and not await _window_open(conn, link.id, message["to_addr"], now):
            raise Rejected(OUTSIDE_WINDOW[0], CLOSED)
        context = body.get("context")
        if isinstance(context, dict) and context.get("message_uuid"):
            wamid = await _wamid(conn, message, link, str(context["message_uuid"]))
            if wamid is None:
                raise Rejected(1020, "Invalid params: context.message_uuid names no WhatsApp message "
                                     "sent or received on this number")
            message["body"] = {**body, "context": {**context, "message_id": wamid}}
    return str(message["to_addr"])


async def _window_open(conn: AsyncConnection, link_id: str, user_id: str, now: float) -> bool:
    last = (await conn.execute(
        select(conversation_windows.c.last_inbound_at)
        .where(conversation_windows.c.link_id == link_id, conversation_windows.c.user_id == user_id)
    )).scalar()
    return last is not None and now - last < WINDOW


async def _wamid(conn: AsyncConnection, message: dict[str, Any], link: ChannelLink, uuid: str) -> str | None:
    sent = (await conn.execute(
        select(provider_refs.c.ref)
        .where(provider_refs.c.link_id == link.id, provider_refs.c.message_uuid == uuid)
        .order_by(provider_refs.c.created_at).limit(1)
    )).scalar()
    if sent is not None:
        return str(sent)
    received = (await conn.execute(
        select(inbound_messages.c.provider_ref)
        .where(inbound_messages.c.uuid == uuid, inbound_messages.c.account_id == message["account_id"],
               inbound_messages.c.channel == "whatsapp")
    )).scalar()
    return str(received) if received else None

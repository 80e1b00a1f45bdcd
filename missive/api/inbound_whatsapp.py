"""Meta's WhatsApp webhook for every linked phone number, and marking WhatsApp messages read.

    GET   /inbound/whatsapp?hub.mode=subscribe&hub.verify_token=V&hub.challenge=C  -> C
    POST  /inbound/whatsapp   (X-Hub-Signature-256)  -> 200, events routed by phone-number id
    PATCH /v1/messages/{uuid} {"status": "read"}     -> Meta's read receipt (inbound_messenger.py
                                                       dispatches WhatsApp messages here)

One URL serves the deployment. Each change names its business phone number
(`value.metadata.phone_number_id`); its events go to the link of that number whose app
secret signed the body (two accounts may link the same number id: only the one holding
the real app secret gets them). A POST naming linked numbers none of whose links verify
is refused whole (401, nothing stored).

Inbound media are fetched here, before the answer, within `media_fetch_timeout` (10 s by
default): the webhook then carries a URL that works at once, and nothing new has to be
made durable — a crash before the answer leaves Meta to send the callback again. Media
that cannot be kept (too large, Meta unreachable, too slow) leave the webhook without a
`url` and with `provider_message` saying why.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from missive.api import meta_webhooks
from missive.api.errors import invalid_json, provider_error
from missive.api.meta_webhooks import Links, links_by
from missive.api.services import Services, services
from missive.channels.base import InboundEvent, SendError, StatusEvent
from missive.channels.whatsapp_callbacks import Inbound, parse_webhook, phone_number_ids
from missive.channels.whatsapp_media import CloudApi, Fetched, MediaUnavailable
from missive.dispatch.callbacks import LinkOwner, first_time, ingest, store_inbound
from missive.store.media import add_media, link_signature, note_inbound
from missive.store.tables import accounts, messages, provider_refs, seen_events

log = logging.getLogger("missive.whatsapp")
KIND = "whatsapp"


async def phone_links(engine: AsyncEngine, account_id: str | None = None) -> Links:
    """WhatsApp links by phone-number id (several accounts may link one id)."""
    return await links_by(engine, KIND, "phone_number_id", account_id)


async def handshake(request: Request) -> Response:
    return meta_webhooks.handshake(request, await phone_links(services(request).engine), "WhatsApp")


async def receive(request: Request) -> Response:
    svc = services(request)
    # Only the phone-number ids are read before the signature is checked.
    body, verified = await meta_webhooks.signed_body(
        request, svc.settings.max_body_bytes, phone_number_ids, lambda: phone_links(svc.engine), "WhatsApp")
    if not verified:
        return PlainTextResponse("EVENT_RECEIVED")
    numbers = {phone: str(row["config"].get("phone_number") or "") for phone, row in verified.items()}
    try:
        by_phone = parse_webhook(body, numbers)
    except ValueError:
        raise invalid_json("Not a WhatsApp webhook body.") from None
    base = (svc.settings.public_url or str(request.base_url)).rstrip("/")
    for phone, row in verified.items():
        items = by_phone.get(phone, [])
        owner = LinkOwner(row["id"], KIND, row["account_id"], row["application_id"])
        statuses = [(event, key) for event, key in items if isinstance(event, StatusEvent)]
        if statuses:
            counts = await ingest(svc.engine, svc.targets, owner, [e for e, _ in statuses], [k for _, k in statuses])
            log.info("whatsapp number %s (link %s): %s", phone, row["id"], counts)
        inbound = [(event, key) for event, key in items if isinstance(event, Inbound)]
        if inbound:
            stored = await _receive_messages(svc, base, row, owner, inbound)
            log.info("whatsapp number %s (link %s): %d inbound", phone, row["id"], stored)
    svc.webhooks_stored()
    return PlainTextResponse("EVENT_RECEIVED")


async def _unseen(engine: AsyncEngine, link_id: str, keys: list[str]) -> set[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(seen_events.c.event_key).where(seen_events.c.link_id == link_id, seen_events.c.event_key.in_(keys)))
        return set(keys) - {r.event_key for r in rows}


async def _quoted(engine: AsyncEngine, link_id: str, wamids: list[str]) -> dict[str, dict[str, str]]:
    """The messages this link sent with these wamids: the `context` of a reply to one."""
    if not wamids:
        return {}
    query = (
        select(provider_refs.c.ref, messages.c.uuid, messages.c.from_addr)
        .join(messages, messages.c.uuid == provider_refs.c.message_uuid)
        .where(provider_refs.c.link_id == link_id, provider_refs.c.ref.in_(wamids))
    )
    async with engine.connect() as conn:
        return {r.ref: {"message_uuid": r.uuid, "message_from": r.from_addr} for r in await conn.execute(query)}


async def _fetch(api: CloudApi, item: Inbound, config: dict[str, Any]) -> Fetched | str | None:
    """The media's bytes, or why they could not be kept; None without media."""
    if item.media is None:
        return None
    try:
        return await api.fetch_media(item.media.id, config, item.media.mime_type)
    except MediaUnavailable as exc:
        return exc.reason


async def _receive_messages(svc: Services, base: str, row: dict[str, Any], owner: LinkOwner, items: list[tuple[Inbound, str]]) -> int:
    engine, now = svc.engine, time.time()
    fresh = await _unseen(engine, row["id"], [key for _, key in items])
    items = [(item, key) for item, key in items if key in fresh]
    if not items:
        return 0
    api = CloudApi(svc.settings)
    try:
        fetched = await asyncio.gather(*(_fetch(api, item, row["config"]) for item, _ in items))
    finally:
        await api.close()
    quoted = await _quoted(engine, row["id"], [item.quoted for item, _ in items if item.quoted])
    expires = now + svc.settings.media_retention_days * 86400
    stored = 0
    async with engine.begin() as conn:
        secret = (await conn.execute(select(accounts.c.signature_secret).where(accounts.c.id == owner.account_id))).scalar_one()
        for (item, key), got in zip(items, fetched, strict=True):
            if not await first_time(conn, row["id"], key, now):
                continue
            payload = dict(item.event.payload)
            media_id = str(uuid.uuid4()) if isinstance(got, Fetched) else None
            if item.media is not None:
                kind = item.event.message_type
                if media_id is not None:
                    stamp = int(expires)
                    url = f"{base}/v1/media/{media_id}?expires={stamp}&signature={link_signature(secret, media_id, stamp)}"
                    payload[kind] = {"url": url, **payload[kind]}
                else:
                    payload["provider_message"] = f"The media was not kept: {got}"
            context = quoted.get(item.quoted or "")
            if context is not None:
                payload["context"] = context
            payload["context_status"] = "available" if context else "unavailable" if item.quoted else "none"
            event = InboundEvent(item.event.channel, item.event.to, item.event.sender, item.event.message_type, payload, item.event.provider_ref)
            inbound = await store_inbound(conn, svc.targets, owner, event, now)
            if isinstance(got, Fetched) and media_id is not None:
                await add_media(conn, {
                    "id": media_id, "account_id": owner.account_id, "link_id": row["id"], "inbound_uuid": inbound["uuid"],
                    "content_type": got.content_type, "size": len(got.content), "content": got.content,
                    "created_at": now, "expires_at": expires,
                })
            # Meta's own time of the message, never later than now: the 24-hour rule counts from it.
            await note_inbound(conn, row["id"], item.event.sender, min(item.sent_at or now, now))
            stored += 1
    return stored


# -- PATCH /v1/messages/{uuid} on a WhatsApp message ----------------------------------------


async def mark_read(svc: Services, account_id: str, row: dict[str, Any], typing: bool) -> None:
    """Meta's read receipt (and typing indicator) for an inbound message, through the
    account's link that received it (the one that recorded its wamid)."""
    wamid = row["provider_ref"]
    links = [r for rows in (await phone_links(svc.engine, account_id)).values() for r in rows]
    if not wamid or not links:
        return
    async with svc.engine.connect() as conn:
        found = (await conn.execute(select(seen_events.c.link_id).where(
            seen_events.c.event_key == f"msg:{wamid}", seen_events.c.link_id.in_([r["id"] for r in links])))).first()
    link = next((r for r in links if found is not None and r["id"] == found.link_id), None)
    if link is None:
        return
    api = CloudApi(svc.settings)
    try:
        await api.mark_read(link["config"], wamid, typing)
    except SendError as error:
        raise provider_error(f"WhatsApp refused the read receipt: {error.reason}", error.retryable) from None
    finally:
        await api.close()


routes = [
    Route("/inbound/whatsapp", handshake, methods=["GET"]),
    Route("/inbound/whatsapp", receive, methods=["POST"]),
]

"""Facebook's webhook for every linked page, and marking inbound Messenger messages read.

    GET   /inbound/messenger?hub.mode=subscribe&hub.verify_token=V&hub.challenge=C  -> C
    POST  /inbound/messenger   (X-Hub-Signature-256)  -> 200, events routed by entry.id
    PATCH /v1/messages/{uuid}  {"status": "read"}     -> the page's `mark_seen`

One URL serves the deployment: a Facebook app subscribes once for all its pages, and
each entry names its page. Each page's events go to the link of that page whose app
secret signed the body (two accounts may link the same page id; only the one holding
the real app secret gets its callbacks). A POST is refused whole (401, nothing stored)
when the pages it names are linked and no link's secret signed it.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from missive.api import inbound_whatsapp, meta_webhooks
from missive.api.body import read_json
from missive.api.errors import (
    InvalidParameter,
    invalid_json,
    invalid_params,
    not_found,
    provider_error,
)
from missive.api.meta_webhooks import Links, links_by
from missive.api.responses import json_response
from missive.api.services import services
from missive.channels.base import ChannelLink, InboundEvent, SendError, StatusEvent
from missive.channels.messenger import (
    MessengerChannel,
    Watermark,
    entry_pages,
    parse_webhook,
    refs_before_watermark,
)
from missive.dispatch.callbacks import LinkOwner, ingest
from missive.store.tables import inbound_messages
from missive.store.tables import messages as messages_table

log = logging.getLogger("missive.messenger")
KIND = MessengerChannel.kind


async def page_links(engine: AsyncEngine, account_id: str | None = None) -> Links:
    """Messenger links by page id. A page id may be linked by several accounts: which of
    them a callback belongs to is settled by its signature, never by who linked first."""
    return await links_by(engine, KIND, "page_id", account_id)


async def handshake(request: Request) -> Response:
    return meta_webhooks.handshake(request, await page_links(services(request).engine), "Messenger")


async def _resolve(engine: AsyncEngine, link_id: str, parsed: list) -> tuple[list, list]:
    """Watermarks turned into one status event per message of the link they cover."""
    events: list[StatusEvent | InboundEvent] = []
    keys: list[str | None] = []
    async with engine.connect() as conn:
        for event, key in parsed:
            if isinstance(event, Watermark):
                for ref in await refs_before_watermark(conn, link_id, event):
                    events.append(StatusEvent(ref, event.status))
                    keys.append(None)
            else:
                events.append(event)
                keys.append(key)
    return events, keys


async def receive(request: Request) -> Response:
    svc = services(request)
    # Only the page ids are read before the signature is checked; the events only of
    # a body a link's secret signed.
    body, verified = await meta_webhooks.signed_body(
        request, svc.settings.max_body_bytes, entry_pages, lambda: page_links(svc.engine), "Messenger")
    if not verified:
        return PlainTextResponse("EVENT_RECEIVED")
    try:
        by_page = parse_webhook(body)
    except ValueError:
        raise invalid_json("Not a Messenger webhook body.") from None
    for page, row in verified.items():
        events, keys = await _resolve(svc.engine, row["id"], by_page.get(page, []))
        if events:
            owner = LinkOwner(row["id"], KIND, row["account_id"], row["application_id"])
            counts = await ingest(svc.engine, svc.targets, owner, events, keys)
            log.info("messenger page %s (link %s): %s", page, row["id"], counts)
    svc.webhooks_stored()
    return PlainTextResponse("EVENT_RECEIVED")


# -- PATCH /v1/messages/{uuid} -------------------------------------------------------------


async def _inbound_row(engine: AsyncEngine, account_id: str, application_id: str | None, message_uuid: str) -> dict | None:
    query = select(inbound_messages).where(inbound_messages.c.uuid == message_uuid, inbound_messages.c.account_id == account_id)
    if application_id is not None:
        query = query.where(inbound_messages.c.application_id == application_id)
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
        if row is None:
            outbound = (
                await conn.execute(select(messages_table.c.uuid).where(messages_table.c.uuid == message_uuid, messages_table.c.account_id == account_id))
            ).first()
            if outbound is not None:
                raise invalid_params([InvalidParameter("status", "only inbound messages can be marked read")])
    return dict(row._mapping) if row else None


async def mark_read(request: Request) -> Response:
    svc = services(request)
    principal = await svc.auth.authenticate(request)
    message_uuid = request.path_params["message_uuid"]
    data = await read_json(request, svc.settings.max_body_bytes)
    if not isinstance(data, dict) or data.get("status") != "read" or not set(data) <= {"status", "replying_indicator"}:
        raise invalid_params([InvalidParameter("status", "must be \"read\"")])
    typing = _replying_indicator(data.get("replying_indicator", False))
    row = await _inbound_row(svc.engine, principal.account_id, principal.application_id, message_uuid)
    if row is None:
        raise not_found("Message", message_uuid)
    if row["channel"] == "whatsapp":
        await inbound_whatsapp.mark_read(svc, principal.account_id, row, typing)
    elif row["channel"] != "messenger":
        raise invalid_params([InvalidParameter("status", f"the {row['channel']} channel cannot mark messages read")])
    link_row = next(iter((await page_links(svc.engine, principal.account_id)).get(row["to_addr"], [])), None)
    if row["channel"] == "messenger" and link_row is not None:
        await _mark_seen(svc.settings, row["from_addr"], link_row, typing)
    async with svc.engine.begin() as conn:
        await conn.execute(update(inbound_messages).where(inbound_messages.c.uuid == message_uuid).values(status="read"))
    return json_response({"message_uuid": message_uuid, "status": "read"})


def _replying_indicator(value: Any) -> bool:
    """`replying_indicator`: the SDKs' `{"show": true, "type": "text"}`, or a bare boolean."""
    if isinstance(value, bool):
        return value
    if isinstance(value, dict) and isinstance(value.get("show"), bool) and value.get("type", "text") == "text" and set(value) <= {"show", "type"}:
        return bool(value["show"])
    raise invalid_params([InvalidParameter("replying_indicator", "must be {\"show\": true|false, \"type\": \"text\"} or a boolean")])


async def _mark_seen(settings: Any, user: str, link_row: dict[str, Any], typing: bool) -> None:
    """`mark_seen`, then (with `replying_indicator`) `typing_on`: Facebook takes one sender
    action a request, and shows them in that order."""
    link = ChannelLink(link_row["id"], KIND, link_row["channel"], dict(link_row["config"]), link_row["tps"])
    channel = MessengerChannel(settings)
    action = "mark_seen"
    try:
        await channel.mark_seen(user, link)
        if typing:
            action = "typing_on"
            await channel.typing_on(user, link)
    except SendError as error:
        raise provider_error(f"Facebook refused {action}: {error.reason}", error.retryable) from None
    finally:
        await channel.close()


routes = [
    Route("/inbound/messenger", handshake, methods=["GET"]),
    Route("/inbound/messenger", receive, methods=["POST"]),
    Route("/v1/messages/{message_uuid}", mark_read, methods=["PATCH"]),
]

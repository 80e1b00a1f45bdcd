"""Facebook's webhook for every linked page, and marking inbound Messenger messages read.

    GET   /inbound/messenger?hub.mode=subscribe&hub.verify_token=V&hub.challenge=C  -> C
    POST  /inbound/messenger   (X-Hub-Signature-256)  -> 200, events routed by entry.id
    PATCH /v1/messages/{uuid}  {"status": "read"}     -> the page's `mark_seen`

One URL serves the deployment: a Facebook app subscribes once for all its pages, and
each entry names its page. A POST is refused whole (401, nothing stored) when its
signature does not match the app secret of every linked page it carries.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

import orjson
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from missive.api.body import read_body, read_json
from missive.api.errors import (
    ERRORS,
    InvalidParameter,
    ProblemError,
    invalid_json,
    invalid_params,
    not_found,
    unauthorized,
)
from missive.api.responses import json_response
from missive.api.services import services
from missive.channels.base import ChannelLink, InboundEvent, SendError, StatusEvent
from missive.channels.messenger import (
    MessengerChannel,
    Watermark,
    entry_pages,
    parse_webhook,
    refs_before_watermark,
    signature_ok,
)
from missive.dispatch.callbacks import LinkOwner, ingest
from missive.store.links import links_of_kinds
from missive.store.tables import inbound_messages
from missive.store.tables import messages as messages_table

log = logging.getLogger("missive.messenger")
KIND = MessengerChannel.kind


async def page_links(engine: AsyncEngine, account_id: str | None = None) -> dict[str, dict[str, Any]]:
    """Messenger links by page id; the oldest wins when a page was linked twice."""
    rows = await links_of_kinds(engine, [KIND], account_id)
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        page = (row["config"] or {}).get("page_id")
        if isinstance(page, str):
            found.setdefault(page, row)
    return found


async def handshake(request: Request) -> Response:
    params = request.query_params
    token, challenge = params.get("hub.verify_token", ""), params.get("hub.challenge", "")
    if params.get("hub.mode") == "subscribe" and token:
        links = await page_links(services(request).engine)
        # Every token is compared, so the answer time does not tell which one nearly matched.
        matches = [hmac.compare_digest(token.encode(), str(r["config"].get("verify_token", "")).encode()) for r in links.values()]
        if any(matches):
            return PlainTextResponse(challenge)
    raise ProblemError(403, f"{ERRORS}#forbidden", "Forbidden", "The verify token matches no Messenger link.")




async def _resolve(engine: AsyncEngine, account_id: str, parsed: list) -> tuple[list, list]:
    """Watermarks turned into one status event per message they cover."""
    events: list[StatusEvent | InboundEvent] = []
    keys: list[str | None] = []
    async with engine.connect() as conn:
        for event, key in parsed:
            if isinstance(event, Watermark):
                for ref in await refs_before_watermark(conn, account_id, event):
                    events.append(StatusEvent(ref, event.status))
                    keys.append(None)
            else:
                events.append(event)
                keys.append(key)
    return events, keys


async def receive(request: Request) -> Response:
    svc = services(request)
    raw = await read_body(request, svc.settings.max_body_bytes)
    signature = request.headers.get("x-hub-signature-256")
    if not signature:
        raise unauthorized()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid_json("Malformed JSON") from None
    links = await page_links(svc.engine)
    linked = {page: links[page] for page in entry_pages(body) if page in links}
    for row in linked.values():
        if not signature_ok(raw, signature, str(row["config"].get("app_secret", ""))):
            raise unauthorized()
    by_page = parse_webhook(body)
    for page, row in linked.items():
        events, keys = await _resolve(svc.engine, row["account_id"], by_page.get(page, []))
        if events:
            counts = await ingest(svc.engine, svc.targets, LinkOwner(KIND, row["account_id"], row["application_id"]), events, keys)
            log.info("messenger page %s: %s", page, counts)
    if linked and svc.dispatcher is not None:
        svc.dispatcher.webhooks.wake.set()
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
    if not isinstance(data, dict) or data.get("status") != "read" or set(data) != {"status"}:
        raise invalid_params([InvalidParameter("status", "must be \"read\"")])
    row = await _inbound_row(svc.engine, principal.account_id, principal.application_id, message_uuid)
    if row is None:
        raise not_found("Message", message_uuid)
    if row["channel"] != "messenger":
        raise invalid_params([InvalidParameter("status", f"the {row['channel']} channel cannot mark messages read")])
    link_row = (await page_links(svc.engine, principal.account_id)).get(row["to_addr"])
    if link_row is not None:
        await _mark_seen(svc.settings, row["from_addr"], link_row)
    async with svc.engine.begin() as conn:
        await conn.execute(update(inbound_messages).where(inbound_messages.c.uuid == message_uuid).values(status="read"))
    return json_response({"message_uuid": message_uuid, "status": "read"})


async def _mark_seen(settings: Any, user: str, link_row: dict[str, Any]) -> None:
    link = ChannelLink(link_row["id"], KIND, link_row["channel"], dict(link_row["config"]), link_row["tps"])
    channel = MessengerChannel(settings)
    try:
        await channel.mark_seen(user, link)
    except SendError as error:
        status = 503 if error.retryable else 502
        raise ProblemError(
            status, f"{ERRORS}#provider-error", "Provider error", f"Facebook refused mark_seen: {error.reason}",
            headers={"Retry-After": "5"} if error.retryable else {},
        ) from None
    finally:
        await channel.close()


routes = [
    Route("/inbound/messenger", handshake, methods=["GET"]),
    Route("/inbound/messenger", receive, methods=["POST"]),
    Route("/v1/messages/{message_uuid}", mark_read, methods=["PATCH"]),
]

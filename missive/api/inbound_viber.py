"""`POST /inbound/viber/{service_id}`: Viber's callbacks for one service.

Registered with Viber by `missive channel add viber` (set_webhook). Each request is
verified with X-Viber-Content-Signature against the auth token of the link for that
service (bad or missing: 401, nothing stored); receipts and inbound messages go through
`ingest` once each (keyed by event and message token); subscriptions and shared phone
numbers are recorded for the dispatcher's Viber rules.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from missive.api.body import read_body
from missive.api.errors import invalid_json, not_found, unauthorized
from missive.api.responses import json_response
from missive.api.services import services
from missive.channels.base import ChannelLink, StatusEvent
from missive.channels.viber import BadSignature, Callback, ViberChannel, parse_callback
from missive.config import Settings
from missive.dispatch import viber_rules
from missive.dispatch.callbacks import LinkOwner, ingest
from missive.store.links import links_of_kinds

log = logging.getLogger("missive.inbound.viber")
KIND = ViberChannel.kind


async def links_for_service(engine: AsyncEngine, service_id: str) -> list[dict[str, Any]]:
    return [row for row in await links_of_kinds(engine, [KIND]) if row["config"].get("service_id") == service_id]




def _verified(rows: list[dict[str, Any]], body: bytes, header: str | None) -> tuple[dict[str, Any], Callback]:
    """The link whose auth token signed the body, with the parsed callback."""
    for row in rows:
        link = ChannelLink(row["id"], row["kind"], row["channel"], row["config"], row["tps"])
        try:
            return row, parse_callback(body, header, link)
        except BadSignature:
            continue
        except (ValueError, orjson.JSONDecodeError):
            raise invalid_json("Not a Viber callback.") from None
    raise unauthorized()


async def callback(request: Request) -> Response:
    svc = services(request)
    service_id = request.path_params["service_id"]
    rows = await links_for_service(svc.engine, service_id)
    if not rows:
        raise not_found("Viber service", service_id)
    body = await read_body(request, svc.settings.max_body_bytes)
    row, parsed = _verified(rows, body, request.headers.get("x-viber-content-signature"))
    now = time.time()
    if parsed.users:
        await _learn(svc.engine, row["id"], parsed, now)
    if parsed.events:
        owner = LinkOwner(row["id"], KIND, row["account_id"], row["application_id"])
        counts = await ingest(svc.engine, svc.targets, owner, parsed.events, parsed.keys)
        await _learn_receipts(svc.engine, row["id"], parsed)
        log.info("viber callback for link %s: %s", row["id"], counts)
        svc.webhooks_stored()
    return json_response({"status": 0, "status_message": "ok"})


async def _learn(engine: AsyncEngine, link_id: str, parsed: Callback, now: float) -> None:
    for attempt in (1, 2):
        try:
            async with engine.begin() as conn:
                await viber_rules.learn(conn, link_id, parsed.users, now)
            return
        except IntegrityError:
            # Two callbacks created the same user at once: the second try updates it.
            if attempt == 2:
                raise


async def _learn_receipts(engine: AsyncEngine, link_id: str, parsed: Callback) -> None:
    user_id = parsed.receipt_user
    receipts = [e for e in parsed.events if isinstance(e, StatusEvent) and e.status in ("delivered", "read")]
    if not receipts or not isinstance(user_id, str):
        return
    try:
        async with engine.begin() as conn:
            for event in receipts:
                await viber_rules.learn_receipt(conn, link_id, event.provider_ref, user_id, time.time())
    except IntegrityError:
        pass  # created concurrently; the next receipt records it


routes = [Route("/inbound/viber/{service_id}", callback, methods=["POST"])]


def webhook_url(public_url: str, service_id: str) -> str:
    return f"{public_url.rstrip('/')}/inbound/viber/{service_id}"


async def register_webhook(settings: Settings, row: dict[str, Any]) -> str:
    """Tell Viber where this service's callbacks go (`missive channel add viber`)."""
    if not settings.public_url:
        raise ValueError("no public URL configured (MISSIVE_PUBLIC_URL)")
    url = webhook_url(settings.public_url, row["config"]["service_id"])
    channel = ViberChannel(settings)
    try:
        await channel.set_webhook(ChannelLink(row["id"], row["kind"], row["channel"], row["config"], row["tps"]), url)
    finally:
        await channel.close()
    return url

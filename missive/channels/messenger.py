"""Facebook Messenger through the Graph Send API, and its webhook events.

Out: POST {graph}/{version}/me/messages?access_token=PAGE_TOKEN

    {"recipient": {"id": "PSID"}, "messaging_type": "MESSAGE_TAG", "tag": "TICKET_UPDATE",
     "message": {"text": "Nexmo"}}
    -> {"recipient_id": "PSID", "message_id": "m_AG5Hz2U..."}
    -> {"error": {"message": "...", "type": "OAuthException", "code": 190,
                  "error_subcode": 463, "fbtrace_id": "..."}}

In: a POST to /inbound/messenger, signed `X-Hub-Signature-256: sha256=<hex>`

    {"object": "page", "entry": [{"id": "PAGE_ID", "time": 1458692752478, "messaging": [
        {"sender": {"id": "PSID"}, "recipient": {"id": "PAGE_ID"}, "timestamp": 1458692752478,
         "message": {"mid": "m_...", "text": "hello"}},
        {"sender": ..., "delivery": {"mids": ["m_..."], "watermark": 1458668856253}},
        {"sender": ..., "read": {"watermark": 1458668856253}}]}]}

This module never touches storage: a `read` watermark comes out as a `Watermark` that
the caller resolves into the messages it covers (`refs_before_watermark`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
)
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from missive.channels import graph_post
from missive.channels.base import (
    ChannelLink,
    InboundEvent,
    Misconfigured,
    OutboundMessage,
    Rejected,
    SendError,
    SendResult,
    StatusEvent,
    Throttled,
    Unavailable,
    Undeliverable,
)
from missive.channels.callback_models import Id, Loose, M, Ref, validated
from missive.config import Settings
from missive.observability.exchanges import recorded_client
from missive.store.tables import messages, provider_refs

# httpx logs every request URL at INFO, and the page token travels in the query string.
logging.getLogger("httpx").setLevel(logging.WARNING)

CATEGORIES = {"response": "RESPONSE", "update": "UPDATE", "message_tag": "MESSAGE_TAG"}
ATTACHMENTS = ("image", "audio", "video", "file")
MAX_TEXT = 640

# Graph error codes and subcodes, and what each means for a send.
THROTTLE_CODES = frozenset({4, 17, 32, 613})
TOKEN_CODES = frozenset({190})
UNAVAILABLE_USER_CODES = frozenset({551})
# "This message is sent outside of allowed window" and its variants.
WINDOW_SUBCODES = frozenset({2018278, 2018065, 2018108, 2534022})
NO_SUCH_USER_SUBCODES = frozenset({2018001})
TRANSIENT_CODES = frozenset({1, 2})


class MessengerConfig(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    page_id: str = Field(min_length=1, max_length=50)
    page_token: str = Field(min_length=1, max_length=1000)
    app_secret: str = Field(min_length=1, max_length=200)
    verify_token: str = Field(min_length=1, max_length=200)


def graph_error(status: int, body: Any) -> SendError:
    """The send error for a Graph error answer (HTTP status and parsed body)."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code, subcode = error.get("code"), error.get("error_subcode")
    message = str(error.get("message") or f"Graph API answered {status}")[:300]
    if code in THROTTLE_CODES or status == 429:
        return Throttled(reason=message)
    if code in TOKEN_CODES:
        return Rejected(1370, f"Expired access token: {message}")
    if code in UNAVAILABLE_USER_CODES or subcode in NO_SUCH_USER_SUBCODES:
        return Undeliverable(1300, f"User unavailable: {message}")
    if subcode in WINDOW_SUBCODES:
        return Rejected(1340, f"Outside of the allowed window: {message}")
    if status >= 500 or code in TRANSIENT_CODES or error.get("is_transient") is True:
        return Unavailable(message)
    return Rejected(1020, f"Invalid params: {message}")


def request_body(message: OutboundMessage) -> dict[str, Any]:
    """The Send API body for one message (the recipient, its category and its content)."""
    options = message.body.get("messenger") or {}
    category = options.get("category") or "response"
    if category not in CATEGORIES:
        raise Rejected(1020, f"Invalid params: unknown messenger category {category!r}")
    body: dict[str, Any] = {"recipient": {"id": message.to}, "messaging_type": CATEGORIES[category]}
    if category == "message_tag":
        if not options.get("tag"):
            raise Rejected(1021, "Invalid tag: a tag is required with message_tag")
        # Facebook's tags are upper-case names; the seed's example writes `ticket_update`.
        body["tag"] = str(options["tag"]).upper()
    if message.message_type == "text":
        text = message.text or ""
        if not text or len(text) > MAX_TEXT:
            raise Rejected(1020, f"Invalid params: Messenger text must be 1 to {MAX_TEXT} characters")
        body["message"] = {"text": text}
    elif message.message_type in ATTACHMENTS:
        media = message.body.get(message.message_type) or {}
        if not media.get("url"):
            raise Rejected(1020, f"Invalid params: {message.message_type}.url is required")
        body["message"] = {
            "attachment": {"type": message.message_type, "payload": {"url": media["url"], "is_reusable": False}}
        }
    else:
        raise Rejected(1440, f"Invalid message type: {message.message_type} is not sent on Messenger")
    return body


class MessengerChannel:
    kind: ClassVar[str] = "messenger"
    carries: ClassVar[tuple[str, ...]] = ("messenger",)
    secrets: ClassVar[tuple[str, ...]] = ("page_token", "app_secret")
    Config: ClassVar[type[BaseModel]] = MessengerConfig

    def __init__(self, settings: Settings | None = None) -> None:
        settings = settings or Settings()
        self._url = f"{settings.graph_api_url.rstrip('/')}/{settings.graph_api_version}/me/messages"
        self._client = recorded_client(timeout=settings.provider_timeout)
        # httpx's timeout bounds each step (connect, each read); this bounds the whole call,
        # so a Graph API that dribbles its answer cannot hold a send past it either.
        self._deadline = settings.provider_timeout

    async def send(self, message: OutboundMessage, link: ChannelLink) -> SendResult:
        answer = await self._post(request_body(message), link)
        ref = answer.get("message_id")
        if not isinstance(ref, str) or not ref:
            raise Unavailable("Graph API answered without a message_id")
        return SendResult(provider_ref=ref)

    async def mark_seen(self, user_id: str, link: ChannelLink) -> None:
        """Show the user their message was read (the page's `mark_seen` sender action)."""
        await self._post({"recipient": {"id": user_id}, "sender_action": "mark_seen"}, link)

    async def typing_on(self, user_id: str, link: ChannelLink) -> None:
        """Show the user a reply is being typed (the `typing_on` sender action: Messenger
        clears it after 20 seconds, or when the page's next message arrives)."""
        await self._post({"recipient": {"id": user_id}, "sender_action": "typing_on"}, link)

    async def _post(self, body: dict[str, Any], link: ChannelLink) -> dict[str, Any]:
        token = link.config.get("page_token")
        if not isinstance(token, str) or not token:
            raise Misconfigured("the Messenger link has no page_token")
        return await graph_post.post(self._client, self._url, self._deadline, "Graph API", graph_error,
                                     params={"access_token": token}, json=body)

    async def close(self) -> None:
        await self._client.aclose()


# -- inbound ------------------------------------------------------------------------------


def signature_ok(raw_body: bytes, header: str | None, app_secret: str) -> bool:
    """`X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`, compared in constant time."""
    if not app_secret or not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(app_secret.encode(), raw_body, hashlib.sha256).hexdigest().encode()
    # Bytes: compare_digest refuses non-ASCII str, and a header may carry any latin-1.
    return hmac.compare_digest(expected, header[len("sha256="):].strip().lower().encode("utf-8", "replace"))


@dataclass(frozen=True)
class Watermark:
    """`read`: every message sent to `user` from `page` before `at` (epoch seconds) was read."""

    page: str
    user: str
    at: float
    status: str = "read"


Parsed = InboundEvent | StatusEvent | Watermark


class MalformedWebhook(ValueError):
    """A webhook body that is not Facebook's shape: a field of the wrong type, or an id
    no page, user or message could have. The whole POST is refused (400)."""


class Sender(Loose):
    id: Id | None = None  # an opt-in from the checkbox plugin names a `user_ref` instead


class Attachment(Loose):
    type: str
    payload: Any = None  # its shape depends on the type (a link share's `fallback` may be null)
    title: str | None = None


class Message(Loose):
    mid: Ref | None = None
    text: str | None = None
    is_echo: bool = False
    attachments: list[Attachment] = []


class Delivery(Loose):
    mids: list[Ref] = []
    watermark: float | None = None


class Read(Loose):
    watermark: float | None = None


class Messaging(Loose):
    sender: Sender | None = None
    message: Message | None = None
    delivery: Delivery | None = None
    read: Read | None = None


class Entry(Loose):
    id: Id


class Envelope(Loose):
    """Every Graph webhook, whatever its object (a page, an Instagram account, a user)."""

    object: str
    entry: list[Entry]


class PageEntry(Entry):
    messaging: list[Messaging] = []


class PageWebhook(Envelope):
    entry: list[PageEntry]  # type: ignore[assignment]


def _validated(model: type[M], body: Any) -> M:
    return validated(model, body, MalformedWebhook, "Facebook webhook")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _attachment(attachment: Attachment) -> tuple[str, dict[str, Any]] | None:
    """An attachment's message type and contract payload; None when it has no such shape."""
    kind, payload = attachment.type, attachment.payload
    if not isinstance(payload, dict):
        return None
    if kind in ATTACHMENTS and isinstance(payload.get("url"), str):
        return kind, {kind: {"url": payload["url"]}}
    coordinates = payload.get("coordinates")
    if kind == "location" and isinstance(coordinates, dict):
        lat, long = coordinates.get("lat"), coordinates.get("long")
        if _number(lat) and _number(long):
            location: dict[str, Any] = {"lat": lat, "long": long}
            if attachment.title is not None:
                location["name"] = attachment.title
            return "location", {"location": location}
    return None


def _inbound(page: str, user: str, message: Message) -> list[InboundEvent]:
    """Each usable attachment is one inbound message; else the text; else `unsupported`
    (a link share arrives as text plus a `fallback` attachment: the text is kept)."""
    found = [a for a in map(_attachment, message.attachments) if a is not None]
    events = [InboundEvent("messenger", page, user, kind, payload, message.mid) for kind, payload in found]
    if not events and message.text:
        events.append(InboundEvent("messenger", page, user, "text", {"text": message.text}, message.mid))
    if not events:
        events.append(InboundEvent("messenger", page, user, "unsupported", {}, message.mid))
    return events


def parse_messaging(page: str, item: Messaging) -> list[tuple[Parsed, str | None]]:
    """One `messaging` item as events, each with its dedupe key (None: no key)."""
    user = item.sender.id if item.sender is not None else None
    if user is None:
        return []
    if item.message is not None:
        if item.message.is_echo:
            return []
        mid = item.message.mid
        # One mid may carry several attachments: each becomes one inbound message.
        return [(e, f"mid:{mid}:{i}" if mid else None) for i, e in enumerate(_inbound(page, user, item.message))]
    if item.delivery is not None:
        if item.delivery.mids:
            return [(StatusEvent(m, "delivered"), f"delivered:{m}") for m in item.delivery.mids]
        if item.delivery.watermark is not None:
            return [(Watermark(page, user, item.delivery.watermark / 1000, "delivered"), None)]
        return []
    if item.read is not None and item.read.watermark is not None:
        return [(Watermark(page, user, item.read.watermark / 1000), None)]
    return []


def parse_webhook(body: Any) -> dict[str, list[tuple[Parsed, str | None]]]:
    """Events of a webhook POST by page id; echoes, unknown events and other objects'
    webhooks left out. MalformedWebhook when the body is not Facebook's shape."""
    if _validated(Envelope, body).object != "page":
        return {}
    by_page: dict[str, list[tuple[Parsed, str | None]]] = {}
    for entry in _validated(PageWebhook, body).entry:
        found = by_page.setdefault(entry.id, [])
        for item in entry.messaging:
            found.extend(parse_messaging(entry.id, item))
    return by_page


def entry_pages(body: Any) -> list[str]:
    """The ids the entries name (pages, for a page webhook); MalformedWebhook when the
    body is not a Graph webhook."""
    return [entry.id for entry in _validated(Envelope, body).entry]


async def refs_before_watermark(conn: AsyncConnection, link_id: str, mark: Watermark) -> list[str]:
    """Graph message ids of the messages the link sent to `mark.user`, accepted up to the
    watermark.

    PSIDs are page-scoped, so the user alone names the page. The accept time is compared,
    not our record of the send, which comes after Facebook's own clock saw the message.
    """
    rows = await conn.execute(
        select(provider_refs.c.ref)
        .join(messages, messages.c.uuid == provider_refs.c.message_uuid)
        .where(
            provider_refs.c.link_id == link_id,
            messages.c.created_at <= mark.at,
            messages.c.channel == "messenger",
            messages.c.to_addr == mark.user,
            messages.c.status.in_(("submitted", "delivered") if mark.status == "read" else ("submitted",)),
        )
    )
    return [r.ref for r in rows]

"""WhatsApp Cloud API webhooks: Meta's callback bodies turned into Missive's events.

In: a POST to /inbound/whatsapp, signed `X-Hub-Signature-256: sha256=<hex>` with the
Meta app's secret, one entry per WhatsApp Business Account, one change per phone number:

    {"object": "whatsapp_business_account", "entry": [{"id": "WABA_ID", "changes": [
      {"field": "messages", "value": {"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": "1066..."},
        "contacts": [{"profile": {"name": "Ada"}, "wa_id": "447700900001"}],
        "messages": [{"from": "447700900001", "id": "wamid.HBg...", "timestamp": "1750857384",
                      "type": "image", "image": {"id": "MEDIA_ID", "mime_type": "image/jpeg",
                                                 "sha256": "...", "caption": "hi"}}],
        "statuses": [{"id": "wamid.HBg...", "status": "delivered", "timestamp": "1750857384",
                      "recipient_id": "447700900001",
                      "conversation": {"id": "a75d...", "origin": {"type": "service"}},
                      "pricing": {"billable": true, "pricing_model": "CBP", "category": "service"},
                      "errors": [{"code": 131026, "title": "Message undeliverable"}]}]}}]}]}

Out: `Inbound` items (an InboundEvent in the v1 inbound webhook's shape, plus what the
caller resolves with storage or the network: the media to fetch, the quoted wamid) and
StatusEvents whose `details` carry `whatsapp.conversation` into the v1 status webhook.
This module never touches storage or the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import (
    ConfigDict,
    Field,
)

from missive.channels.base import InboundEvent, StatusEvent
from missive.channels.callback_models import Id, Loose, M, Ref, validated

OBJECT = "whatsapp_business_account"

# Meta's status -> Missive's; `failed` is settled by its error code (FAILED below).
STATUSES = {"sent": "submitted", "delivered": "delivered", "read": "read"}

# A failed status's Meta error code -> (status, v1 error code), as the send side maps
# the same codes (docs/channels.md). Codes not listed are `rejected` 1330 (Unknown) with
# Meta's own title as the reason: a failed status is final, whatever its code.
WINDOW_CLOSED = 131047  # re-engagement message: more than 24 hours since the user wrote
FAILED: dict[int, tuple[str, int]] = {
    WINDOW_CLOSED: ("rejected", 1340),
    131026: ("undeliverable", 1300),  # receiver incapable: not on WhatsApp, old app, terms not accepted
    131049: ("undeliverable", 1260),  # Meta chose not to deliver (ecosystem engagement)
    130472: ("undeliverable", 1260),  # the user's number is part of an experiment
    131050: ("undeliverable", 1240),  # the user stopped marketing messages
    131000: ("undeliverable", 1331),  # something went wrong at Meta
    131014: ("rejected", 1380),  # the media URL could not be fetched
    131053: ("rejected", 1380),  # media upload error
    131051: ("rejected", 1440),  # unsupported message type
}
TEMPLATE_ERRORS = range(132000, 133000)

# Meta's media message types and the v1 inbound object each becomes.
MEDIA = {"image": "image", "audio": "audio", "video": "video", "document": "file", "sticker": "sticker"}
# Which of those carry a caption in the v1 shape.
CAPTIONED = ("image", "file")


class MalformedWhatsAppWebhook(ValueError):
    """A body that is not Meta's shape: a field of the wrong type, or an id no phone
    number, user or message could have. The whole POST is refused (400)."""


class _Loose(Loose):
    model_config = ConfigDict(populate_by_name=True)  # `from_` by name as well as by its alias


class Metadata(_Loose):
    phone_number_id: Id
    display_phone_number: str | None = None


class RoutingValue(_Loose):
    metadata: Metadata | None = None


class RoutingChange(_Loose):
    value: RoutingValue | None = None


class RoutingEntry(_Loose):
    changes: list[RoutingChange] = []


class Envelope(_Loose):
    """What is read before the signature is checked: the object and its phone-number ids."""

    object: str
    entry: list[RoutingEntry]


class Profile(_Loose):
    name: str | None = None


class Contact(_Loose):
    wa_id: Id | None = None
    profile: Profile | None = None


class Text(_Loose):
    body: str


class Media(_Loose):
    id: Id
    mime_type: str | None = None
    caption: str | None = None
    filename: str | None = None


class Location(_Loose):
    latitude: float
    longitude: float
    name: str | None = None
    address: str | None = None


class Reaction(_Loose):
    message_id: Ref | None = None
    emoji: str | None = None  # absent when the user took their reaction back


class Button(_Loose):
    payload: str | None = None
    text: str | None = None


class Reply(_Loose):
    id: str
    title: str | None = None
    description: str | None = None


class Interactive(_Loose):
    type: str
    button_reply: Reply | None = None
    list_reply: Reply | None = None


class Quoted(_Loose):
    id: Ref | None = None
    from_: str | None = Field(None, alias="from")


class Message(_Loose):
    from_: Id = Field(alias="from")
    id: Ref
    type: str
    timestamp: str | None = None
    text: Text | None = None
    image: Media | None = None
    audio: Media | None = None
    video: Media | None = None
    document: Media | None = None
    sticker: Media | None = None
    location: Location | None = None
    reaction: Reaction | None = None
    button: Button | None = None
    interactive: Interactive | None = None
    context: Quoted | None = None


class Origin(_Loose):
    type: str | None = None


class Conversation(_Loose):
    id: str | None = None
    origin: Origin | None = None


class Pricing(_Loose):
    category: str | None = None


class Error(_Loose):
    code: int | None = None
    title: str | None = None
    message: str | None = None


class Status(_Loose):
    id: Ref
    status: str
    recipient_id: str | None = None
    conversation: Conversation | None = None
    pricing: Pricing | None = None
    errors: list[Error] = []


class Value(_Loose):
    metadata: Metadata
    contacts: list[Contact] = []
    messages: list[Message] = []
    statuses: list[Status] = []


class Change(_Loose):
    field: str | None = None
    value: Value | None = None


class Entry(_Loose):
    changes: list[Change] = []


class Webhook(_Loose):
    object: str
    entry: list[Entry]


def _validated(model: type[M], body: Any) -> M:
    return validated(model, body, MalformedWhatsAppWebhook, "WhatsApp webhook")


@dataclass(frozen=True)
class Inbound:
    """An inbound message as its v1 webhook will carry it, once the caller has fetched
    `media` (its URL goes into `event.payload[kind]["url"]`) and resolved `quoted` (the
    wamid the user replied to or reacted to) into `context`."""

    event: InboundEvent
    sent_at: float | None = None
    media: Media | None = None
    quoted: str | None = None


Parsed = Inbound | StatusEvent


def phone_number_ids(body: Any) -> list[str]:
    """The phone-number ids the body's changes name; MalformedWhatsAppWebhook when the
    body is not a Cloud API webhook."""
    envelope = _validated(Envelope, body)
    return [c.value.metadata.phone_number_id for e in envelope.entry for c in e.changes
            if c.value is not None and c.value.metadata is not None]


def is_whatsapp(body: Any) -> bool:
    return _validated(Envelope, body).object == OBJECT


def failed(status: Status) -> StatusEvent:
    error = status.errors[0] if status.errors else Error()
    reason = (error.title or error.message or "WhatsApp could not deliver the message")[:300]
    if error.code in FAILED:
        result, code = FAILED[error.code]
    elif error.code in TEMPLATE_ERRORS:
        result, code = "rejected", 1022
    else:
        result, code = "rejected", 1330
    if error.code is not None:
        reason = f"{reason} (WhatsApp error {error.code})"
    return StatusEvent(status.id, result, code, reason)


def conversation_details(status: Status) -> dict[str, Any] | None:
    """The v1 status webhook's `whatsapp.conversation` ({id, origin: {type}}). Meta's
    per-message pricing reports `pricing.category` without a conversation: that category
    is the same vocabulary, so it stands for the origin type."""
    conversation = status.conversation
    kind = conversation.origin.type if conversation is not None and conversation.origin is not None else None
    kind = kind or (status.pricing.category if status.pricing is not None else None)
    found: dict[str, Any] = {}
    if conversation is not None and conversation.id:
        found["id"] = conversation.id
    if kind:
        found["origin"] = {"type": kind}
    return {"whatsapp": {"conversation": found}} if found else None


def parse_status(status: Status) -> tuple[StatusEvent, str] | None:
    if status.status == "failed":
        event = failed(status)
    elif status.status in STATUSES:
        event = StatusEvent(status.id, STATUSES[status.status])
    else:
        return None  # `deleted`, `warning`, `played`...: nothing a v1 status says
    details = conversation_details(status)
    if details:
        event = StatusEvent(event.provider_ref, event.status, event.error_code, event.error_reason, details)
    return event, f"{status.status}:{status.id}"


def _content(message: Message) -> tuple[str, dict[str, Any], Media | None, str | None]:
    """The v1 message_type, its payload, the media to fetch and the quoted wamid."""
    quoted = message.context.id if message.context is not None else None
    media = getattr(message, message.type, None) if message.type in MEDIA else None
    if isinstance(media, Media):
        kind = MEDIA[message.type]
        inner: dict[str, Any] = {}
        if kind in CAPTIONED and media.caption:
            inner["caption"] = media.caption
        return kind, {kind: inner}, media, quoted
    if message.type == "text" and message.text is not None:
        return "text", {"text": message.text.body}, None, quoted
    if message.type == "location" and message.location is not None:
        place = message.location
        location: dict[str, Any] = {"lat": place.latitude, "long": place.longitude}
        location.update({k: v for k, v in (("name", place.name), ("address", place.address)) if v})
        return "location", {"location": location}, None, quoted
    if message.type == "reaction" and message.reaction is not None:
        reaction = message.reaction
        shown = {"action": "react", "emoji": reaction.emoji} if reaction.emoji else {"action": "unreact"}
        return "reaction", {"reaction": shown}, None, reaction.message_id or quoted
    if message.type == "button" and message.button is not None:
        button = {k: v for k, v in (("payload", message.button.payload), ("text", message.button.text)) if v is not None}
        return "button", {"button": button}, None, quoted
    if message.type == "interactive" and message.interactive is not None:
        chosen = message.interactive.button_reply or message.interactive.list_reply
        if chosen is not None:
            reply = {k: v for k, v in (("id", chosen.id), ("title", chosen.title), ("description", chosen.description)) if v}
            return "reply", {"reply": reply}, None, quoted
    # contacts, orders, system messages, `unsupported` itself: the v1 webhook has no shape
    # for them.
    return "unsupported", {}, None, quoted


def _seconds(value: str | None) -> float | None:
    return float(value) if value is not None and value.isascii() and value.isdigit() else None


def parse_message(business: str, message: Message, names: dict[str, str]) -> tuple[Inbound, str]:
    kind, payload, media, quoted = _content(message)
    name = names.get(message.from_)
    if name:
        payload["profile"] = {"name": name}
    event = InboundEvent("whatsapp", business, message.from_, kind, payload, message.id)
    return Inbound(event, _seconds(message.timestamp), media, quoted), f"msg:{message.id}"


def parse_webhook(body: Any, business_numbers: dict[str, str] | None = None) -> dict[str, list[tuple[Parsed, str]]]:
    """Events of a webhook POST by phone-number id, each with its dedupe key; other
    objects' webhooks and other fields left out. `business_numbers[phone_number_id]`
    is the inbound messages' `to` (else Meta's display number, else the id)."""
    if not is_whatsapp(body):
        return {}
    by_phone: dict[str, list[tuple[Parsed, str]]] = {}
    for entry in _validated(Webhook, body).entry:
        for change in entry.changes:
            if change.value is None or change.field not in (None, "messages"):
                continue
            value = change.value
            phone = value.metadata.phone_number_id
            shown = "".join(ch for ch in (value.metadata.display_phone_number or "") if ch.isdigit())
            business = (business_numbers or {}).get(phone) or shown or phone
            names = {c.wa_id: c.profile.name for c in value.contacts if c.wa_id and c.profile is not None and c.profile.name}
            found = by_phone.setdefault(phone, [])
            found.extend(parse_message(business, m, names) for m in value.messages)
            found.extend(s for s in map(parse_status, value.statuses) if s is not None)
    return by_phone

"""Viber Service Messages over Viber's REST API (`/pa/send_message`, `/pa/set_webhook`).

    POST {viber_api_url}/pa/send_message   X-Viber-Auth-Token: <auth_token>
    {"receiver": "01234567890A=", "min_api_version": 1,
     "sender": {"name": "Acme", "avatar": "https://acme.example/a.png"},
     "tracking_data": "<message uuid>", "type": "text", "text": "Hello"}
    -> {"status": 0, "status_message": "ok", "message_token": 5741311803571721087}

Viber answers HTTP 200 with a `status` code; the codes are mapped in STATUS_ERRORS.
Callbacks carry `X-Viber-Content-Signature`: hex HMAC-SHA256 of the raw body keyed
with the auth token.

    {"event": "delivered", "timestamp": 1457764197627, "message_token": 491266184665523145,
     "user_id": "01234567890A="}
    {"event": "message", "message_token": 4912661846655238145, "sender": {"id": "01234567890A="},
     "message": {"type": "location", "location": {"lat": 50.76891, "lon": 6.11499}}}

The channel never reads user state (who unsubscribed, whose number is known): that is
`missive/dispatch/viber_rules.py`, run by the dispatcher before `send`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import posixpath
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar
from urllib.parse import urlparse

import aiohttp
import httpx
import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
)

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
from missive.channels.callback_models import Id, Loose, no_nul, validated
from missive.config import Settings
from missive.observability.exchanges import recorded_client
from missive.url_guard import AddressGuard, guarded_session, head_length
from missive.url_safety import policy_for

CHANNEL = "viber_service"
EVENT_TYPES = ["delivered", "seen", "failed", "subscribed", "unsubscribed", "conversation_started"]
MIN_API_VERSION = 1
# `viber_service.file_size` is in megabytes (the SDK's ViberVideoOptions); Viber's `size` in bytes.
MEGABYTE = 1024 * 1024

# Viber's `status` codes -> the send error they mean (0 is success; unlisted codes are Rejected 1020).
STATUS_ERRORS: dict[int, SendError] = {
    2: Misconfigured("Viber refused the auth token (invalidAuthToken)"),
    5: Undeliverable(1300, "Not part of the provider network: receiver not registered on Viber"),
    6: Undeliverable(1240, "The receiver is not subscribed to this service"),
    7: Misconfigured("The Viber service is blocked (publicAccountBlocked)"),
    8: Misconfigured("The Viber service was not found (publicAccountNotFound)"),
    9: Misconfigured("The Viber service is suspended (publicAccountSuspended)"),
    10: Misconfigured("No webhook is set for this Viber service (webhookNotSet)"),
    11: Undeliverable(1310, "Not suitable device: the receiver's device cannot receive this message"),
    12: Throttled(None, "Viber: too many requests"),
    15: Misconfigured("The Viber service is not authorized (publicAccountNotAuthorized)"),
    21: Undeliverable(1260, "Destination unreachable: unsupported country"),
}

# Receipts: Viber's event -> Missive status.
RECEIPTS = {"delivered": "delivered", "seen": "read", "failed": "undeliverable"}
FAILED_CODE = 1330
USER_EVENTS = ("subscribed", "unsubscribed", "conversation_started")


class ViberConfig(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    service_id: str = Field(min_length=1, max_length=50, pattern=r"^[\x21-\x7e]+$")
    auth_token: str = Field(min_length=1, max_length=200)
    sender_name: str = Field("Missive", min_length=1, max_length=28)
    sender_avatar: str | None = Field(None, max_length=1000)


@dataclass(frozen=True)
class UserUpdate:
    """What a callback taught about a Viber user, for `provider_users`."""

    user_id: str
    subscribed: bool | None = None
    phone: str | None = None


@dataclass
class Callback:
    """A parsed callback: events for `ingest` (with their dedupe keys) and user updates."""

    events: list[StatusEvent | InboundEvent]
    keys: list[str | None]
    users: list[UserUpdate]
    # The user a receipt is about (receipts only).
    receipt_user: str | None = None


class BadSignature(Exception):
    """The callback's X-Viber-Content-Signature is missing or wrong."""


def signature(body: bytes, auth_token: str) -> str:
    return hmac.new(auth_token.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, header: str | None, auth_token: str) -> None:
    if not header or not hmac.compare_digest(header.strip().lower(), signature(body, auth_token)):
        raise BadSignature("bad or missing X-Viber-Content-Signature")


class ViberChannel:
    kind: ClassVar[str] = "viber"
    carries: ClassVar[tuple[str, ...]] = (CHANNEL,)
    secrets: ClassVar[tuple[str, ...]] = ("auth_token",)
    Config: ClassVar[type[BaseModel]] = ViberConfig

    def __init__(self, settings: Settings | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        settings = settings or Settings()
        self._base = settings.viber_api_url.rstrip("/")
        self._client = recorded_client(timeout=settings.provider_timeout, transport=transport)
        # The whole call's bound (httpx's timeout is per step: a dribbled answer escapes it).
        self._deadline = settings.provider_timeout
        # Media hosts are the sender's choice: asked only under the outbound URL policy.
        self._guard = AddressGuard(policy_for(settings))
        self._media_timeout = settings.provider_timeout
        self._media: aiohttp.ClientSession | None = None

    async def send(self, message: OutboundMessage, link: ChannelLink) -> SendResult:
        config = link.config
        sender: dict[str, str] = {"name": config.get("sender_name") or "Missive"}
        if config.get("sender_avatar"):
            sender["avatar"] = config["sender_avatar"]
        body: dict[str, Any] = {
            "receiver": message.to,
            "min_api_version": MIN_API_VERSION,
            "sender": sender,
            "tracking_data": message.uuid,
            **await self._content(message),
        }
        action = (message.body.get("viber_service") or {}).get("action")
        if action:
            body["keyboard"] = keyboard(action)
        answer = await self._call("/pa/send_message", body, config)
        token = answer.get("message_token")
        if token is None:
            raise Unavailable("Viber answered ok without a message_token")
        return SendResult(provider_ref=str(token))

    async def set_webhook(self, link: ChannelLink, url: str) -> dict[str, Any]:
        """Register Missive's callback URL with Viber for this service."""
        body = {"url": url, "event_types": EVENT_TYPES, "send_name": True, "send_photo": False}
        return await self._call("/pa/set_webhook", body, link.config)

    async def close(self) -> None:
        await self._client.aclose()
        if self._media is not None:
            await self._media.close()

    async def _content(self, message: OutboundMessage) -> dict[str, Any]:
        kind, body = message.message_type, message.body
        if kind == "text":
            return {"type": "text", "text": message.text}
        media = body.get(kind) or {}
        url = media.get("url")
        if not isinstance(url, str):
            raise Rejected(1020, f"Invalid params: {kind}.url is required")
        if kind == "image":
            # Viber requires `text` on a picture; an empty description is allowed.
            return {"type": "picture", "text": media.get("caption") or "", "media": url}
        if kind == "video":
            return await self._video(url, media, body.get("viber_service") or {})
        if kind == "file":
            name = media.get("name") or posixpath.basename(urlparse(url).path) or "file"
            return {"type": "file", "media": url, "size": await self._size(url), "file_name": name[:256]}
        raise Rejected(1440, f"Invalid message type: Viber Service Messages do not carry {kind}")

    async def _video(self, url: str, media: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
        """What the sender said of the video reaches Viber as is; only `size`, which
        Viber requires, is asked of the media host when the sender gave no `file_size`."""
        file_size = options.get("file_size")
        size = file_size * MEGABYTE if isinstance(file_size, int) else await self._size(url)
        video: dict[str, Any] = {"type": "video", "media": url, "size": size}
        if isinstance(options.get("duration"), int):
            video["duration"] = options["duration"]
        if media.get("thumb_url"):
            video["thumbnail"] = media["thumb_url"]
        if media.get("caption"):
            video["text"] = media["caption"]
        return video

    async def _size(self, url: str) -> int:
        """Viber requires a video's or file's size in bytes: asked of the media's host with
        a HEAD, under the outbound URL policy (missive/url_guard.py). A refused URL, or a
        redirect to one, is not asked: its size is 0, as when the host does not answer."""
        if self._media is None:
            self._media = guarded_session(self._guard, self._media_timeout, limit=32)
        try:
            return await head_length(self._media, self._guard, url)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            return 0

    async def _call(self, path: str, body: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
        token = config.get("auth_token")
        if not isinstance(token, str) or not token:
            raise Misconfigured("the Viber link has no auth_token")
        try:
            async with asyncio.timeout(self._deadline):
                response = await self._client.post(
                    self._base + path, content=orjson.dumps(body),
                    headers={"X-Viber-Auth-Token": token, "Content-Type": "application/json"},
                )
        except (TimeoutError, httpx.TimeoutException):
            raise Unavailable("Viber did not answer in time") from None
        except httpx.HTTPError as exc:
            raise Unavailable(f"Viber unreachable: {type(exc).__name__}") from None
        if response.status_code == 429:
            raise Throttled(_retry_after(response), "Viber: too many requests")
        if response.status_code >= 500:
            raise Unavailable(f"Viber answered HTTP {response.status_code}")
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("status"), int):
            if response.status_code in (401, 403):
                raise Misconfigured(f"Viber answered HTTP {response.status_code}")
            raise Unavailable(f"Viber answered HTTP {response.status_code} without a status")
        status = answer["status"]
        if status != 0:
            raise _error(status, str(answer.get("status_message") or ""))
        return answer


def keyboard(action: dict[str, Any]) -> dict[str, Any]:
    """`viber_service.action` as a Viber keyboard of one full-width open-url button.

    A keyboard rather than a rich media message: it rides on the message itself (one
    send, one message token, so receipts still name the message), and leaves the text,
    picture or video rendered natively and whole, where a rich media card would squeeze
    a text of up to 1000 characters into a button cell and need a second send. The cost:
    Viber shows the button in place of the user's keyboard, not inside the bubble, and
    keeps showing the last keyboard sent until another replaces it.
    """
    button = {"Columns": 6, "Rows": 1, "ActionType": "open-url", "ActionBody": action["url"], "Text": action["text"]}
    return {"Type": "keyboard", "DefaultHeight": False, "Buttons": [button]}


def _error(status: int, status_message: str) -> SendError:
    known = STATUS_ERRORS.get(status)
    if known is None:
        return Rejected(1020, f"Invalid params: Viber status {status} {status_message}".strip())
    # A fresh instance each time: errors carry tracebacks and must not be shared.
    if isinstance(known, Throttled):
        return Throttled(None, known.reason)
    if isinstance(known, Undeliverable):
        return Undeliverable(known.code, known.reason)
    return type(known)(known.reason)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


# -- callbacks ----------------------------------------------------------------------


class MalformedCallback(ValueError):
    """A signed callback that is not Viber's shape: a field of the wrong type, or an id
    or token no user or message could have. Refused (400), nothing stored."""


# Viber user ids are 24 characters of base64; the bound keeps them within `from_addr`.
UserId = Id
# A 64-bit integer (orjson reads a larger one as a float, refused here).
Token = Annotated[int, Field(ge=-(2**63), lt=2**64)]
Phone = Annotated[str, StringConstraints(max_length=32), AfterValidator(no_nul)]


class User(Loose):
    id: UserId


class Where(Loose):
    lat: float | None = None
    lon: float | None = None
    long: float | None = None  # what some clients send instead of `lon`
    address: str | None = None


class Contact(Loose):
    phone_number: Phone | None = None


class Message(Loose):
    type: str
    text: str | None = None
    media: str | None = None
    location: Where | None = None
    contact: Contact | None = None


class CallbackBody(Loose):
    event: str
    message_token: Token | None = None
    user_id: UserId | None = None
    user: User | None = None
    sender: User | None = None
    message: Message | None = None
    desc: str | None = None


def parse_callback(body: bytes, header: str | None, link: ChannelLink) -> Callback:
    """Verify and parse one callback: BadSignature when refused, MalformedCallback (or
    orjson's JSONDecodeError, both ValueErrors) when it is not Viber's shape."""
    verify(body, header, str(link.config.get("auth_token") or ""))
    data = validated(CallbackBody, orjson.loads(body), MalformedCallback, "Viber callback")
    event, token = data.event, data.message_token
    key = f"{event}:{token}" if token is not None else None
    result = Callback([], [], [])
    if event in RECEIPTS and token is not None:
        failed = event == "failed"
        result.events.append(StatusEvent(
            str(token), RECEIPTS[event],
            FAILED_CODE if failed else None, (data.desc or "Viber: delivery failed") if failed else None,
        ))
        result.keys.append(key)
        result.receipt_user = data.user_id
    elif event in USER_EVENTS:
        user_id = data.user_id or (data.user.id if data.user is not None else None)
        if user_id is not None:
            subscribed = {"subscribed": True, "unsubscribed": False}.get(event)
            result.users.append(UserUpdate(user_id, subscribed))
    elif event == "message":
        if data.sender is None or data.message is None:
            raise MalformedCallback("Not a Viber callback: a message without sender.id or message")
        message_type, payload = inbound_content(data.message)
        result.events.append(InboundEvent(
            CHANNEL, str(link.config.get("service_id", "")), data.sender.id, message_type, payload,
            str(token) if token is not None else None,
        ))
        result.keys.append(key)
        contact = data.message.contact if data.message.type == "contact" else None
        phone = contact.phone_number if contact is not None else None
        # Writing to a service subscribes the user (Viber's rule).
        result.users.append(UserUpdate(data.sender.id, True, phone))
    # `webhook` (Viber checking the URL at set_webhook) and unknown events: answered, ignored.
    return result


def inbound_content(message: Message) -> tuple[str, dict[str, Any]]:
    """A Viber message as the contract's message_type and payload."""
    kind, media, text = message.type, message.media, message.text
    if kind == "text" and text is not None:
        return "text", {"text": text}
    if kind == "picture" and media is not None:
        return "image", {"image": _media(media, text)}
    if kind == "video" and media is not None:
        return "video", {"video": {"url": media}}
    if kind == "file" and media is not None:
        return "file", {"file": {"url": media}}
    where = message.location
    long = None if where is None else where.lon if where.lon is not None else where.long
    if kind == "location" and where is not None and where.lat is not None and long is not None:
        location: dict[str, Any] = {"lat": where.lat, "long": long}
        if where.address is not None:
            location["address"] = where.address
        return "location", {"location": location}
    if kind == "sticker" and media is not None:
        return "image", {"image": {"url": media}}
    # contact (its number is recorded for the user), sticker without media, url, rich media.
    return "unsupported", {}


def _media(url: str, caption: object) -> dict[str, Any]:
    media: dict[str, Any] = {"url": url}
    if isinstance(caption, str) and caption:
        media["caption"] = caption
    return media

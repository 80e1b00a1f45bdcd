"""WhatsApp through Meta's WhatsApp Cloud API: sends.

Out: POST {graph}/{version}/{phone_number_id}/messages, `Authorization: Bearer TOKEN`

    {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "447700900001",
     "biz_opaque_callback_data": "<message uuid>", "context": {"message_id": "wamid.HBgM..."},
     "type": "text", "text": {"body": "Nexmo https://example.com", "preview_url": true}}
    -> {"messaging_product": "whatsapp", "contacts": [{"input": "447700900001", "wa_id": "447700900001"}],
        "messages": [{"id": "wamid.HBgM..."}]}
    -> {"error": {"message": "(#131047) Re-engagement message", "type": "OAuthException",
                  "code": 131047, "error_data": {"messaging_product": "whatsapp", "details": "..."},
                  "fbtrace_id": "..."}}

The v1 message becomes the Cloud API's message object (`request_body`); `custom` is the
Cloud API's own object, sent as it is. What needs storage (the 24-hour window, the wamid
a `context.message_uuid` names) is settled before the send, by dispatch/whatsapp_rules.py:
it leaves the wamid in the body as `context.message_id`.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field

from missive.channels import graph_post
from missive.channels.base import (
    ChannelLink,
    Misconfigured,
    OutboundMessage,
    Rejected,
    SendError,
    SendResult,
    Throttled,
    Unavailable,
    Undeliverable,
)
from missive.config import Settings
from missive.observability.exchanges import recorded_client

# Meta's error codes and what each means for a send: (outcome, our error code, why).
# Outcomes: rejected (final), undeliverable (final), unavailable (retried), throttled
# (retried, the link slowed down). Codes 200-299 are all "API permission".
# https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes
REJECTED, UNDELIVERABLE, UNAVAILABLE, THROTTLED = "rejected", "undeliverable", "unavailable", "throttled"
ERRORS: dict[int, tuple[str, int, str]] = {
    0: (REJECTED, 1370, "Expired access token: Meta could not authenticate the link's access token"),
    190: (REJECTED, 1370, "Expired access token"),
    3: (REJECTED, 1030, "The access token lacks a capability or permission"),
    10: (REJECTED, 1030, "Permission denied: not granted to the access token, or removed"),
    200: (REJECTED, 1030, "API permission not granted to the access token"),
    4: (THROTTLED, 1000, "Throttled: the app reached its API call rate limit"),
    80007: (THROTTLED, 1000, "Throttled: the WhatsApp Business Account reached its rate limit"),
    130429: (THROTTLED, 1000, "Throttled: Cloud API message throughput reached"),
    131056: (THROTTLED, 1000, "Throttled: too many messages to this user from this number in a short time"),
    131048: (REJECTED, 1210, "Anti-Spam Rejection: the number's messages are limited after being blocked or reported"),
    368: (REJECTED, 1030, "The WhatsApp Business Account is temporarily blocked for a policy violation"),
    131031: (REJECTED, 1030, "The WhatsApp Business Account is locked"),
    131042: (REJECTED, 1070, "A payment issue of the WhatsApp Business Account"),
    131045: (REJECTED, 1420, "Invalid sender: the phone number's certificate is not valid"),
    131037: (REJECTED, 1420, "Invalid sender: the number's display name needs approval"),
    133010: (REJECTED, 1420, "Invalid sender: the phone number is not registered on the Cloud API"),
    33: (REJECTED, 1420, "Invalid sender: the business phone number was deleted"),
    130497: (REJECTED, 1250, "Unroutable: the account may not message users in this country"),
    131030: (REJECTED, 1150, "Non White-listed Destination: not in the test number's allowed list"),
    131021: (REJECTED, 1430, "Invalid recipient: the recipient is the sender"),
    131047: (REJECTED, 1340, "Outside of the allowed window: more than 24 hours since the user last wrote; "
                             "send a template"),
    131026: (UNDELIVERABLE, 1300, "Not part of the provider network: the user cannot receive this message "
                                  "(not on WhatsApp, an old version, or terms not accepted)"),
    131049: (UNDELIVERABLE, 1260, "Destination unreachable: Meta chose not to deliver this message"),
    131050: (UNDELIVERABLE, 1240, "Illegal Number: the user stopped marketing messages from this business"),
    130472: (UNDELIVERABLE, 1260, "Destination unreachable: the user's number is part of a Meta experiment"),
    100: (REJECTED, 1020, "Invalid params"),
    131008: (REJECTED, 1010, "Missing params"),
    131009: (REJECTED, 1020, "Invalid params: a parameter value is not valid"),
    131051: (REJECTED, 1440, "Invalid message type: WhatsApp does not support it"),
    131053: (REJECTED, 1380, "Invalid resource: Meta could not fetch the media"),
    131055: (REJECTED, 1020, "Invalid params: method not allowed"),
    132000: (REJECTED, 1022, "Invalid template: the number of parameters does not match"),
    132001: (REJECTED, 1022, "Invalid template: no such template in this language"),
    132005: (REJECTED, 1022, "Invalid template: the text with its parameters is too long"),
    132007: (REJECTED, 1022, "Invalid template: a format character policy was violated"),
    132012: (REJECTED, 1022, "Invalid template: a parameter's format does not match"),
    132015: (REJECTED, 1022, "Invalid template: the template is paused for low quality"),
    132016: (REJECTED, 1022, "Invalid template: the template is disabled"),
    1: (UNAVAILABLE, 1331, "Provider error: unknown API error"),
    2: (UNAVAILABLE, 1331, "Provider error: temporary downtime or overload"),
    131000: (UNAVAILABLE, 1331, "Provider error: something went wrong"),
    131016: (UNAVAILABLE, 1331, "Provider error: service unavailable"),
    131057: (UNAVAILABLE, 1331, "Provider error: the account is in maintenance mode"),
    133004: (UNAVAILABLE, 1331, "Provider error: server temporarily unavailable"),
}
# The 24-hour rule, applied by Missive before calling Meta (whatsapp_rules), and Meta's 131047.
OUTSIDE_WINDOW = ERRORS[131047][1:]

MEDIA = ("image", "audio", "video")
MAX_TEXT = 4096
# Meta renders a link preview only for a URL that starts with http:// or https://.
_URL = re.compile(r"https?://", re.IGNORECASE)
_GRAPH_ID = r"^[0-9]{1,32}$"


class WhatsappConfig(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    phone_number_id: str = Field(pattern=_GRAPH_ID)
    waba_id: str = Field(pattern=_GRAPH_ID)
    access_token: str = Field(min_length=1, max_length=1000)
    app_secret: str = Field(min_length=1, max_length=200)
    verify_token: str = Field(min_length=1, max_length=200)
    # The business number in E.164 digits: a message `from` it uses this link.
    phone_number: str | None = Field(None, pattern=r"^[1-9][0-9]{6,14}$")


def cloud_error(status: int, body: Any) -> SendError:
    """The send error for a Cloud API error answer (HTTP status and parsed body)."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code = error.get("code")
    details = (error.get("error_data") or {}).get("details") if isinstance(error.get("error_data"), dict) else None
    said = str(details or error.get("message") or f"the Cloud API answered {status}")[:300]
    if isinstance(code, int) and 200 <= code <= 299:
        code = 200
    known = ERRORS.get(code) if isinstance(code, int) else None
    if known is None:
        if status == 429:
            known = ERRORS[130429]
        elif status >= 500 or error.get("is_transient") is True:
            known = ERRORS[1]
        else:
            known = (REJECTED, 1020, "Invalid params")
    outcome, ours, why = known
    reason = f"{why} (WhatsApp {code}: {said})" if code is not None else f"{why} ({said})"
    if outcome == THROTTLED:
        return Throttled(reason=reason)
    if outcome == UNAVAILABLE:
        return Unavailable(reason)
    if outcome == UNDELIVERABLE:
        return Undeliverable(ours, reason)
    return Rejected(ours, reason)


def needs_window(message_type: str, body: dict[str, Any]) -> bool:
    """Whether the message is free-form (only within 24 hours of the user's last
    message): all but templates, given as `template` or as a `custom` template."""
    if message_type == "template":
        return False
    return not (message_type == "custom" and (body.get("custom") or {}).get("type") == "template")


def locale_code(locale: str) -> str:
    """WhatsApp's language code for a BCP 47 tag: `en-GB` -> `en_GB`."""
    return locale.replace("-", "_")


def _filename(media: dict[str, Any]) -> str | None:
    """The document's file name: `name`, else its caption, else the URL's last segment
    (what the SDK documents for WhatsappFileResource)."""
    if media.get("name"):
        return str(media["name"])
    if media.get("caption"):
        return str(media["caption"])
    segment = unquote(urlsplit(str(media["url"])).path.rsplit("/", 1)[-1])
    return segment or None


def _template(body: dict[str, Any]) -> dict[str, Any]:
    template = body.get("template") or {}
    name = str(template.get("name") or "")
    # The v1 name may carry the On-Premises namespace ("namespace:name"): the Cloud API
    # takes the name alone, and a template name cannot contain a colon.
    name = name.rsplit(":", 1)[-1]
    options = body.get("whatsapp") or {}
    language = {"policy": options.get("policy") or "deterministic", "code": locale_code(options.get("locale") or "en_US")}
    components: list[dict[str, Any]] = []
    if template.get("parameters"):
        components.append({"type": "body", "parameters": [{"type": "text", "text": p} for p in template["parameters"]]})
    components.extend(template.get("components") or [])
    out: dict[str, Any] = {"name": name, "language": language}
    if components:
        out["components"] = components
    return out


def request_body(message: OutboundMessage) -> dict[str, Any]:
    """The Cloud API message object for one v1 message."""
    body = message.body
    # biz_opaque_callback_data: Meta keeps it with the message and echoes it in its status
    # callbacks; in the request it names our message, as Viber's tracking_data does.
    out: dict[str, Any] = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": message.to,
                           "biz_opaque_callback_data": message.uuid}
    reply_to = (body.get("context") or {}).get("message_id")
    kind = message.message_type
    if kind == "text":
        text = message.text or ""
        if not text or len(text) > MAX_TEXT:
            raise Rejected(1020, f"Invalid params: WhatsApp text must be 1 to {MAX_TEXT} characters")
        content: dict[str, Any] = {"type": "text", "text": {"body": text, "preview_url": bool(_URL.search(text))}}
    elif kind in MEDIA or kind == "file":
        media = body.get(kind) or {}
        if not media.get("url"):
            raise Rejected(1020, f"Invalid params: {kind}.url is required")
        item: dict[str, Any] = {"link": media["url"]}
        if kind != "audio" and media.get("caption"):
            item["caption"] = media["caption"]
        if kind == "file":
            filename = _filename(media)
            if filename:
                item["filename"] = filename
            kind = "document"
        content = {"type": kind, kind: item}
    elif kind == "sticker":
        sticker = body.get("sticker") or {}
        item = {"link": sticker["url"]} if sticker.get("url") else {"id": sticker.get("id")}
        if not any(item.values()):
            raise Rejected(1020, "Invalid params: sticker.url or sticker.id is required")
        content = {"type": "sticker", "sticker": item}
    elif kind == "template":
        content = {"type": "template", "template": _template(body)}
    elif kind == "custom":
        content = dict(body.get("custom") or {})
        if not isinstance(content.get("type"), str):
            raise Rejected(1020, "Invalid params: custom.type is required")
        reaction = content.get("reaction")
        # A reaction names the message it reacts to: the one `context.message_uuid` named.
        if content["type"] == "reaction" and isinstance(reaction, dict) and reply_to and not reaction.get("message_id"):
            content["reaction"] = {**reaction, "message_id": reply_to}
            reply_to = None
    else:
        raise Rejected(1440, f"Invalid message type: {kind} is not sent on WhatsApp")
    if reply_to:
        out["context"] = {"message_id": reply_to}
    return {**out, **content}


class WhatsappChannel:
    kind: ClassVar[str] = "whatsapp"
    carries: ClassVar[tuple[str, ...]] = ("whatsapp",)
    secrets: ClassVar[tuple[str, ...]] = ("access_token", "app_secret", "verify_token")
    Config: ClassVar[type[BaseModel]] = WhatsappConfig

    def __init__(self, settings: Settings | None = None) -> None:
        settings = settings or Settings()
        self._base = f"{settings.graph_api_url.rstrip('/')}/{settings.graph_api_version}"
        self._client = recorded_client(timeout=settings.provider_timeout)
        # httpx bounds each step; this bounds the whole call (see MessengerChannel).
        self._deadline = settings.provider_timeout

    async def send(self, message: OutboundMessage, link: ChannelLink) -> SendResult:
        answer = await self._post(request_body(message), link)
        found = answer.get("messages")
        ref = found[0].get("id") if isinstance(found, list) and found and isinstance(found[0], dict) else None
        if not isinstance(ref, str) or not ref:
            raise Unavailable("the Cloud API answered without a message id")
        return SendResult(provider_ref=ref)

    async def _post(self, body: dict[str, Any], link: ChannelLink) -> dict[str, Any]:
        token, number = link.config.get("access_token"), link.config.get("phone_number_id")
        if not isinstance(token, str) or not token:
            raise Misconfigured("the WhatsApp link has no access_token")
        if not isinstance(number, str) or not re.match(_GRAPH_ID, number):
            raise Misconfigured("the WhatsApp link has no phone_number_id")
        return await graph_post.post(self._client, f"{self._base}/{number}/messages", self._deadline, "the Cloud API",
                                     cloud_error, json=body, headers={"Authorization": f"Bearer {token}"})

    async def close(self) -> None:
        await self._client.aclose()


"""The v1 message (flat, what the official SDKs send) and its validation.

    {"channel": "sms", "message_type": "text", "to": "447700900000",
     "from": "Acme", "text": "Hello", "client_ref": "abc"}

`validate_v1` turns a decoded JSON body into the normalised dict that is stored, or
raises a 422 problem naming every bad field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, TypeAdapter, ValidationError

from missive.api.errors import InvalidParameter, invalid_params, unsupported_channel
from missive.schemas.addresses import (
    normalise_msisdn,
    normalise_sms_sender,
    normalise_viber_recipient,
)
from missive.schemas.common import (
    Audio,
    File,
    Image,
    MessengerOptions,
    SmsOptions,
    Strict,
    Url,
    ViberOptions,
    Video,
    invalid_parameters,
    messenger_rules,
    url_context,
)
from missive.url_safety import STRICT, UrlPolicy

SUPPORTED_CHANNELS = ("sms", "messenger", "viber_service")
# Channels of the contract with no channel in Missive yet: a clear 422, not "invalid".
UNSUPPORTED_CHANNELS = ("mms", "whatsapp")
PAYLOAD_FIELDS = ("text", "image", "audio", "video", "file", "template")
_PAYLOADS = frozenset(PAYLOAD_FIELDS)

Msisdn = Annotated[str, Field(max_length=32), AfterValidator(normalise_msisdn)]
SmsSender = Annotated[str, Field(min_length=1, max_length=20), AfterValidator(normalise_sms_sender)]
# Page-scoped ids, service ids and Viber user ids: printable ASCII, no spaces.
ChannelId = Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[\x21-\x7e]+$")]
ViberRecipient = Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[\x21-\x7e]+$"), AfterValidator(normalise_viber_recipient)]


class _Common(Strict):
    from_: Any = Field(alias="from")
    client_ref: str | None = Field(None, max_length=100)
    webhook_url: Url | None = None
    webhook_version: Literal["v0.1", "v1"] | None = None
    ttl: int | None = Field(None, ge=20, le=604800)


class SmsMessage(_Common):
    channel: Literal["sms"]
    message_type: Literal["text"]
    to: Msisdn
    from_: SmsSender = Field(alias="from")
    text: str = Field(min_length=1, max_length=1000)
    sms: SmsOptions | None = None


class MessengerMessage(_Common):
    channel: Literal["messenger"]
    message_type: Literal["text", "image", "audio", "video", "file"]
    to: ChannelId
    from_: ChannelId = Field(alias="from")
    text: str | None = Field(None, min_length=1, max_length=640)
    image: Image | None = None
    audio: Audio | None = None
    video: Video | None = None
    file: File | None = None
    messenger: MessengerOptions | None = None


class ViberMessage(_Common):
    channel: Literal["viber_service"]
    message_type: Literal["text", "image", "video", "file"]
    to: ViberRecipient
    from_: ChannelId = Field(alias="from")
    text: str | None = Field(None, min_length=1, max_length=1000)
    image: Image | None = None
    video: Video | None = None
    file: File | None = None
    viber_service: ViberOptions | None = None


V1Message = Annotated[SmsMessage | MessengerMessage | ViberMessage, Field(discriminator="channel")]
v1_adapter: TypeAdapter[Any] = TypeAdapter(V1Message)


def _rules(data: dict[str, Any]) -> list[InvalidParameter]:
    """Rules across fields, checked on the raw body so they are reported with type errors."""
    errors = []
    message_type = data.get("message_type")
    if isinstance(message_type, str) and message_type in PAYLOAD_FIELDS and data.get(message_type) is None:
        errors.append(InvalidParameter(message_type, f"is required when message_type is {message_type}"))
    if data.get("channel") == "messenger":
        errors.extend(messenger_rules(data.get("messenger"), "messenger"))
    return errors


def _with_defaults(message: SmsMessage | MessengerMessage | ViberMessage) -> dict[str, Any]:
    body = message.model_dump(by_alias=True, exclude_none=True)
    for key in _PAYLOADS.intersection(body):
        if key != message.message_type:
            del body[key]
    # The seed's defaults of May 2018: Messenger `response`, Viber `transaction`.
    if isinstance(message, MessengerMessage):
        body.setdefault("messenger", {}).setdefault("category", "response")
    elif isinstance(message, ViberMessage):
        body.setdefault("viber_service", {}).setdefault("category", "transaction")
    return body


def validate_v1(data: object, policy: UrlPolicy = STRICT) -> dict[str, Any]:
    """The normalised v1 message, or a ProblemError (422) naming every bad field;
    `policy` says which webhook and media URLs are allowed."""
    if not isinstance(data, dict):
        raise invalid_params([InvalidParameter("body", "must be a JSON object")])
    channel = data.get("channel")
    if channel in UNSUPPORTED_CHANNELS:
        raise unsupported_channel(channel)
    try:
        message = v1_adapter.validate_python(data, context=url_context(policy))
    except ValidationError as exc:
        errors = invalid_parameters(exc, drop_first=True)
        named = {error.name for error in errors}
        raise invalid_params(errors + [rule for rule in _rules(data) if rule.name not in named]) from None
    rules = _rules(data)
    if rules:
        raise invalid_params(rules)
    return _with_defaults(message)

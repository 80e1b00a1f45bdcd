"""The v1 message (flat, what the official SDKs send) and its validation.

    {"channel": "sms", "message_type": "text", "to": "447700900000",
     "from": "Acme", "text": "Hello", "client_ref": "abc"}

`validate_v1` turns a decoded JSON body into the normalised dict that is stored, or
raises a 422 problem naming every bad field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    TypeAdapter,
    ValidationError,
    with_config,
)
from typing_extensions import TypedDict

from missive.api.errors import InvalidParameter, invalid_params, unsupported_channel
from missive.schemas.addresses import (
    normalise_msisdn,
    normalise_sms_sender,
    normalise_viber_recipient,
)
from missive.schemas.common import (
    STRICT_CONFIG,
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
from missive.schemas.whatsapp import (
    WhatsappContext,
    WhatsappFile,
    WhatsappOptions,
    WhatsappSender,
    WhatsappSticker,
    WhatsappTemplate,
    whatsapp_checks,
)
from missive.url_safety import STRICT, UrlPolicy

SUPPORTED_CHANNELS = ("sms", "messenger", "viber_service", "whatsapp")
# Channels of the vendor's API that Missive does not carry yet, in the v1 and beta formats
# and in failover steps: all the same 422 (api/errors.py unsupported_channel), never
# "invalid". A channel leaves this table, one line, when it is built.
UNSUPPORTED_CHANNELS = (
    "mms",
    "rcs",
)
PAYLOAD_FIELDS = ("text", "image", "audio", "video", "file", "template", "sticker", "custom")
_PAYLOADS = frozenset(PAYLOAD_FIELDS)

Msisdn = Annotated[str, Field(max_length=32), AfterValidator(normalise_msisdn)]
SmsSender = Annotated[str, Field(min_length=1, max_length=20), AfterValidator(normalise_sms_sender)]
# Page-scoped ids, service ids and Viber user ids: printable ASCII, no spaces.
ChannelId = Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[\x21-\x7e]+$")]
ViberRecipient = Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[\x21-\x7e]+$"), AfterValidator(normalise_viber_recipient)]


# The messages are TypedDicts, not models: validation then returns the dict that is
# stored, where a model cost its construction and a `model_dump` on every send
# (`validate_v1` 2.9 -> 1.6 us, on the path every message takes). Declared with the functional
# syntax, since `from` is a keyword. Nested options stay models (the beta format shares
# them) and are dumped when present.
_COMMON: dict[str, Any] = {
    "client_ref": NotRequired[Annotated[str, Field(max_length=100)] | None],
    "webhook_url": NotRequired[Url | None],
    "webhook_version": NotRequired[Literal["v0.1", "v1"] | None],
    "ttl": NotRequired[Annotated[int, Field(ge=20, le=604800)] | None],
}


def _message(name: str, fields: dict[str, Any]) -> Any:
    message = TypedDict(name, {**fields, **_COMMON})  # type: ignore[misc]
    return with_config(STRICT_CONFIG)(message)


class SmsV1Options(SmsOptions):
    """The v1 `sms` object; `pool_id` (a Vonage number pool) is accepted, without effect."""

    pool_id: str | None = Field(None, max_length=100)


SmsMessage = _message("SmsMessage", {
    "channel": Literal["sms"],
    "message_type": Literal["text"],
    "to": Msisdn,
    "from": SmsSender,
    "text": Annotated[str, Field(min_length=1, max_length=1000)],
    "sms": NotRequired[SmsV1Options | None],
    # Vonage's fraud defender override: accepted, without effect (Missive has none).
    "trusted_recipient": NotRequired[bool | None],
})

MessengerMessage = _message("MessengerMessage", {
    "channel": Literal["messenger"],
    "message_type": Literal["text", "image", "audio", "video", "file"],
    "to": ChannelId,
    "from": ChannelId,
    "text": NotRequired[Annotated[str, Field(min_length=1, max_length=640)] | None],
    "image": NotRequired[Image | None],
    "audio": NotRequired[Audio | None],
    "video": NotRequired[Video | None],
    "file": NotRequired[File | None],
    "messenger": NotRequired[MessengerOptions | None],
})

# Viber: what the official SDK's ViberAction, ViberVideoOptions, ViberVideoResource and
# ViberFileResource add (vonage_messages/models/viber.py), with the SDK's limits.
def _viber_type(value: str) -> str:
    if value == "template":
        raise ValueError(
            "template is not supported: Viber's bot API has no message templates; "
            "send the message's own text, image, video or file (type string, or no type)"
        )
    if value != "string":
        raise ValueError("must be string (template is not supported)")
    return value


def _digits(value: object) -> object:
    """The SDK sends `duration` and `file_size` as strings of digits: read as integers."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return value


class ViberAction(Strict):
    url: Url
    text: str = Field(min_length=1, max_length=30)


class ViberServiceOptions(ViberOptions):
    type: Annotated[str, AfterValidator(_viber_type)] | None = None  # type: ignore[assignment]
    action: ViberAction | None = None
    # Seconds (1-600) and megabytes (1-200), as the SDK's ViberVideoOptions.
    duration: Annotated[int, BeforeValidator(_digits), Field(ge=1, le=600)] | None = None
    file_size: Annotated[int, BeforeValidator(_digits), Field(ge=1, le=200)] | None = None


class ViberVideo(Video):
    thumb_url: Annotated[Url, Field(max_length=1000)] | None = None


class ViberFile(File):
    # Viber's own limit for `file_name` (the SDK allows 25).
    name: str | None = Field(None, min_length=1, max_length=256)


ViberMessage = _message("ViberMessage", {
    "channel": Literal["viber_service"],
    "message_type": Literal["text", "image", "video", "file"],
    "to": ViberRecipient,
    "from": ChannelId,
    "text": NotRequired[Annotated[str, Field(min_length=1, max_length=1000)] | None],
    "image": NotRequired[Image | None],
    "video": NotRequired[ViberVideo | None],
    "file": NotRequired[ViberFile | None],
    "viber_service": NotRequired[ViberServiceOptions | None],
})


# WhatsApp: every Whatsapp* class of the official SDK (vonage_messages/models/whatsapp.py).
WhatsappMessage = _message("WhatsappMessage", {
    "channel": Literal["whatsapp"],
    "message_type": Literal["text", "image", "audio", "video", "file", "template", "sticker", "custom"],
    "to": Msisdn,
    "from": WhatsappSender,
    "text": NotRequired[Annotated[str, Field(min_length=1, max_length=4096)] | None],
    "image": NotRequired[Image | None],
    "audio": NotRequired[Audio | None],
    "video": NotRequired[Video | None],
    "file": NotRequired[WhatsappFile | None],
    "sticker": NotRequired[WhatsappSticker | None],
    "template": NotRequired[WhatsappTemplate | None],
    "custom": NotRequired[dict[str, Any] | None],
    "whatsapp": NotRequired[WhatsappOptions | None],
    "context": NotRequired[WhatsappContext | None],
})


V1Message = Annotated[SmsMessage | MessengerMessage | ViberMessage | WhatsappMessage, Field(discriminator="channel")]
v1_adapter: TypeAdapter[Any] = TypeAdapter(V1Message)


def _rules(data: dict[str, Any]) -> list[InvalidParameter]:
    """Rules across fields, checked on the raw body so they are reported with type errors."""
    errors = []
    message_type = data.get("message_type")
    if isinstance(message_type, str) and message_type in PAYLOAD_FIELDS and data.get(message_type) is None:
        errors.append(InvalidParameter(message_type, f"is required when message_type is {message_type}"))
    if data.get("channel") == "messenger":
        errors.extend(messenger_rules(data.get("messenger"), "messenger"))
    if data.get("channel") == "whatsapp":
        errors.extend(whatsapp_checks(data))
    return errors


# The seed's defaults of May 2018: Messenger `response`, Viber `transaction`.
_DEFAULT_CATEGORY = {"messenger": "response", "viber_service": "transaction"}
# Fields that are payloads or option models: the only ones `_with_defaults` may change.
_SHAPED = _PAYLOADS | {"sms", "messenger", "viber_service", "whatsapp", "context"}


def _with_defaults(message: dict[str, Any]) -> dict[str, Any]:
    """The stored form, made in the dict validation returned (ours to change): no null
    fields (as if absent), option models as dicts, only the payload `message_type`
    names, and the seed's default categories."""
    body = message
    if None in body.values():
        body = {key: value for key, value in body.items() if value is not None}
    message_type = body["message_type"]
    for key in _SHAPED.intersection(body):
        value = body[key]
        if key in _PAYLOADS and key != message_type:
            del body[key]
        elif isinstance(value, BaseModel):  # not text, nor `custom` (a dict)
            body[key] = value.model_dump(by_alias=True, exclude_none=True)
    channel = body["channel"]
    category = _DEFAULT_CATEGORY.get(channel)
    if category is not None:
        body.setdefault(channel, {}).setdefault("category", category)
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

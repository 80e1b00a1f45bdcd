"""The beta message of the seed (`/v0.1/messages`, `/beta/messages`), translated to v1.

    {"from": {"type": "sms", "number": "447700900001"},
     "to": {"type": "sms", "number": "447700900000"},
     "message": {"content": {"type": "text", "text": "Hello"}}}

Translation happens once, here; errors are reported with the beta paths the caller sent.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, TypeAdapter, ValidationError

from missive.api.errors import InvalidParameter, ProblemError, invalid_params, unsupported_channel
from missive.schemas.common import (
    Audio,
    File,
    Image,
    MessengerOptions,
    SmsOptions,
    Strict,
    ViberOptions,
    Video,
    invalid_parameters,
    url_context,
)
from missive.schemas.v1 import PAYLOAD_FIELDS, UNSUPPORTED_CHANNELS, validate_v1
from missive.url_safety import STRICT, UrlPolicy

BetaChannel = Literal["sms", "mms", "whatsapp", "messenger", "viber_service_msg"]
V1_CHANNEL = {"viber_service_msg": "viber_service"}


class BetaEndpoint(Strict):
    type: BetaChannel
    number: str | None = Field(None, min_length=1, max_length=50)
    id: str | None = Field(None, min_length=1, max_length=50)


class BetaContent(Strict):
    type: Literal["text", "image", "audio", "video", "file", "template"]
    text: str | None = None
    image: Image | None = None
    audio: Audio | None = None
    video: Video | None = None
    file: File | None = None


class BetaMessageBody(Strict):
    content: BetaContent
    messenger: MessengerOptions | None = None
    viber_service_msg: ViberOptions | None = None
    sms: SmsOptions | None = None


class BetaMessage(Strict):
    from_: BetaEndpoint = Field(alias="from")
    to: BetaEndpoint
    message: BetaMessageBody
    client_ref: str | None = None


_beta_adapter: TypeAdapter[Any] = TypeAdapter(BetaMessage)


def _obj(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _address_key(data: dict, side: str) -> str:
    """`number` or `id`: what the caller gave, else what the channel uses on that side."""
    endpoint = _obj(data.get(side))
    if endpoint.get("number") is not None:
        return "number"
    if endpoint.get("id") is not None:
        return "id"
    channel = _obj(data.get("to")).get("type")
    if channel == "messenger" or (channel == "viber_service_msg" and side == "from"):
        return "id"
    return "number"


def translate(data: dict) -> dict[str, Any]:
    """The v1 form of a beta message; tolerant of bad shapes, which v1 validation reports."""
    to, message = _obj(data.get("to")), _obj(data.get("message"))
    content = _obj(message.get("content"))
    channel = to.get("type")
    v1: dict[str, Any] = {
        "channel": V1_CHANNEL.get(channel, channel) if isinstance(channel, str) else channel,
        "message_type": content.get("type"),
        "to": to.get(_address_key(data, "to")),
        "from": _obj(data.get("from")).get(_address_key(data, "from")),
        "webhook_version": "v0.1",
    }
    for key in PAYLOAD_FIELDS:
        if key in content:
            v1[key] = content[key]
    for beta_key, v1_key in (("messenger", "messenger"), ("viber_service_msg", "viber_service"), ("sms", "sms"),
                             ("whatsapp", "whatsapp")):
        if message.get(beta_key) is not None:
            v1[v1_key] = message[beta_key]
    if data.get("client_ref") is not None:
        v1["client_ref"] = data["client_ref"]
    return {k: v for k, v in v1.items() if v is not None}


def beta_path(v1_name: str, data: dict) -> str:
    """Where in the beta body the caller wrote what v1 calls `v1_name`."""
    head, _, rest = v1_name.partition(".")
    if head == "channel":
        return "to.type"
    if head in ("to", "from"):
        return f"{head}.{_address_key(data, head)}"
    if head == "message_type":
        return "message.content.type"
    if head in PAYLOAD_FIELDS:
        return f"message.content.{v1_name}"
    if head == "viber_service":
        return "message.viber_service_msg" + (f".{rest}" if rest else "")
    if head in ("messenger", "sms", "whatsapp"):
        return f"message.{v1_name}"
    return v1_name


def _covered(name: str, errors: list[InvalidParameter]) -> bool:
    """Whether a structural error already speaks for this field: the same field, a parent
    of it, or (for `to` and `from`) the same endpoint."""
    for error in errors:
        if name == error.name or name.startswith(error.name + "."):
            return True
        if name.split(".")[0] in ("to", "from") and error.name.split(".")[0] == name.split(".")[0]:
            return True
    return False


def validate_beta(data: object, policy: UrlPolicy = STRICT) -> dict[str, Any]:
    """The normalised v1 message for a beta body, or a 422 problem naming every bad
    field by its beta path: structural errors and v1 rules together."""
    if not isinstance(data, dict):
        raise invalid_params([InvalidParameter("body", "must be a JSON object")])
    errors: list[InvalidParameter] = []
    try:
        _beta_adapter.validate_python(data, context=url_context(policy))
    except ValidationError as exc:
        errors = invalid_parameters(exc)
    to_type, from_type = _obj(data.get("to")).get("type"), _obj(data.get("from")).get("type")
    if to_type in UNSUPPORTED_CHANNELS:
        # The v1 answer, whatever else the body holds (the beta format names no `rcs`).
        problem = unsupported_channel(to_type)
        problem.invalid_parameters = [InvalidParameter("to.type", p.reason) for p in problem.invalid_parameters]
        raise problem
    if isinstance(to_type, str) and isinstance(from_type, str) and to_type != from_type:
        errors.append(InvalidParameter("from.type", "must be the same channel as to.type"))
    try:
        message = validate_v1(translate(data), policy)
    except ProblemError as problem:
        for param in problem.invalid_parameters:
            param.name = beta_path(param.name, data)
        if not errors:
            raise
        errors.extend(p for p in problem.invalid_parameters if not _covered(p.name, errors))
        raise invalid_params(errors) from None
    if errors:
        raise invalid_params(errors)
    return message

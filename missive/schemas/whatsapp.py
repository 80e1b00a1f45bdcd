"""The v1 WhatsApp fields (what the official SDK's Whatsapp* classes send), and the
rules across them.

    {"channel": "whatsapp", "message_type": "template", "to": "447700900001", "from": "447700900000",
     "template": {"name": "verify", "parameters": ["Acme", "12345"]},
     "whatsapp": {"policy": "deterministic", "locale": "en-GB"},
     "context": {"message_uuid": "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"}}

`template.components` is the Cloud API's own list of template components (header media,
buttons), sent after the body component made of `parameters`; `custom` is the Cloud API's
own message object (interactive, location, contacts, reaction, template), sent as it is.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, Field, field_validator, model_validator

from missive.api.errors import InvalidParameter
from missive.schemas.common import File, Strict, Template, Url

# The business number (E.164 digits) or its Cloud API phone-number id: digits both.
WhatsappSender = Annotated[str, Field(min_length=1, max_length=32), AfterValidator(lambda v: _digits(v))]
# Keys of the Cloud API's message object that Missive sets itself.
OURS = ("to", "messaging_product")


def _digits(value: str) -> str:
    if not (value.isascii() and value.isdigit()):
        raise ValueError("must be the business phone number in E.164 digits (no leading +) or its phone-number id")
    return value


class WhatsappContext(Strict):
    message_uuid: str = Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")


class WhatsappFile(File):
    name: str | None = Field(None, min_length=1, max_length=255)


class WhatsappSticker(Strict):
    url: Url | None = None
    id: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.url is None) == (self.id is None):
            raise ValueError("give the sticker's url or its media id, one of the two")
        return self


class WhatsappTemplate(Template):
    components: list[dict[str, Any]] | None = Field(None, min_length=1, max_length=20)

    @field_validator("components")
    @classmethod
    def _typed(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        for component in value or ():
            if not isinstance(component.get("type"), str) or not component["type"]:
                raise ValueError("each component needs its type (header, body, button), as in the Cloud API")
        return value


class WhatsappOptions(Strict):
    policy: Literal["deterministic"] | None = None
    # BCP 47 (en-GB) or WhatsApp's own form (en_GB).
    locale: str | None = Field(None, max_length=20, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


def whatsapp_checks(data: dict[str, Any]) -> list[InvalidParameter]:
    """Rules across WhatsApp fields, on the raw body (reported with the type errors)."""
    errors = []
    message_type = data.get("message_type")
    options, template, custom = data.get("whatsapp"), data.get("template"), data.get("custom")
    if message_type == "template":
        if options is None:
            errors.append(InvalidParameter("whatsapp", "is required when message_type is template (its locale)"))
        elif isinstance(options, dict) and options.get("locale") is None:
            errors.append(InvalidParameter("whatsapp.locale", "is required when message_type is template"))
        if isinstance(template, dict) and template.get("parameters") and isinstance(template.get("components"), list) \
                and any(isinstance(c, dict) and c.get("type") == "body" for c in template["components"]):
            errors.append(InvalidParameter(
                "template.components", "has a body component and template.parameters fills the body too: give one"))
    if message_type == "custom" and isinstance(custom, dict):
        if not isinstance(custom.get("type"), str) or not custom["type"]:
            errors.append(InvalidParameter("custom.type", "is required: the Cloud API message type "
                                                          "(interactive, location, contacts, reaction, template, ...)"))
        errors += [InvalidParameter(f"custom.{key}", "is set by Missive (from the message's `to`)")
                   for key in OURS if key in custom]
    return errors

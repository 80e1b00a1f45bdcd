"""Field types shared by both request formats, and pydantic errors as invalid_parameters."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo

from missive.api.errors import InvalidParameter
from missive.url_safety import STRICT, UrlPolicy, check_url


def _check_url(value: str, info: ValidationInfo) -> str:
    """An absolute http(s) URL with a well-formed host and port, no whitespace, and (by the
    policy in the validation context, strict without one) no internal address."""
    return check_url(value, url_policy(info))


def url_policy(info: ValidationInfo) -> UrlPolicy:
    return (info.context or {}).get("url_policy", STRICT)


def url_context(policy: UrlPolicy) -> dict[str, UrlPolicy]:
    """The validation context that applies `policy` to every Url field."""
    return {"url_policy": policy}


Url = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(_check_url)]
Caption = Annotated[str, Field(min_length=1, max_length=3000)]


# Strict: "600" is not an integer and 5 is not a string. Unknown keys are ignored so
# that newer SDKs sending fields we do not use still work.
STRICT_CONFIG = ConfigDict(strict=True, extra="ignore")


class Strict(BaseModel):
    model_config = STRICT_CONFIG


class Image(Strict):
    url: Url
    caption: Caption | None = None


class Audio(Strict):
    url: Url


class Video(Strict):
    url: Url
    caption: Caption | None = None


class File(Strict):
    url: Url
    caption: Caption | None = None


class Template(Strict):
    name: str = Field(min_length=1, max_length=512)
    parameters: list[str] | None = None


class SmsOptions(Strict):
    encoding_type: Literal["text", "unicode", "auto"] | None = None
    content_id: str | None = Field(None, max_length=100)
    entity_id: str | None = Field(None, max_length=100)


class MessengerOptions(Strict):
    category: Literal["response", "update", "message_tag"] | None = None
    tag: str | None = Field(None, min_length=1, max_length=100)


class ViberOptions(Strict):
    category: Literal["transaction", "promotion"] | None = None
    ttl: int | None = Field(None, ge=30, le=259200)
    type: str | None = Field(None, max_length=50)


def messenger_rules(options: object, prefix: str) -> list[InvalidParameter]:
    """The category/tag rule of the May 2018 notice: a tag exactly when category is message_tag.

    Works on the raw options so that it can report alongside type errors.
    """
    if not isinstance(options, dict):
        return []
    category, tag = options.get("category"), options.get("tag")
    if category == "message_tag" and not tag:
        return [InvalidParameter(f"{prefix}.tag", "is required when category is message_tag")]
    if tag and category != "message_tag":
        return [InvalidParameter(f"{prefix}.tag", "is only allowed when category is message_tag")]
    return []


def _reason(error: dict) -> str:
    kind = error["type"]
    if kind == "missing":
        return "is required"
    message = error["msg"]
    if kind == "value_error" and message.startswith("Value error, "):
        return message[len("Value error, "):]
    return message


def invalid_parameters(exc: ValidationError, drop_first: bool = False) -> list[InvalidParameter]:
    """Every error of a validation, named by its dotted path.

    `drop_first` removes the tag a discriminated union puts in front of each path.
    """
    params = []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            reason = "is required" if error["type"] == "union_tag_not_found" else error["msg"]
            params.append(InvalidParameter(".".join(map(str, loc + ["channel"])) if loc else "channel", reason))
            continue
        if drop_first and loc:
            loc = loc[1:]
        name = ".".join(str(part) for part in loc) or "body"
        params.append(InvalidParameter(name, _reason(error)))
    return params

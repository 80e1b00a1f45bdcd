"""What the strict models of provider callbacks share (Messenger's and WhatsApp's
webhooks, Viber's callbacks): ids that cannot hold NUL and fit their columns, models
that check only the fields they read, and one way to refuse a body naming the first
field that is wrong."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, ValidationError


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL")
    return value


# Provider ids are short and printable. The bounds keep an id, and the dedupe keys made
# of it ("mid:{mid}:{n}", "delivered:{mid}", "msg:{wamid}"), within their columns.
Id = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(no_nul)]
Ref = Annotated[str, StringConstraints(min_length=1, max_length=180), AfterValidator(no_nul)]


class Loose(BaseModel):
    # Providers add fields over time: only those read here are checked, and a missing
    # one skips what needs it, while one of the wrong type refuses the body.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], body: Any, refusal: type[ValueError], what: str) -> M:
    """`body` read as `model`, or `refusal` saying "Not a {what}: {field}: {why}"."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "the body"
        raise refusal(f"Not a {what}: {where}: {first['msg']}") from None

"""What `validate_v1` returns: the dict stored as the message's body.

The messages validate as TypedDicts (no model, no dump), so the stored form is made by
hand from what pydantic returns; these pin it down."""

from __future__ import annotations

import orjson
import pytest

from missive.api.errors import ProblemError
from missive.schemas.v1 import validate_v1

SMS = {"channel": "sms", "message_type": "text", "to": "447700900000", "from": "Acme", "text": "Hello"}


def test_a_plain_sms_is_stored_as_sent() -> None:
    assert validate_v1(dict(SMS)) == SMS


def test_null_fields_are_as_if_absent() -> None:
    body = validate_v1({**SMS, "client_ref": None, "ttl": None, "webhook_url": None, "sms": None})
    assert body == SMS


def test_option_models_become_plain_dicts_without_their_nulls() -> None:
    body = validate_v1({**SMS, "sms": {"encoding_type": "unicode", "content_id": None}})
    assert body["sms"] == {"encoding_type": "unicode"}
    assert orjson.loads(orjson.dumps(body)) == body  # nothing but JSON values


def test_unknown_fields_are_dropped() -> None:
    assert validate_v1({**SMS, "brand_new_sdk_field": {"x": 1}}) == SMS


def test_only_the_payload_message_type_names_is_kept() -> None:
    body = validate_v1({"channel": "messenger", "message_type": "image", "to": "1234", "from": "5678",
                        "text": "caption?", "image": {"url": "https://example.com/cat.jpg", "caption": None}})
    assert body == {"channel": "messenger", "message_type": "image", "to": "1234", "from": "5678",
                    "image": {"url": "https://example.com/cat.jpg"}, "messenger": {"category": "response"}}


@pytest.mark.parametrize(
    ("channel", "options", "given", "expected"),
    [
        ("messenger", "messenger", None, {"category": "response"}),
        ("messenger", "messenger", {"category": "update"}, {"category": "update"}),
        ("viber_service", "viber_service", None, {"category": "transaction"}),
        ("viber_service", "viber_service", {"ttl": 600}, {"category": "transaction", "ttl": 600}),
    ],
)
def test_default_categories(channel: str, options: str, given: dict | None, expected: dict) -> None:
    sent = {"channel": channel, "message_type": "text", "to": "447700900000", "from": "16273", "text": "hi"}
    if given is not None:
        sent[options] = given
    assert validate_v1(sent)[options] == expected


def test_the_input_is_not_changed() -> None:
    sent = {**SMS, "client_ref": None, "sms": {"encoding_type": "text"}}
    copy = orjson.loads(orjson.dumps(sent))
    validate_v1(sent)
    assert sent == copy


def test_strict_types_are_kept() -> None:
    with pytest.raises(ProblemError) as raised:
        validate_v1({**SMS, "ttl": "600"})
    assert [p.name for p in raised.value.invalid_parameters] == ["ttl"]

"""Hypothesis properties: the beta → v1 translation, and the shapes of the webhooks we send.

Webhook bodies are checked against the vendor's schemas in tests/reference where the
vendor defines the case, with the few amendments listed in `AMENDMENTS` (each a place
where the 2020 draft contradicts itself or API.md deliberately differs); cases only
API.md defines (locations, Viber user ids) are checked against API.md's wording.
"""

from __future__ import annotations

import re
import uuid
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import phonenumbers
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from missive.schemas.beta import validate_beta
from missive.schemas.v1 import validate_v1
from missive.webhooks.payloads import StatusDetails, inbound_payload, status_payload, usage

REFERENCE = Path(__file__).resolve().parent / "reference"
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

# --- generators ----------------------------------------------------------------------------


@cache
def _numbers() -> list[str]:
    """Real numbering plans' example mobiles, and the vendor's fictional 447700900xxx."""
    found = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        if example is not None:
            found.append(phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)[1:])
    return found + [f"447700900{n:03d}" for n in range(0, 1000, 37)]


numbers = st.sampled_from(_numbers())
text = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=300)
page_ids = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=50)
# Viber user ids look like base64 ("01234567890A="): never all digits.
viber_ids = st.from_regex(r"\A[0-9A-Za-z+/]{0,20}[A-Za-z+/][0-9A-Za-z+/]{0,20}={0,2}\Z")
senders = st.from_regex(r"\A[A-Za-z][A-Za-z0-9]{0,10}\Z") | numbers
urls = st.from_regex(r"\A[a-z0-9]{1,20}(/[a-z0-9._-]{1,20}){0,3}\Z").map(lambda path: f"https://example.com/{path}")
client_refs = st.none() | st.text(st.characters(exclude_categories=("Cs",)), max_size=100)


def media(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    with_caption = kind in ("image", "video", "file")
    caption = st.none() | st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=50)
    return st.builds(
        lambda url, cap: {"url": url, **({"caption": cap} if cap is not None and with_caption else {})}, urls, caption
    )


def content(types: tuple[str, ...], max_text: int) -> st.SearchStrategy[dict[str, Any]]:
    def one(kind: str) -> st.SearchStrategy[dict[str, Any]]:
        if kind == "text":
            return st.builds(lambda t: {"type": "text", "text": t[:max_text]}, text)
        return media(kind).map(lambda m: {"type": kind, kind: m})

    return st.sampled_from(types).flatmap(one)


messenger_options = st.none() | st.sampled_from(
    [{"category": "response"}, {"category": "update"}, {"category": "message_tag", "tag": "ticket_update"}]
)
viber_options = st.none() | st.fixed_dictionaries(
    {}, optional={"category": st.sampled_from(["transaction", "promotion"]), "ttl": st.integers(30, 259200)}
)


@st.composite
def beta_messages(draw: st.DrawFn) -> dict[str, Any]:
    channel = draw(st.sampled_from(["sms", "messenger", "viber_service_msg"]))
    message: dict[str, Any]
    if channel == "sms":
        to, sender = {"number": draw(numbers)}, {"number": draw(senders)}
        message = {"content": draw(content(("text",), 1000))}
    elif channel == "messenger":
        to, sender = {"id": draw(page_ids)}, {"id": draw(page_ids)}
        message = {"content": draw(content(("text", "image", "audio", "video", "file"), 640))}
        if (options := draw(messenger_options)) is not None:
            message["messenger"] = options
    else:
        to = draw(st.one_of(numbers.map(lambda n: {"number": n}), viber_ids.map(lambda i: {"id": i})))
        sender = {"id": draw(page_ids)}
        message = {"content": draw(content(("text", "image", "video", "file"), 1000))}
        if (options := draw(viber_options)) is not None:
            message["viber_service_msg"] = options
    beta = {"from": {"type": channel, **sender}, "to": {"type": channel, **to}, "message": message}
    if (ref := draw(client_refs)) is not None:
        beta["client_ref"] = ref
    return beta


# --- the translation -------------------------------------------------------------------------


@FAST
@given(beta_messages())
def test_beta_translates_to_a_v1_message_with_the_same_content(beta: dict[str, Any]) -> None:
    v1 = validate_beta(beta)
    assert validate_v1(v1) == v1, "the v1 validator takes the translation as it is"
    channel = beta["to"]["type"]
    assert v1["channel"] == {"viber_service_msg": "viber_service"}.get(channel, channel)
    assert v1["to"] == next(iter(beta["to"][k] for k in ("number", "id") if k in beta["to"]))
    assert v1["from"] == next(iter(beta["from"][k] for k in ("number", "id") if k in beta["from"]))
    kind = beta["message"]["content"]["type"]
    assert v1["message_type"] == kind and v1[kind] == beta["message"]["content"][kind]
    assert v1.get("client_ref") == beta.get("client_ref")
    assert v1["webhook_version"] == "v0.1"
    options = beta["message"].get("messenger") or beta["message"].get("viber_service_msg") or {}
    channel_options = v1.get("messenger") or v1.get("viber_service") or {}
    assert options.items() <= channel_options.items()


# --- webhook shapes --------------------------------------------------------------------------

# Where the vendor's files cannot be used as they stand, and why.
AMENDMENTS = {
    "v1 baseMessageType requires `message`": "no v1 body has one, outbound or inbound (the draft's own Text/Image bodies are flat)",
    "v1 messageStatus<channel> `to`, `from`, `status`": "allOf cannot override the base; the branches mean to (Messenger's ToId, and `read` for all but SMS and MMS)",
    "beta SmsInbound requires `usage`": "API.md: `usage` only where a price is configured",
}
OVERRIDDEN = ("to", "from", "status")


@cache
def _spec(name: str) -> dict[str, Any]:
    spec = yaml.safe_load((REFERENCE / name).read_text())
    schemas = spec["components"]["schemas"]
    if name == "messages-v1-draft.yml":
        schemas["baseMessageType"]["required"].remove("message")
        base = schemas["messageStatusBase"]["properties"]
        for branch in ("messageStatusSMS", "messageStatusMMS", "messageStatusWhatsApp", "messageStatusMessenger", "messageStatusViber"):
            own = schemas[branch]["allOf"][1]["properties"]
            for key in OVERRIDDEN:
                own.setdefault(key, base[key])
        for key in OVERRIDDEN:
            base[key] = {}
    if name == "messages-beta.yml":
        schemas["SmsInbound"]["required"].remove("usage")
    return spec


def _validator(spec_name: str, schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator({**schema, "components": _spec(spec_name)["components"]})


@cache
def v1_status() -> Draft202012Validator:
    callback = _spec("messages-v1-draft.yml")["paths"]["/"]["post"]["callbacks"]["message-status"]
    return _validator("messages-v1-draft.yml", next(iter(callback.values()))["post"]["requestBody"]["content"]["application/json"]["schema"])


@cache
def v1_inbound() -> Draft202012Validator:
    hook = _spec("messages-v1-draft.yml")["x-webhooks"]["inbound-message"]
    return _validator("messages-v1-draft.yml", next(iter(hook.values()))["post"]["requestBody"]["content"]["application/json"]["schema"])


@cache
def beta_status() -> Draft202012Validator:
    return _validator("messages-beta.yml", {"$ref": "#/components/schemas/MessageStatus"})


@cache
def beta_inbound() -> Draft202012Validator:
    return _validator("messages-beta.yml", {"$ref": "#/components/schemas/inbound-message"})


def _check(validator: Draft202012Validator, payload: dict[str, Any]) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(payload)]
    assert not errors, (payload, errors)


ERROR_CODES = sorted(int(code) for code in yaml.safe_load((REFERENCE / "messages-v1-draft.yml").read_text())["x-errors"])
times = st.floats(min_value=1e9, max_value=4.1e9, allow_nan=False)


@st.composite
def sent_messages(draw: st.DrawFn, viber_to: st.SearchStrategy[str] = numbers) -> dict[str, Any]:
    """A stored message row, as the status webhooks read it."""
    channel = draw(st.sampled_from(["sms", "messenger", "viber_service"]))
    to, sender = {"sms": (numbers, senders), "messenger": (page_ids, page_ids), "viber_service": (viber_to, page_ids)}[channel]
    return {
        "uuid": str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))),
        "channel": channel,
        "to_addr": draw(to),
        "from_addr": draw(sender),
        "webhook_version": draw(st.sampled_from(["v1", "v0.1"])),
        "client_ref": draw(client_refs),
        "workflow_id": draw(st.none() | st.uuids().map(str)),
    }


def statuses_for(channel: str) -> st.SearchStrategy[str]:
    read = ["read"] if channel != "sms" else []
    return st.sampled_from(["submitted", "delivered", "rejected", "undeliverable", *read])


@FAST
@given(sent_messages(), st.data(), times)
def test_status_webhooks_match_the_vendor_schemas(message: dict[str, Any], data: st.DataObject, at: float) -> None:
    status = data.draw(statuses_for(message["channel"]))
    error = data.draw(st.sampled_from(ERROR_CODES)) if status in ("rejected", "undeliverable") else None
    parts = data.draw(st.integers(1, 6))
    price = data.draw(st.none() | st.fixed_dictionaries({
        "amount": st.decimals(0, 10, places=4).map(str), "currency": st.just("EUR"), "per": st.sampled_from(["part", "message"])}))
    details = StatusDetails(parts if message["channel"] == "sms" else None, usage(price, parts))
    payload = status_payload(message, status, at, error, "why" if error else None, details)
    _check(v1_status() if message["webhook_version"] == "v1" else beta_status(), payload)
    assert ISO_MS.match(payload["timestamp"]) and payload["status"] == status
    assert payload.get("client_ref") == (message["client_ref"] or None)
    if price is not None:
        times = parts if price["per"] == "part" else 1
        assert Decimal(payload["usage"]["price"]) == Decimal(price["amount"]) * times
    else:
        assert "usage" not in payload
    if message["webhook_version"] == "v0.1":
        assert "sms" not in payload and "channel" not in payload
        if error is not None:
            assert payload["error"] == {"code": error, "reason": "why"}
        return
    assert payload.get("sms") == ({"count_total": str(parts)} if message["channel"] == "sms" else None)
    if error is not None:
        assert payload["error"] == {
            "type": f"https://developer.vonage.com/api-errors/messages#{error}", "title": str(error),
            "detail": "why", "instance": payload["error"]["instance"]}
        assert payload["error"]["instance"] == status_payload(message, status, at, error, "why")["error"]["instance"]


@FAST
@given(sent_messages(viber_to=viber_ids), times)
def test_status_webhooks_to_viber_user_ids_follow_api_md(message: dict[str, Any], at: float) -> None:
    """API.md addresses Viber users by id: the beta shape says so with `id`, v1 by the value."""
    payload = status_payload(message, "delivered", at)
    if message["webhook_version"] == "v0.1":
        _check(beta_status(), payload)
        if message["channel"] == "viber_service":
            assert payload["to"] == {"type": "viber_service_msg", "id": message["to_addr"]}
    else:
        assert payload["to"] == message["to_addr"] and payload["channel"] == message["channel"]


# The inbound cases both the vendor and API.md define (channel: message types).
VENDOR_INBOUND = {
    "v1": {"sms": ("text",), "messenger": ("text", "image", "audio", "video", "file", "unsupported"), "viber_service": ("text", "image")},
    "v0.1": {"sms": ("text",), "messenger": ("text", "image", "audio", "video", "file", "unsupported"), "viber_service": ("text", "unsupported")},
}


def inbound_content(kind: str, channel: str) -> st.SearchStrategy[dict[str, Any]]:
    if kind == "text" and channel == "sms":
        return st.builds(lambda t, n: {"text": t, "sms": {"num_messages": str(n), "keyword": t.split()[0].upper() if t.split() else ""}},
                         text, st.integers(1, 9))
    if kind == "text":
        return text.map(lambda t: {"text": t})
    if kind == "unsupported":
        return st.just({})
    return media(kind).map(lambda m: {kind: m})


@st.composite
def inbound_rows(draw: st.DrawFn, cases: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    channel = draw(st.sampled_from(sorted(cases)))
    kind = draw(st.sampled_from(cases[channel]))
    # The user on `from`, the business (number, page, service) on `to`; Viber users by
    # number here, as the vendor writes them.
    user, business = {"sms": (numbers, numbers), "messenger": (page_ids, page_ids), "viber_service": (numbers, page_ids)}[channel]
    return {"uuid": str(draw(st.uuids())), "channel": channel, "to_addr": draw(business), "from_addr": draw(user),
            "created_at": draw(times), "message_type": kind, "payload": draw(inbound_content(kind, channel))}


@FAST
@given(st.sampled_from(["v1", "v0.1"]).flatmap(lambda v: st.tuples(st.just(v), inbound_rows(VENDOR_INBOUND[v]))))
def test_inbound_webhooks_match_the_vendor_schemas(case: tuple[str, dict[str, Any]]) -> None:
    version, row = case
    payload = inbound_payload(row, version)
    _check(v1_inbound() if version == "v1" else beta_inbound(), payload)
    assert ISO_MS.match(payload["timestamp"]) and payload["message_uuid"] == row["uuid"]


LOCATION = {  # API.md: `location: {lat, long, name?, address?}`
    "type": "object", "required": ["lat", "long"], "additionalProperties": False,
    "properties": {"lat": {"type": "number"}, "long": {"type": "number"}, "name": {"type": "string"}, "address": {"type": "string"}},
}


@FAST
@given(st.sampled_from(["messenger", "viber_service"]), st.floats(-90, 90), st.floats(-180, 180), st.none() | text, times)
def test_inbound_locations_follow_api_md(channel: str, lat: float, long: float, name: str | None, at: float) -> None:
    location = {"lat": lat, "long": long, **({"name": name} if name else {})}
    row = {"uuid": str(uuid.uuid4()), "channel": channel, "to_addr": "PAGE", "from_addr": "USER", "created_at": at,
           "message_type": "location", "payload": {"location": location}}
    v1, beta = inbound_payload(row, "v1"), inbound_payload(row, "v0.1")
    assert v1["message_type"] == "location" and Draft202012Validator(LOCATION).is_valid(v1["location"])
    assert beta["message"]["content"] == {"type": "location", "location": location}


def test_amendments_are_needed() -> None:
    """Each amendment is there because the vendor file, as it stands, refuses a payload."""
    raw = yaml.safe_load((REFERENCE / "messages-v1-draft.yml").read_text())
    assert "message" in raw["components"]["schemas"]["baseMessageType"]["required"]
    assert "usage" in yaml.safe_load((REFERENCE / "messages-beta.yml").read_text())["components"]["schemas"]["SmsInbound"]["required"]
    assert len(AMENDMENTS) == 3

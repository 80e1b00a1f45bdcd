"""Fuzzing the provider callbacks past their signatures.

Every body is signed as the provider signs it (Messenger: `X-Hub-Signature-256` with
the link's app secret; Viber: `X-Viber-Content-Signature` with its auth token; WhatsApp:
`X-Hub-Signature-256` with the WhatsApp link's app secret) and
POSTed to a real server with one link of each. Bodies are arbitrary JSON, real
callbacks (the shapes of test_messenger.py and test_viber.py) with a few of their
fields replaced, removed or added, bytes that are not JSON, and values nested 300
deep. No answer may be a 5xx, and the server must stay up. MISSIVE_FUZZ_EXAMPLES
(200 a test by default) makes a longer hunt.

A few cases are pinned: a well-signed event we do not handle is acknowledged (200),
so Facebook and Viber keep the webhook; a body that is not the provider's shape is 400.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from missive.store import accounts as account_store
from missive.store.db import make_engine
from missive.store.links import create_link
from tests.harness import Server, missive_json, provisioned_server, settings_for

PAGE, PAGE_TOKEN, APP_SECRET, VERIFY = "1122334455", "EAAGpagetoken-fuzz", "app-secret-fuzz", "verify-fuzz"
SERVICE, AUTH_TOKEN, USER = "fuzz-bot", "445da6az1s345z78-fuzz-e0vc5fva17480im9", "01234567890A="
PSID = "psid-fuzz"
DEPTH = 300
FUZZ = settings(
    max_examples=int(os.environ.get("MISSIVE_FUZZ_EXAMPLES", "200")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- real callbacks, the seeds of the mutations ----------------------------------------------


def messaging(**event: Any) -> dict:
    return {"object": "page", "entry": [{"id": PAGE, "time": 1700000000000, "messaging": [
        {"sender": {"id": PSID}, "recipient": {"id": PAGE}, "timestamp": 1700000000000, **event}]}]}


MESSENGER = [
    messaging(message={"mid": "m_text", "text": "hello"}),
    messaging(message={"mid": "m_img", "attachments": [{"type": "image", "payload": {"url": "https://cdn.fb/a.jpg"}}]}),
    messaging(message={"mid": "m_loc", "attachments": [
        {"type": "location", "title": "Pinned", "payload": {"coordinates": {"lat": 51.5, "long": -0.12}}}]}),
    messaging(message={"mid": "m_link", "text": "https://x.org", "attachments": [
        {"type": "fallback", "payload": None, "title": "X", "URL": "https://x.org"}]}),
    messaging(message={"mid": "m_sticker", "attachments": [{"type": "template", "payload": {}}]}),
    messaging(message={"mid": "m_echo", "text": "ours", "is_echo": True}),
    messaging(delivery={"mids": ["m_a", "m_b"], "watermark": 1700000000000}),
    messaging(delivery={"watermark": 1700000000000}),
    messaging(read={"watermark": 1700000000500}),
    messaging(postback={"title": "Start", "payload": "GET_STARTED"}),
]

SENDER = {"id": USER, "name": "Jo", "avatar": "https://a.example/j.png", "country": "GB", "language": "en", "api_version": 8}
TOKEN = 4912661846655238145


def viber_message(message: dict) -> dict:
    return {"event": "message", "timestamp": 1457764197627, "message_token": TOKEN, "sender": SENDER, "message": message}


VIBER = [
    {"event": "delivered", "timestamp": 1, "message_token": TOKEN, "user_id": USER},
    {"event": "seen", "timestamp": 1, "message_token": TOKEN, "user_id": USER},
    {"event": "failed", "timestamp": 1, "message_token": TOKEN, "user_id": USER, "desc": "failure description"},
    viber_message({"type": "text", "text": "hi"}),
    viber_message({"type": "picture", "media": "https://m.example/p.jpg", "text": "cap", "size": 10}),
    viber_message({"type": "video", "media": "https://m.example/v.mp4", "size": 10, "duration": 3}),
    viber_message({"type": "file", "media": "https://m.example/f.pdf", "size": 10, "file_name": "f.pdf"}),
    viber_message({"type": "location", "location": {"lat": 50.76891, "lon": 6.11499}}),
    viber_message({"type": "contact", "contact": {"name": "Jo", "phone_number": "+447700900123"}}),
    viber_message({"type": "sticker", "sticker_id": 46105}),
    {"event": "subscribed", "timestamp": 1, "user": SENDER, "message_token": TOKEN},
    {"event": "unsubscribed", "timestamp": 1, "user_id": USER, "message_token": TOKEN},
    {"event": "conversation_started", "timestamp": 1, "message_token": TOKEN, "type": "open", "user": SENDER, "subscribed": False},
    {"event": "webhook", "timestamp": 1, "message_token": TOKEN},
]

WA_PHONE, WA_TOKEN, WA_SECRET, WA_USER = "106540352242922", "EAAGwa-fuzz", "wa-secret-fuzz", "447700900001"


def whatsapp(**value: Any) -> dict:
    return {"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550001111", "phone_number_id": WA_PHONE},
        **value}}]}]}


def wa_message(kind: str, **content: Any) -> dict:
    return whatsapp(contacts=[{"profile": {"name": "Jo"}, "wa_id": WA_USER}],
                    messages=[{"from": WA_USER, "id": f"wamid.{kind}", "timestamp": "1750857384", "type": kind, **content}])


WHATSAPP = [
    wa_message("text", text={"body": "hi"}),
    wa_message("image", image={"id": "1001", "mime_type": "image/jpeg", "sha256": "x", "caption": "c"}),
    wa_message("document", document={"id": "1002", "mime_type": "application/pdf", "filename": "f.pdf"}),
    wa_message("location", location={"latitude": 51.5, "longitude": -0.12, "name": "N", "address": "A"}),
    wa_message("contacts", contacts=[{"name": {"formatted_name": "Bo"}, "phones": [{"phone": "+1 555", "wa_id": "1555"}]}]),
    wa_message("reaction", reaction={"message_id": "wamid.ours", "emoji": "x"}),
    wa_message("button", button={"payload": "STOP", "text": "Stop"}, context={"from": "15550001111", "id": "wamid.t"}),
    wa_message("interactive", interactive={"type": "list_reply", "list_reply": {"id": "r", "title": "R", "description": "D"}}),
    wa_message("unsupported", errors=[{"code": 131051, "title": "Message type unknown"}]),
    whatsapp(statuses=[{"id": "wamid.s", "status": "delivered", "timestamp": "1", "recipient_id": WA_USER,
                        "conversation": {"id": "c", "origin": {"type": "service"}},
                        "pricing": {"billable": True, "pricing_model": "CBP", "category": "service"}}]),
    whatsapp(statuses=[{"id": "wamid.s", "status": "failed", "timestamp": "1", "recipient_id": WA_USER,
                        "errors": [{"code": 131026, "title": "Message undeliverable"}]}]),
]

# Field names the parsers read, for the mutation that adds one where it was missing.
FIELDS = sorted({
    "object", "entry", "id", "messaging", "sender", "message", "mid", "text", "is_echo", "attachments", "type",
    "payload", "url", "coordinates", "lat", "long", "title", "delivery", "mids", "watermark", "read",
    "event", "message_token", "user_id", "user", "desc", "media", "location", "lon", "address", "contact",
    "phone_number", "changes", "value", "metadata", "phone_number_id", "display_phone_number", "contacts", "messages",
    "statuses", "wa_id", "profile", "name", "from", "body", "caption", "mime_type", "latitude", "longitude", "reaction",
    "emoji", "message_id", "button", "interactive", "button_reply", "list_reply", "context", "status", "errors", "code",
    "conversation", "origin", "pricing", "category", "field",
})


# --- generators --------------------------------------------------------------------------------

# Strings that trip storage rather than parsing: NUL, and ids longer than their columns.
awkward = st.sampled_from(["", "\x00", "m_\x00", "9" * 65, "m_" + "x" * 250, PAGE, PSID, USER, "page", "message"])
scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80) | awkward
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | st.sampled_from(FIELDS), inner, max_size=4),
    max_leaves=16,
)


def paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*prefix, index))


def at(value: Any, path: tuple) -> Any:
    for step in path:
        value = value[step]
    return value


def replaced(value: Any, path: tuple, new: Any) -> Any:
    """A copy of `value` with `new` at `path`."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: replaced(value[head], rest, new)}
    copy = list(value)
    copy[head] = replaced(value[head], rest, new)
    return copy


def without(container: dict | list, step: Any) -> dict | list:
    if isinstance(container, dict):
        return {k: v for k, v in container.items() if k != step}
    return [v for i, v in enumerate(container) if i != step]


@st.composite
def mutations(draw: st.DrawFn, seeds: list[dict]) -> Any:
    """A real callback with one to three of its values replaced, removed or added to."""
    body: Any = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(paths(body))))
        target = at(body, path)
        how = draw(st.sampled_from(["replace", "remove", "add"]))
        if how == "remove" and path:
            body = replaced(body, path[:-1], without(at(body, path[:-1]), path[-1]))
        elif how == "add" and isinstance(target, dict):
            body = replaced(body, path, {**target, draw(st.sampled_from(FIELDS)): draw(json_values)})
        else:
            body = replaced(body, path, draw(json_values))
    return body


def nested(inner: Any, depth: int = DEPTH, key: str | None = None) -> Any:
    for _ in range(depth):
        inner = [inner] if key is None else {key: inner}
    return inner


def deep_bodies(seeds: list[dict]) -> list[Any]:
    """Values 300 deep as the whole body, and in place of each value of each real callback."""
    bodies: list[Any] = [nested(1), nested({}, key="a"), nested(None, key="entry"), nested("x", key="message")]
    for seed in seeds[:4]:
        for path in paths(seed):
            if path:
                bodies.append(replaced(seed, path, nested(path[-1] if isinstance(path[-1], str) else 0)))
                bodies.append(replaced(seed, path, nested(1, key=str(path[-1]))))
    return bodies


# --- posting --------------------------------------------------------------------------------------


def encoded(body: Any) -> bytes:
    # The standard library, not orjson: it writes integers of any size, which orjson then reads.
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def post_messenger(client: httpx.Client, body: Any) -> httpx.Response:
    raw = encoded(body)
    signature = "sha256=" + hmac.new(APP_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    return client.post("/inbound/messenger", content=raw,
                       headers={"content-type": "application/json", "x-hub-signature-256": signature})


def post_viber(client: httpx.Client, body: Any) -> httpx.Response:
    raw = encoded(body)
    signature = hmac.new(AUTH_TOKEN.encode(), raw, hashlib.sha256).hexdigest()
    return client.post(f"/inbound/viber/{SERVICE}", content=raw,
                       headers={"content-type": "application/json", "x-viber-content-signature": signature})


def post_whatsapp(client: httpx.Client, body: Any) -> httpx.Response:
    raw = encoded(body)
    signature = "sha256=" + hmac.new(WA_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    return client.post("/inbound/whatsapp", content=raw,
                       headers={"content-type": "application/json", "x-hub-signature-256": signature})


def _whatsapp_link(data_dir: Path, api_key: str, app_id: str) -> None:
    async def work() -> None:
        engine = make_engine(settings_for(data_dir))
        try:
            account = await account_store.get_by_api_key(engine, api_key)
            assert account is not None
            await create_link(engine, account["id"], "whatsapp", "whatsapp", "wa", {
                "phone_number_id": WA_PHONE, "waba_id": "102290129340398", "access_token": WA_TOKEN,
                "app_secret": WA_SECRET, "verify_token": "wa-verify"}, app_id)
        finally:
            await engine.dispose()

    asyncio.run(work())


@dataclass
class Hub:
    server: Server
    client: httpx.Client  # one connection kept open: thousands of posts


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A server with a Messenger link, a Viber link and a WhatsApp link (whose media
    fetches find nothing listening: the fuzz never reaches Meta)."""
    data_dir = tmp_path_factory.mktemp("fuzz-callbacks")
    server = provisioned_server(data_dir, env={"MISSIVE_DISPATCH_IN_SERVE": "false", "MISSIVE_GRAPH_API_URL": "http://127.0.0.1:9",
                                               "MISSIVE_MEDIA_FETCH_TIMEOUT": "0.5"})
    try:
        missive_json(data_dir, "channel", "add", "messenger", "--page-id", PAGE, "--page-token", PAGE_TOKEN,
                     "--app-secret", APP_SECRET, "--verify-token", VERIFY, "--app", server.app_id)
        missive_json(data_dir, "channel", "add", "viber", "--service-id", SERVICE, "--auth-token", AUTH_TOKEN)
        _whatsapp_link(data_dir, server.api_key, server.app_id)
        with server.client() as client:
            yield Hub(server, client)
    finally:
        server.stop()


def assert_handled(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.request.content[:2000], response.text)


# --- the fuzzers ------------------------------------------------------------------------------------

anything = json_values | st.binary(max_size=64)


@FUZZ
@given(body=mutations(MESSENGER) | anything)
def test_messenger_callbacks_never_fail(hub: Hub, body: Any) -> None:
    assert_handled(post_messenger(hub.client, body))


@FUZZ
@given(body=mutations(VIBER) | anything)
def test_viber_callbacks_never_fail(hub: Hub, body: Any) -> None:
    assert_handled(post_viber(hub.client, body))


@FUZZ
@given(body=mutations(WHATSAPP) | anything)
def test_whatsapp_callbacks_never_fail(hub: Hub, body: Any) -> None:
    assert_handled(post_whatsapp(hub.client, body))


POSTS = {"messenger": (post_messenger, MESSENGER), "viber": (post_viber, VIBER), "whatsapp": (post_whatsapp, WHATSAPP)}


@pytest.mark.parametrize("channel", ["messenger", "viber", "whatsapp"])
def test_bodies_nested_300_deep(hub: Hub, channel: str) -> None:
    post, seeds = POSTS[channel]
    for body in deep_bodies(seeds):
        assert_handled(post(hub.client, body))


# --- what each kind of body gets ---------------------------------------------------------------------

PINNED: dict[str, tuple[str, Any, int]] = {
    "messenger-postback-acknowledged": ("messenger", messaging(postback={"payload": "X"}), 200),
    "messenger-other-object-acknowledged": (
        "messenger", {"object": "instagram", "entry": [{"id": "17841400000", "time": 1, "changes": []}]}, 200),
    "messenger-a-list": ("messenger", [], 400),
    "messenger-no-object": ("messenger", {"entry": []}, 400),
    "messenger-entry-a-number": ("messenger", {"object": "page", "entry": 5}, 400),
    "messenger-messaging-an-object": ("messenger", {"object": "page", "entry": [{"id": PAGE, "messaging": {"sender": "x"}}]}, 400),
    "messenger-sender-a-string": ("messenger", messaging(sender="x"), 400),
    "messenger-mids-a-number": ("messenger", messaging(delivery={"mids": 7}), 400),
    "messenger-watermark-a-string": ("messenger", messaging(read={"watermark": "soon"}), 400),
    "viber-client-status-acknowledged": ("viber", {"event": "client_status", "timestamp": 1}, 200),
    "viber-action-acknowledged": ("viber", {"event": "action", "timestamp": 1, "message_token": TOKEN, "user": SENDER}, 200),
    "viber-a-list": ("viber", [], 400),
    "viber-event-a-number": ("viber", {"event": 3}, 400),
    "viber-token-a-list": ("viber", {"event": "delivered", "message_token": [TOKEN], "user_id": USER}, 400),
    "viber-latitude-a-string": ("viber", viber_message({"type": "location", "location": {"lat": "north", "lon": 6.1}}), 400),
    "viber-sender-id-too-long": ("viber", {**viber_message({"type": "text", "text": "hi"}), "sender": {"id": "x" * 200}}, 400),
    "whatsapp-account-update-acknowledged": ("whatsapp", {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
        {"field": "account_update", "value": {"metadata": {"phone_number_id": WA_PHONE}, "event": "VERIFIED_ACCOUNT"}}]}]}, 200),
    "whatsapp-deleted-status-acknowledged": ("whatsapp", whatsapp(statuses=[{"id": "wamid.d", "status": "deleted"}]), 200),
    "whatsapp-a-list": ("whatsapp", [], 400),
    "whatsapp-changes-an-object": ("whatsapp", {"object": "whatsapp_business_account", "entry": [{"changes": {}}]}, 400),
    "whatsapp-text-a-number": ("whatsapp", wa_message("text", text={"body": 5}), 400),
    "whatsapp-wamid-too-long": ("whatsapp", whatsapp(messages=[{"from": WA_USER, "id": "w" * 200, "type": "text",
                                                                 "text": {"body": "x"}}]), 400),
    "whatsapp-latitude-a-string": ("whatsapp", wa_message("location", location={"latitude": "north", "longitude": 0}), 400),
}


@pytest.mark.parametrize("name", list(PINNED))
def test_what_a_signed_body_gets(hub: Hub, name: str) -> None:
    channel, body, status = PINNED[name]
    response = POSTS[channel][0](hub.client, body)
    assert response.status_code == status, response.text


def test_the_server_stayed_up(hub: Hub) -> None:
    """Last in the file: after every body above, the server answers and logged no crash."""
    assert hub.server.process.poll() is None, hub.server.log()
    assert hub.client.get("/health").status_code == 200
    assert "Traceback" not in hub.server.log(), hub.server.log()[-5000:]

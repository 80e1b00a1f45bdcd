"""WhatsApp callbacks, inbound media and read receipts.

A table for the parser (Meta's webhook body in, the events or the refusal out), then end
to end: a real server whose MISSIVE_GRAPH_API_URL is a fake Cloud API (media and read
receipts), signed callbacks POSTed to /inbound/whatsapp, a real webhook receiver.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import sqlalchemy

from missive.channels.base import InboundEvent, StatusEvent
from missive.channels.whatsapp_callbacks import (
    Inbound,
    MalformedWhatsAppWebhook,
    Media,
    parse_webhook,
    phone_number_ids,
)
from missive.store import accounts as account_store
from missive.store.db import make_engine
from missive.store.links import create_link
from missive.store.tables import messages, provider_refs
from tests.fakes.fake_whatsapp_media import FakeWhatsappMedia
from tests.fakes.webhook_receiver import Hook, WebhookReceiver
from tests.harness import (
    Server,
    provisioned_server,
    query,
    send_webhooks_to,
    settings_for,
    sync_engine,
)

PHONE, WABA, TOKEN, SECRET, VERIFY = "106540352242922", "102290129340398", "EAAGwa-token-s3cr3t", "wa-app-secret-1", "wa-verify"
BUSINESS = "15550001111"
USER = "447700900001"


def change(phone: str = PHONE, **value: Any) -> dict:
    return {"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": BUSINESS, "phone_number_id": phone}, **value}}


def webhook(*changes: dict) -> dict:
    return {"object": "whatsapp_business_account", "entry": [{"id": WABA, "changes": list(changes)}]}


def from_user(wamid: str, kind: str, user: str = USER, **content: Any) -> dict:
    return {"contacts": [{"profile": {"name": "Ada"}, "wa_id": user}],
            "messages": [{"from": user, "id": wamid, "timestamp": "1750857384", "type": kind, **content}]}


def status(wamid: str, state: str, **extra: Any) -> dict:
    return {"statuses": [{"id": wamid, "status": state, "timestamp": "1750857384", "recipient_id": USER, **extra}]}


def sign(raw: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


PROFILE = {"profile": {"name": "Ada"}}


def inbound(wamid: str, kind: str, payload: dict, media: Media | None = None, quoted: str | None = None) -> tuple[Inbound, str]:
    event = InboundEvent("whatsapp", BUSINESS, USER, kind, {**payload, **PROFILE}, wamid)
    return Inbound(event, 1750857384.0, media, quoted), f"msg:{wamid}"


@dataclass(frozen=True)
class In:
    body: Any
    events: list | None  # None: the body is refused (MalformedWhatsAppWebhook)


JPEG = Media(id="2001", mime_type="image/jpeg", caption="cat")
CONVERSATION = {"id": "a75d17ad", "origin": {"type": "service"}}

INBOUND: dict[str, In] = {
    "text": In(webhook(change(**from_user("wamid.t", "text", text={"body": "hello"}))),
               [inbound("wamid.t", "text", {"text": "hello"})]),
    "image-with-caption": In(webhook(change(**from_user("wamid.i", "image", image={"id": "2001", "mime_type": "image/jpeg",
                                                                                    "sha256": "x", "caption": "cat"}))),
                             [inbound("wamid.i", "image", {"image": {"caption": "cat"}}, JPEG)]),
    "document-is-file": In(webhook(change(**from_user("wamid.d", "document", document={
        "id": "2002", "mime_type": "application/pdf", "filename": "a.pdf", "caption": "bill"}))),
        [inbound("wamid.d", "file", {"file": {"caption": "bill"}},
                 Media(id="2002", mime_type="application/pdf", caption="bill", filename="a.pdf"))]),
    **{kind: In(webhook(change(**from_user(f"wamid.{kind}", kind, **{kind: {"id": "2003", "mime_type": "x/y"}}))),
                [inbound(f"wamid.{kind}", kind, {kind: {}}, Media(id="2003", mime_type="x/y"))])
       for kind in ("audio", "video", "sticker")},
    "location": In(webhook(change(**from_user("wamid.l", "location", location={
        "latitude": 51.5, "longitude": -0.12, "name": "Pinned", "address": "1 Road"}))),
        [inbound("wamid.l", "location", {"location": {"lat": 51.5, "long": -0.12, "name": "Pinned", "address": "1 Road"}})]),
    "contacts-unsupported": In(webhook(change(**from_user("wamid.c", "contacts", contacts=[
        {"name": {"formatted_name": "Bo"}, "phones": [{"phone": "+1 555", "wa_id": "1555", "type": "CELL"}]}]))),
        [inbound("wamid.c", "unsupported", {})]),
    "reaction": In(webhook(change(**from_user("wamid.r", "reaction", reaction={"message_id": "wamid.ours", "emoji": "👍"}))),
                   [inbound("wamid.r", "reaction", {"reaction": {"action": "react", "emoji": "👍"}}, quoted="wamid.ours")]),
    "reaction-removed": In(webhook(change(**from_user("wamid.r2", "reaction", reaction={"message_id": "wamid.ours"}))),
                           [inbound("wamid.r2", "reaction", {"reaction": {"action": "unreact"}}, quoted="wamid.ours")]),
    "template-button": In(webhook(change(**from_user("wamid.b", "button", button={"payload": "STOP", "text": "Stop"},
                                                     context={"from": BUSINESS, "id": "wamid.tpl"}))),
                          [inbound("wamid.b", "button", {"button": {"payload": "STOP", "text": "Stop"}}, quoted="wamid.tpl")]),
    "button-reply": In(webhook(change(**from_user("wamid.br", "interactive", interactive={
        "type": "button_reply", "button_reply": {"id": "yes", "title": "Yes"}}))),
        [inbound("wamid.br", "reply", {"reply": {"id": "yes", "title": "Yes"}})]),
    "list-reply": In(webhook(change(**from_user("wamid.lr", "interactive", interactive={
        "type": "list_reply", "list_reply": {"id": "r1", "title": "Row", "description": "First"}}))),
        [inbound("wamid.lr", "reply", {"reply": {"id": "r1", "title": "Row", "description": "First"}})]),
    "unsupported": In(webhook(change(**from_user("wamid.u", "unsupported", errors=[{"code": 131051}]))),
                      [inbound("wamid.u", "unsupported", {})]),
    "sent-with-conversation": In(webhook(change(**status("wamid.s", "sent", conversation=CONVERSATION,
                                                         pricing={"billable": True, "pricing_model": "CBP", "category": "service"}))),
                                 [(StatusEvent("wamid.s", "submitted", details={"whatsapp": {"conversation": CONVERSATION}}), "sent:wamid.s")]),
    "delivered-per-message-pricing": In(
        webhook(change(**status("wamid.s", "delivered", pricing={"billable": True, "pricing_model": "PMP", "category": "utility"}))),
        [(StatusEvent("wamid.s", "delivered", details={"whatsapp": {"conversation": {"origin": {"type": "utility"}}}}),
          "delivered:wamid.s")]),
    "read": In(webhook(change(**status("wamid.s", "read"))), [(StatusEvent("wamid.s", "read"), "read:wamid.s")]),
    "failed-undeliverable": In(webhook(change(**status("wamid.f", "failed", errors=[{"code": 131026, "title": "Message undeliverable"}]))),
                               [(StatusEvent("wamid.f", "undeliverable", 1300, "Message undeliverable (WhatsApp error 131026)"), "failed:wamid.f")]),
    "failed-window": In(webhook(change(**status("wamid.f", "failed", errors=[{"code": 131047, "title": "Re-engagement message"}]))),
                        [(StatusEvent("wamid.f", "rejected", 1340, "Re-engagement message (WhatsApp error 131047)"), "failed:wamid.f")]),
    "failed-template": In(webhook(change(**status("wamid.f", "failed", errors=[{"code": 132001, "title": "Template does not exist"}]))),
                          [(StatusEvent("wamid.f", "rejected", 1022, "Template does not exist (WhatsApp error 132001)"), "failed:wamid.f")]),
    "failed-unknown": In(webhook(change(**status("wamid.f", "failed", errors=[{"code": 1, "title": "Odd"}]))),
                         [(StatusEvent("wamid.f", "rejected", 1330, "Odd (WhatsApp error 1)"), "failed:wamid.f")]),
    "deleted-ignored": In(webhook(change(**status("wamid.x", "deleted"))), []),
    "other-field-ignored": In(webhook({"field": "account_update", "value": {"metadata": {"phone_number_id": PHONE}}}), []),
    "other-object-ignored": In({"object": "page", "entry": [{"id": "1", "messaging": []}]}, None),
    "no-entry": In({"object": "whatsapp_business_account"}, None),
    "phone-id-a-number": In(webhook({"field": "messages", "value": {"metadata": {"phone_number_id": 106540352242922}}}), None),
    "text-body-a-list": In(webhook(change(**from_user("wamid.t", "text", text={"body": ["x"]}))), None),
    "wamid-with-nul": In(webhook(change(**from_user("wamid.\u0000", "text", text={"body": "x"}))), None),
    "latitude-a-string": In(webhook(change(**from_user("wamid.l", "location", location={"latitude": "51", "longitude": 0}))), None),
}


@pytest.mark.parametrize("name", list(INBOUND))
def test_parse(name: str) -> None:
    case = INBOUND[name]
    if name == "other-object-ignored":
        # A page webhook has no phone numbers, and nothing of it is WhatsApp's.
        assert phone_number_ids(case.body) == [] and parse_webhook(case.body) == {}
        return
    if case.events is None:
        with pytest.raises(MalformedWhatsAppWebhook):
            phone_number_ids(case.body)
            parse_webhook(case.body)
        return
    assert phone_number_ids(case.body) == [PHONE]
    assert parse_webhook(case.body).get(PHONE, []) == case.events


def test_business_number_of_the_link_wins_over_the_display_number() -> None:
    body = webhook(change(**from_user("wamid.t", "text", text={"body": "hi"})))
    [(item, _)] = parse_webhook(body, {PHONE: "447700900999"})[PHONE]
    assert isinstance(item, Inbound) and item.event.to == "447700900999"


# -- end to end ------------------------------------------------------------------------------

FAST = {
    "MISSIVE_WEBHOOK_BACKOFF_BASE": "0.05",
    "MISSIVE_POLL_INTERVAL": "0.05",
    "MISSIVE_PROVIDER_TIMEOUT": "2",
    "MISSIVE_MEDIA_MAX_BYTES": "5000",
    "MISSIVE_MEDIA_FETCH_TIMEOUT": "1",
    "MISSIVE_MEDIA_PRUNE_INTERVAL": "0.2",
}
OTHER_SECRET = "wa-app-secret-2"


@dataclass
class Live:
    server: Server
    cloud: FakeWhatsappMedia
    receiver: WebhookReceiver
    link: dict
    other: dict  # the second account: its credentials and its link to the same number

    def hooks(self, path: str, **match: Any) -> list[Hook]:
        return [h for h in self.receiver.snapshot(accepted_only=True)
                if h.path == path and all(h.json.get(k) == v for k, v in match.items())]

    def wait_hooks(self, path: str, count: int, **match: Any) -> list[Hook]:
        self.receiver.wait_for(lambda _: len(self.hooks(path, **match)) >= count, timeout=15)
        return self.hooks(path, **match)

    def post(self, body: Any, secret: str | None = SECRET, signature: str | None = None) -> httpx.Response:
        raw = json.dumps(body).encode()
        headers = {"content-type": "application/json"}
        if signature is not None or secret is not None:
            headers["x-hub-signature-256"] = signature if signature is not None else sign(raw, secret or "")
        with self.server.client() as client:
            return client.post("/inbound/whatsapp", content=raw, headers=headers)


def _setup(data_dir: Path, server: Server, receiver: WebhookReceiver) -> tuple[dict, dict]:
    """The first account's link (its application's webhooks on the receiver) and a second
    account with its own link to the same phone-number id, under another app secret."""

    async def work() -> tuple[dict, dict]:
        engine = make_engine(settings_for(data_dir))
        try:
            link = await create_link(engine, (await account_store.get_by_api_key(engine, server.api_key))["id"], "whatsapp",
                                     "whatsapp", "wa", {"phone_number_id": PHONE, "waba_id": WABA, "access_token": TOKEN,
                                                        "app_secret": SECRET, "verify_token": VERIFY}, server.app_id)
            second = await account_store.create_account(engine)
            await account_store.update_webhooks(engine, second.api_key, receiver.url("/status2"), receiver.url("/inbound2"))
            other = await create_link(engine, second.id, "whatsapp", "whatsapp", "wa2", {
                "phone_number_id": PHONE, "waba_id": WABA, "access_token": "EAAGother", "app_secret": OTHER_SECRET,
                "verify_token": "other-verify"})
        finally:
            await engine.dispose()
        return link, {"api_key": second.api_key, "api_secret": second.api_secret, "link": other}

    return asyncio.run(work())


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data_dir: Path = tmp_path_factory.mktemp("whatsapp-inbound")
    with FakeWhatsappMedia(token=TOKEN) as cloud, WebhookReceiver() as receiver:
        server = provisioned_server(data_dir, env={**FAST, "MISSIVE_GRAPH_API_URL": cloud.url})
        try:
            send_webhooks_to(server, receiver)
            link, other = _setup(data_dir, server, receiver)
            yield Live(server, cloud, receiver, link, other)
        finally:
            server.stop()


@pytest.mark.parametrize(
    ("params", "status", "text"),
    [
        ({"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "1158201444"}, 200, "1158201444"),
        ({"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"}, 403, None),
        ({"hub.mode": "unsubscribe", "hub.verify_token": VERIFY, "hub.challenge": "1"}, 403, None),
        ({}, 403, None),
    ],
)
def test_subscription_handshake(live: Live, params: dict, status: int, text: str | None) -> None:
    with live.server.client() as client:
        response = client.get("/inbound/whatsapp", params=params)
    assert response.status_code == status
    if text is not None:
        assert response.text == text


def test_inbound_messages_become_v1_webhooks(live: Live) -> None:
    user = "447700900101"
    body = webhook(change(
        contacts=[{"profile": {"name": "Ada"}, "wa_id": user}],
        messages=[
            {"from": user, "id": "wamid.e2e.text", "timestamp": "1750857384", "type": "text", "text": {"body": "hello"}},
            {"from": user, "id": "wamid.e2e.loc", "timestamp": "1750857385", "type": "location",
             "location": {"latitude": 48.85, "longitude": 2.35, "name": "Paris"}},
            {"from": user, "id": "wamid.e2e.contacts", "timestamp": "1750857386", "type": "contacts",
             "contacts": [{"name": {"formatted_name": "Bo"}}]},
            {"from": user, "id": "wamid.e2e.reply", "timestamp": "1750857387", "type": "interactive",
             "interactive": {"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes"}}},
        ]))
    assert live.post(body).status_code == 200
    assert live.post(body).status_code == 200  # Meta resends: handled once
    live.wait_hooks("/inbound", 4, **{"from": user})
    time.sleep(0.4)
    hooks = live.hooks("/inbound", **{"from": user})
    assert len(hooks) == 4
    by_type = {h.json["message_type"]: h.json for h in hooks}
    assert by_type["text"]["text"] == "hello"
    assert by_type["location"]["location"] == {"lat": 48.85, "long": 2.35, "name": "Paris"}
    assert by_type["reply"]["reply"] == {"id": "yes", "title": "Yes"}
    assert "unsupported" in by_type
    for payload in by_type.values():
        assert (payload["channel"], payload["to"], payload["from"]) == ("whatsapp", BUSINESS, user)
        assert payload["profile"] == {"name": "Ada"} and payload["context_status"] == "none"
    # The user wrote: their window is open from Meta's time of their last message.
    assert query(live.server.data_dir, "SELECT link_id, last_inbound_at FROM conversation_windows WHERE user_id = :u",
                 u=user) == [(live.link["id"], 1750857387.0)]
    # The second account's link to the same number, under another secret, got nothing.
    assert live.hooks("/inbound2") == []


def _insert_sent(data_dir: Path, link_id: str, wamid: str, to: str, account_id: str, app_id: str) -> str:
    """A message this link sent, with its wamid as provider reference (what the send side records)."""
    message_uuid = f"00000000-0000-4000-8000-{hashlib.sha256(wamid.encode()).hexdigest()[:12]}"

    async def work() -> None:
        engine = make_engine(settings_for(data_dir))
        try:
            now = time.time()
            async with engine.begin() as conn:
                await conn.execute(messages.insert().values(
                    uuid=message_uuid, account_id=account_id, application_id=app_id, channel="whatsapp", message_type="text",
                    to_addr=to, from_addr=BUSINESS, body={"text": "hi"}, status="submitted", webhook_version="v1",
                    created_at=now, updated_at=now, link_id=link_id, link_kind="whatsapp"))
                await conn.execute(provider_refs.insert().values(link_id=link_id, ref=wamid, message_uuid=message_uuid, created_at=now))
        finally:
            await engine.dispose()

    asyncio.run(work())
    return message_uuid


def test_statuses_reach_the_status_url_with_the_conversation(live: Live) -> None:
    user = "447700900202"
    delivered = _insert_sent(live.server.data_dir, live.link["id"], "wamid.out.1", user, live.link["account_id"], live.server.app_id)
    failed = _insert_sent(live.server.data_dir, live.link["id"], "wamid.out.2", user, live.link["account_id"], live.server.app_id)
    body = webhook(change(statuses=[
        {"id": "wamid.out.1", "status": "delivered", "timestamp": "1750857384", "recipient_id": user,
         "conversation": {"id": "conv-1", "origin": {"type": "marketing"}},
         "pricing": {"billable": True, "pricing_model": "CBP", "category": "marketing"}},
        {"id": "wamid.out.2", "status": "failed", "timestamp": "1750857384", "recipient_id": user,
         "errors": [{"code": 131026, "title": "Message undeliverable"}]},
    ]))
    # The other account's secret verifies for its own link: the first account's message is not its to name.
    assert live.post(body, OTHER_SECRET).status_code == 200
    assert live.post(body).status_code == 200
    [hook] = live.wait_hooks("/status", 1, message_uuid=delivered)
    assert hook.json["status"] == "delivered"
    assert hook.json["whatsapp"] == {"conversation": {"id": "conv-1", "origin": {"type": "marketing"}}}
    [hook] = live.wait_hooks("/status", 1, message_uuid=failed)
    error = hook.json["error"]  # the v1 error's code is its `title` ({code, reason} before)
    assert (hook.json["status"], str(error.get("title", error.get("code")))) == ("undeliverable", "1300")
    read = webhook(change(**status("wamid.out.1", "read")))
    assert live.post(read).status_code == 200
    live.wait_hooks("/status", 2, message_uuid=delivered)
    assert [h.json["status"] for h in live.hooks("/status", message_uuid=delivered)] == ["delivered", "read"]
    assert live.hooks("/status2") == []


def test_a_reply_names_the_message_it_quotes(live: Live) -> None:
    user = "447700900303"
    ours = _insert_sent(live.server.data_dir, live.link["id"], "wamid.out.q", user, live.link["account_id"], live.server.app_id)
    body = webhook(change(**from_user("wamid.in.q", "reaction", user, reaction={"message_id": "wamid.out.q", "emoji": "❤"})))
    assert live.post(body).status_code == 200
    [hook] = live.wait_hooks("/inbound", 1, **{"from": user})
    assert hook.json["reaction"] == {"action": "react", "emoji": "❤"}
    assert hook.json["context"] == {"message_uuid": ours, "message_from": BUSINESS}
    assert hook.json["context_status"] == "available"


def _media_hook(live: Live, user: str, wamid: str, kind: str, media_id: str, **content: Any) -> Hook:
    body = webhook(change(**from_user(wamid, kind, user, **{kind: {"id": media_id, "mime_type": "image/jpeg", **content}})))
    assert live.post(body).status_code == 200
    [hook] = live.wait_hooks("/inbound", 1, **{"from": user})
    return hook


def test_inbound_media_is_fetched_and_served(live: Live) -> None:
    jpeg = b"\xff\xd8\xff\xe0" + b"cat" * 100
    live.cloud.add_media("3001", jpeg, "image/jpeg")
    hook = _media_hook(live, "447700900404", "wamid.media.1", "image", "3001", caption="a cat")
    assert hook.json["message_type"] == "image" and hook.json["image"]["caption"] == "a cat"
    url = hook.json["image"]["url"]
    assert url.startswith(live.server.url + "/v1/media/")
    fetches = [r for r in live.cloud.snapshot() if r.path in ("/v19.0/3001", "/download/3001")]
    assert [r.authorization for r in fetches] == [f"Bearer {TOKEN}"] * 2
    media_path = urlsplit(url).path
    with httpx.Client(timeout=10) as client:
        # The signed link, as the webhook gives it, needs nothing more.
        signed = client.get(url)
        assert signed.status_code == 200 and signed.content == jpeg
        assert signed.headers["content-type"] == "image/jpeg"
        assert signed.headers["x-content-type-options"] == "nosniff"
        # The account's own credentials, without a signature.
        assert client.get(live.server.url + media_path, auth=live.server.basic).content == jpeg
        assert client.get(live.server.url + media_path, headers=live.server.bearer()).content == jpeg
        # Refused: no credentials, another account's, a signature tampered with or past its expiry.
        assert client.get(live.server.url + media_path).status_code == 401
        other = (live.other["api_key"], live.other["api_secret"])
        assert client.get(live.server.url + media_path, auth=other).status_code == 404
        expires = parse_qs(urlsplit(url).query)["expires"][0]
        forged = f"{live.server.url}{media_path}?expires={int(expires) + 1}&signature={parse_qs(urlsplit(url).query)['signature'][0]}"
        assert client.get(forged).status_code == 404
        stale = f"{live.server.url}{media_path}?expires=1&signature=" + "0" * 64
        assert client.get(stale).status_code == 404
    assert TOKEN not in live.server.log()


def test_media_over_the_limit_or_too_slow_is_left_out_saying_why(live: Live) -> None:
    live.cloud.add_media("3002", b"x" * 6000, "image/jpeg")
    hook = _media_hook(live, "447700900505", "wamid.media.big", "image", "3002")
    assert hook.json["message_type"] == "image" and "url" not in hook.json["image"]
    assert "5000-byte limit" in hook.json["provider_message"]
    # A size the media endpoint understates is caught while downloading.
    live.cloud.add_media("3003", b"x" * 6000, "image/jpeg", declared_size=100)
    hook = _media_hook(live, "447700900506", "wamid.media.liar", "image", "3003")
    assert "url" not in hook.json["image"] and "limit" in hook.json["provider_message"]
    live.cloud.add_media("3004", b"x" * 10, "image/jpeg", delay=3.0)
    started = time.monotonic()
    hook = _media_hook(live, "447700900507", "wamid.media.slow", "image", "3004")
    assert time.monotonic() - started < 3.0
    assert "took over 1 s" in hook.json["provider_message"]
    hook = _media_hook(live, "447700900508", "wamid.media.gone", "image", "3999")
    assert "did not give the media's URL" in hook.json["provider_message"]


def test_expired_media_is_refused_then_pruned(live: Live) -> None:
    live.cloud.add_media("3005", b"old", "image/jpeg")
    hook = _media_hook(live, "447700900606", "wamid.media.old", "image", "3005")
    media_id = urlsplit(hook.json["image"]["url"]).path.rsplit("/", 1)[1]
    data_dir = live.server.data_dir
    assert query(data_dir, "SELECT count(*) FROM media WHERE id = :i", i=media_id) == [(1,)]
    engine = sync_engine(data_dir)
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("UPDATE media SET expires_at = :t WHERE id = :i"), {"t": time.time() - 1, "i": media_id})
    finally:
        engine.dispose()
    with httpx.Client(timeout=10) as client:
        assert client.get(f"{live.server.url}/v1/media/{media_id}", auth=live.server.basic).status_code == 404
    deadline = time.monotonic() + 10
    while query(data_dir, "SELECT count(*) FROM media WHERE id = :i", i=media_id) != [(0,)]:
        assert time.monotonic() < deadline, "expired media was not pruned"
        time.sleep(0.1)


def test_mark_read_calls_meta(live: Live) -> None:
    user = "447700900707"
    body = webhook(change(**from_user("wamid.to.read", "text", user, text={"body": "are you there?"})))
    assert live.post(body).status_code == 200
    [hook] = live.wait_hooks("/inbound", 1, **{"from": user})
    message_uuid = hook.json["message_uuid"]
    with live.server.client() as client:
        plain = client.patch(f"/v1/messages/{message_uuid}", json={"status": "read"}, auth=live.server.basic)
        typing = client.patch(f"/v1/messages/{message_uuid}", json={"status": "read", "replying_indicator": {"show": True, "type": "text"}},
                              headers=live.server.bearer())
        bad = client.patch(f"/v1/messages/{message_uuid}", json={"status": "read", "replying_indicator": "yes"}, auth=live.server.basic)
        other = client.patch(f"/v1/messages/{message_uuid}", json={"status": "read"}, auth=(live.other["api_key"], live.other["api_secret"]))
    assert (plain.status_code, typing.status_code, bad.status_code, other.status_code) == (200, 200, 422, 404)
    receipts = [r for r in live.cloud.read_receipts() if r.body.get("message_id") == "wamid.to.read"]
    assert [r.path for r in receipts] == [f"/v19.0/{PHONE}/messages"] * 2
    assert [r.body for r in receipts] == [
        {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.to.read"},
        {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.to.read", "typing_indicator": {"type": "text"}},
    ]
    assert all(r.authorization == f"Bearer {TOKEN}" for r in receipts)


def test_the_second_account_gets_what_its_own_secret_signed(live: Live) -> None:
    user = "447700900808"
    body = webhook(change(**from_user("wamid.other.1", "text", user, text={"body": "for the other"})))
    assert live.post(body, OTHER_SECRET).status_code == 200
    [hook] = live.wait_hooks("/inbound2", 1, **{"from": user})
    assert hook.json["text"] == "for the other"
    time.sleep(0.3)
    assert live.hooks("/inbound", **{"from": user}) == []


@pytest.mark.parametrize("signature", [None, "", "sha256=" + "ab" * 32, "sha1=deadbeef", "signed-with-another-secret"])
def test_unsigned_or_badly_signed_posts_are_refused_and_nothing_stored(live: Live, signature: str | None) -> None:
    user = f"4477009009{hashlib.sha256(str(signature).encode()).hexdigest()[:2].encode().hex()[:2]}"
    body = webhook(change(**from_user(f"wamid.bad.{user}", "text", user, text={"body": "hi"})))
    if signature == "signed-with-another-secret":
        response = live.post(body, "not-any-links-secret")
    elif signature is None:
        response = live.post(body, secret=None)
    else:
        response = live.post(body, signature=signature)
    assert response.status_code == 401
    assert query(live.server.data_dir, "SELECT count(*) FROM inbound_messages WHERE from_addr = :u", u=user) == [(0,)]


@pytest.mark.parametrize(("body", "status"), [
    ({"object": "whatsapp_business_account", "entry": [{"changes": [{"value": {"metadata": {"phone_number_id": 7}}}]}]}, 400),
    ({"object": "whatsapp_business_account"}, 400),
    ({"object": "whatsapp_business_account", "entry": []}, 200),
])
def test_bodies_not_meta_shape_are_400(live: Live, body: dict, status: int) -> None:
    assert live.post(body).status_code == status


def test_unlinked_number_is_ignored_with_200(live: Live) -> None:
    body = webhook(change("999000111", **from_user("wamid.nobody", "text", text={"body": "hi"})))
    assert live.post(body, "whatever").status_code == 200

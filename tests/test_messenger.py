"""Facebook Messenger: the Graph Send API out, the signed page webhook in.

Two tables run against the fake Graph API on 127.0.0.1 (outbound: the message in, the
Graph request expected out, the scripted answers, the result or error), and the parser
(inbound: raw body and signature in, the events or the refusal out). Then end to end:
a real server whose MISSIVE_GRAPH_API_URL is the fake, a real webhook receiver.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from vonage_messages import ReplyingIndicatorText

from missive.channels.base import (
    ChannelLink,
    InboundEvent,
    Misconfigured,
    OutboundMessage,
    Rejected,
    SendError,
    StatusEvent,
    Throttled,
    Unavailable,
    Undeliverable,
)
from missive.channels.messenger import MessengerChannel, Watermark, parse_webhook, signature_ok
from missive.config import Settings
from tests.fakes.fake_graph import Answer, FakeGraph, error, ok
from tests.fakes.webhook_receiver import Hook, WebhookReceiver
from tests.harness import Server, missive, missive_json, provisioned_server, send_webhooks_to

PAGE, TOKEN, SECRET, VERIFY = "1122334455", "EAAGpagetoken-s3cr3t", "app-secret-0f9e", "verify-me"
CONFIG = {"page_id": PAGE, "page_token": TOKEN, "app_secret": SECRET, "verify_token": VERIFY}
LINK = ChannelLink(id="link-1", kind="messenger", channel="messenger", config=CONFIG)


# -- outbound ------------------------------------------------------------------------------


def message(message_type: str = "text", to: str = "psid-1", **body: Any) -> OutboundMessage:
    if message_type == "text":
        body.setdefault("text", "Nexmo")
    body.setdefault("messenger", {"category": "response"})
    return OutboundMessage("uuid-1", "messenger", message_type, to, PAGE, body)


@dataclass(frozen=True)
class Out:
    message: OutboundMessage
    # The Graph request bodies expected, in order (an empty tuple: nothing may be sent).
    requests: tuple[dict, ...]
    answers: tuple[Answer, ...] = ()
    error: type[SendError] | None = None
    code: int | None = None
    link: ChannelLink = LINK


def expect(messaging_type: str = "RESPONSE", to: str = "psid-1", **extra: Any) -> dict:
    content = extra.pop("message", {"text": "Nexmo"})
    return {"recipient": {"id": to}, "messaging_type": messaging_type, **extra, "message": content}


def attachment(kind: str) -> dict:
    return {"attachment": {"type": kind, "payload": {"url": f"https://example.com/a.{kind}", "is_reusable": False}}}


OUTBOUND: dict[str, Out] = {
    "text-default-response": Out(message(), (expect(),)),
    "category-update": Out(message(messenger={"category": "update"}), (expect("UPDATE"),)),
    "seed-message-tag": Out(
        message(messenger={"category": "message_tag", "tag": "ticket_update"}),
        (expect("MESSAGE_TAG", tag="TICKET_UPDATE"),),
    ),
    **{
        f"{kind}-by-url": Out(
            message(kind, **{kind: {"url": f"https://example.com/a.{kind}"}}), (expect(message=attachment(kind)),)
        )
        for kind in ("image", "audio", "video", "file")
    },
    **{
        f"rate-limit-{code}": Out(message(), (expect(),), (error(code),), Throttled)
        for code in (4, 17, 32, 613)
    },
    "token-expired-190": Out(message(), (expect(),), (error(190, 463, status=401),), Rejected, 1370),
    "outside-window-2018278": Out(message(), (expect(),), (error(10, 2018278),), Rejected, 1340),
    "user-unavailable-551": Out(message(), (expect(),), (error(551, 1545041),), Undeliverable, 1300),
    "invalid-parameter-100": Out(message(), (expect(),), (error(100, 2018109),), Rejected, 1020),
    "graph-500": Out(message(), (expect(),), (error(1, status=500, kind="OAuthException"),), Unavailable, 1331),
    "html-503": Out(message(), (expect(),), (Answer(503, raw=b"<html>down</html>"),), Unavailable, 1331),
    "timeout": Out(message(), (expect(),), (Answer(delay=3.0),), Unavailable, 1331),
    "text-over-640-refused-unsent": Out(message(text="x" * 641), (), (), Rejected, 1020),
    "no-page-token-unsent": Out(
        message(), (), (), Misconfigured, 1030, ChannelLink("l", "messenger", "messenger", {"page_id": PAGE})
    ),
}


@pytest.fixture(scope="module")
def graph() -> Iterator[FakeGraph]:
    with FakeGraph() as fake:
        yield fake


@pytest.mark.parametrize("name", list(OUTBOUND))
def test_outbound(graph: FakeGraph, name: str, caplog: pytest.LogCaptureFixture) -> None:
    case = OUTBOUND[name]
    recipient = f"psid-{name}"
    msg = OutboundMessage(case.message.uuid, "messenger", case.message.message_type, recipient, PAGE, case.message.body)
    graph.script(*case.answers, recipient=recipient)
    # Room for a loaded CI machine (both test passes run side by side); the `timeout`
    # case answers after 3 s.
    settings = Settings(graph_api_url=graph.url, graph_api_version="v19.0", provider_timeout=2.0)
    caplog.set_level(logging.DEBUG)

    async def run() -> Any:
        channel = MessengerChannel(settings)
        try:
            return await channel.send(msg, case.link)
        except SendError as exc:
            return exc
        finally:
            await channel.close()

    result = asyncio.run(run())
    sent = graph.snapshot(recipient)
    assert [r.body for r in sent] == [dict(b, recipient={"id": recipient}) for b in case.requests]
    assert all(r.path == "/v19.0/me/messages" and r.query == {"access_token": TOKEN} for r in sent)
    assert graph.unused(recipient) == [], "every scripted answer is used"
    if case.error is None:
        assert result.provider_ref.startswith("m_fake")
    else:
        assert type(result) is case.error, result
        assert result.retryable is (case.error in (Throttled, Unavailable))
        if case.code is not None:
            assert result.code == case.code
        assert TOKEN not in str(result) and SECRET not in str(result)
    assert TOKEN not in caplog.text and SECRET not in caplog.text


def test_an_empty_app_secret_verifies_nothing() -> None:
    raw = b'{"object": "page", "entry": []}'
    assert signature_ok(raw, sign(raw, ""), "") is False


def test_mark_seen_sends_the_sender_action(graph: FakeGraph) -> None:
    async def run() -> None:
        channel = MessengerChannel(Settings(graph_api_url=graph.url))
        try:
            await channel.mark_seen("psid-seen", LINK)
        finally:
            await channel.close()

    asyncio.run(run())
    assert [r.body for r in graph.snapshot("psid-seen")] == [{"recipient": {"id": "psid-seen"}, "sender_action": "mark_seen"}]


# -- inbound -------------------------------------------------------------------------------


def sign(raw: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def webhook(*messaging: dict, page: str = PAGE) -> dict:
    return {"object": "page", "entry": [{"id": page, "time": 1700000000000, "messaging": list(messaging)}]}


def from_user(user: str = "psid-9", **event: Any) -> dict:
    return {"sender": {"id": user}, "recipient": {"id": PAGE}, "timestamp": 1700000000000, **event}


def media(kind: str) -> dict:
    return from_user(message={"mid": f"m_{kind}", "attachments": [{"type": kind, "payload": {"url": f"https://cdn.fb/{kind}"}}]})


LOCATION = from_user(message={"mid": "m_loc", "attachments": [
    {"type": "location", "title": "Pinned", "payload": {"coordinates": {"lat": 51.5, "long": -0.12}}}]})


@dataclass(frozen=True)
class In:
    body: dict
    events: list
    signature: str | None = "valid"


INBOUND: dict[str, In] = {
    "text": In(webhook(from_user(message={"mid": "m_1", "text": "hello"})),
               [(InboundEvent("messenger", PAGE, "psid-9", "text", {"text": "hello"}, "m_1"), "mid:m_1:0")]),
    **{
        kind: In(webhook(media(kind)),
                 [(InboundEvent("messenger", PAGE, "psid-9", kind, {kind: {"url": f"https://cdn.fb/{kind}"}}, f"m_{kind}"), f"mid:m_{kind}:0")])
        for kind in ("image", "audio", "video", "file")
    },
    "location": In(webhook(LOCATION), [(InboundEvent(
        "messenger", PAGE, "psid-9", "location", {"location": {"lat": 51.5, "long": -0.12, "name": "Pinned"}}, "m_loc"), "mid:m_loc:0")]),
    "delivery-mids": In(webhook(from_user(delivery={"mids": ["m_a", "m_b"], "watermark": 1700000000000})),
                        [(StatusEvent("m_a", "delivered"), "delivered:m_a"), (StatusEvent("m_b", "delivered"), "delivered:m_b")]),
    "delivery-watermark-only": In(webhook(from_user(delivery={"watermark": 1700000000000})),
                                  [(Watermark(PAGE, "psid-9", 1700000000.0, "delivered"), None)]),
    "read-watermark": In(webhook(from_user(read={"watermark": 1700000000500})), [(Watermark(PAGE, "psid-9", 1700000000.5), None)]),
    "link-share-keeps-its-text": In(webhook(from_user(message={"mid": "m_l", "text": "https://x.org", "attachments": [
        {"type": "fallback", "payload": {"url": "https://x.org"}, "title": "X"}]})),
        [(InboundEvent("messenger", PAGE, "psid-9", "text", {"text": "https://x.org"}, "m_l"), "mid:m_l:0")]),
    "sticker-only-unsupported": In(webhook(from_user(message={"mid": "m_s", "attachments": [{"type": "template", "payload": {}}]})),
        [(InboundEvent("messenger", PAGE, "psid-9", "unsupported", {}, "m_s"), "mid:m_s:0")]),
    "echo-ignored": In(webhook(from_user(message={"mid": "m_e", "text": "ours", "is_echo": True})), []),
    "unknown-event-ignored": In(webhook(from_user(postback={"payload": "X"})), []),
    "missing-signature": In(webhook(from_user(message={"mid": "m_1", "text": "hello"})), [], None),
    "wrong-signature": In(webhook(from_user(message={"mid": "m_1", "text": "hello"})), [], "sha256=" + "0" * 64),
    "non-ascii-signature": In(webhook(from_user(message={"mid": "m_1", "text": "hello"})), [], "sha256=\u00e9" * 3),
    "signed-with-another-secret": In(webhook(from_user(message={"mid": "m_1", "text": "x"})), [], "other-secret"),
}


@pytest.mark.parametrize("name", list(INBOUND))
def test_inbound(name: str) -> None:
    case = INBOUND[name]
    raw = json.dumps(case.body).encode()
    header = {"valid": sign(raw), "other-secret": sign(raw, "other")}.get(case.signature or "", case.signature)
    verified = signature_ok(raw, header, SECRET)
    assert verified is (case.signature == "valid")
    events = parse_webhook(json.loads(raw)).get(PAGE, []) if verified else []
    assert events == case.events


# -- end to end ------------------------------------------------------------------------------

FAST = {
    "MISSIVE_DISPATCH_BACKOFF_BASE": "0.05",
    "MISSIVE_WEBHOOK_BACKOFF_BASE": "0.05",
    "MISSIVE_POLL_INTERVAL": "0.05",
    "MISSIVE_PROVIDER_TIMEOUT": "2",
}


@dataclass
class Live:
    server: Server
    graph: FakeGraph
    receiver: WebhookReceiver
    link: dict = field(default_factory=dict)

    def hooks(self, path: str, **match: Any) -> list[Hook]:
        return [h for h in self.receiver.snapshot(accepted_only=True)
                if h.path == path and all(h.json.get(k) == v for k, v in match.items())]

    def wait_hooks(self, path: str, count: int, **match: Any) -> list[Hook]:
        self.receiver.wait_for(lambda _: len(self.hooks(path, **match)) >= count, timeout=15)
        return self.hooks(path, **match)

    def post_webhook(self, body: dict, signature: str | bytes | None = "valid") -> httpx.Response:
        raw = json.dumps(body).encode()
        headers: dict[str, str | bytes] = {"content-type": "application/json"}
        if signature is not None:
            headers["x-hub-signature-256"] = sign(raw) if signature == "valid" else signature
        with self.server.client() as client:
            return client.post("/inbound/messenger", content=raw, headers=headers)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data_dir: Path = tmp_path_factory.mktemp("messenger")
    with FakeGraph() as graph, WebhookReceiver() as receiver:
        server = provisioned_server(data_dir, env={**FAST, "MISSIVE_GRAPH_API_URL": graph.url})
        try:
            send_webhooks_to(server, receiver)
            link = missive_json(data_dir, "channel", "add", "messenger", "--page-id", PAGE, "--page-token", TOKEN,
                                "--app-secret", SECRET, "--verify-token", VERIFY, "--app", server.app_id)
            yield Live(server, graph, receiver, link)
        finally:
            server.stop()


def send(live: Live, body: dict, path: str = "/v1/messages") -> str:
    with live.server.client() as client:
        response = client.post(path, json=body, headers=live.server.bearer())
    assert response.status_code == 202, response.text
    return response.json()["message_uuid"]


def v1(to: str, **extra: Any) -> dict:
    return {"channel": "messenger", "message_type": "text", "to": to, "from": PAGE, "text": "Nexmo", **extra}


def test_link_hides_its_secrets(live: Live) -> None:
    assert live.link["config"] == {"page_id": PAGE, "verify_token": VERIFY}
    with live.server.client() as client:
        listed = client.get("/v1/channels", auth=live.server.basic).json()
    shown = json.dumps(listed)
    assert TOKEN not in shown and SECRET not in shown


def test_link_config_is_validated_over_the_api(live: Live) -> None:
    with live.server.client() as client:
        response = client.post("/v1/channels", auth=live.server.basic, json={
            "kind": "messenger", "channel": "messenger", "name": "bad", "config": {"page_id": PAGE}})
    assert response.status_code == 422
    names = {p["name"] for p in response.json()["invalid_parameters"]}
    assert {"config.page_token", "config.app_secret", "config.verify_token"} <= names


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
        response = client.get("/inbound/messenger", params=params)
    assert response.status_code == status
    if text is not None:
        assert response.text == text


def test_seed_category_and_tag_go_out_as_graph_requests(live: Live) -> None:
    seed = {
        "from": {"type": "messenger", "id": PAGE},
        "to": {"type": "messenger", "id": "psid-seed"},
        "message": {"content": {"type": "text", "text": "Nexmo"},
                    "messenger": {"category": "message_tag", "tag": "ticket_update"}},
    }
    tagged = send(live, seed, "/v0.1/messages")
    plain = send(live, v1("psid-default"))
    update = send(live, v1("psid-update", messenger={"category": "update"}))
    live.wait_hooks("/status", 1, message_uuid=tagged)
    live.wait_hooks("/status", 1, message_uuid=plain)
    live.wait_hooks("/status", 1, message_uuid=update)
    assert [r.body for r in live.graph.snapshot("psid-seed")] == [{
        "recipient": {"id": "psid-seed"}, "messaging_type": "MESSAGE_TAG", "tag": "TICKET_UPDATE", "message": {"text": "Nexmo"}}]
    assert live.graph.snapshot("psid-default")[0].body["messaging_type"] == "RESPONSE"
    assert live.graph.snapshot("psid-update")[0].body["messaging_type"] == "UPDATE"
    for request in live.graph.snapshot("psid-seed"):
        assert request.query == {"access_token": TOKEN}
    with live.server.client() as client:
        seen = client.get(f"/v1/messages/{tagged}", auth=live.server.basic).json()
    assert seen["status"] == "submitted"
    assert seen["history"][-1]["provider_ref"].startswith("m_fake")
    assert TOKEN not in live.server.log() and SECRET not in live.server.log()


def test_graph_errors_become_statuses_and_retries(live: Live) -> None:
    live.graph.script(error(190, 463), recipient="psid-expired")
    live.graph.script(error(10, 2018278), recipient="psid-window")
    live.graph.script(error(613), error(2, status=503), ok(), recipient="psid-busy")
    expired, window, busy = send(live, v1("psid-expired")), send(live, v1("psid-window")), send(live, v1("psid-busy"))
    [hook] = live.wait_hooks("/status", 1, message_uuid=expired)
    assert (hook.json["status"], int(hook.json["error"]["title"])) == ("rejected", 1370)
    # The link that refused it is named, as for a message it carried.
    assert hook.json["channel_link"] == {"id": live.link["id"], "kind": "messenger"}
    [hook] = live.wait_hooks("/status", 1, message_uuid=window)
    assert (hook.json["status"], int(hook.json["error"]["title"])) == ("rejected", 1340)
    [hook] = live.wait_hooks("/status", 1, message_uuid=busy)
    assert hook.json["status"] == "submitted"
    assert len(live.graph.snapshot("psid-busy")) == 3
    assert live.graph.unused() == []


def test_inbound_location_and_image_reach_the_application(live: Live) -> None:
    user = "psid-in-1"
    body = webhook(
        from_user(user, message={"mid": "m_in_loc", "attachments": [
            {"type": "location", "payload": {"coordinates": {"lat": 48.85, "long": 2.35}}}]}),
        from_user(user, message={"mid": "m_in_img", "attachments": [
            {"type": "image", "payload": {"url": "https://cdn.fb/cat.jpg"}}]}),
    )
    # Facebook batches entries: an unlinked page's entry rides along and is ignored.
    body["entry"].append({"id": "999000", "time": 1, "messaging": [from_user(user, message={"mid": "m_x", "text": "x"})]})
    assert live.post_webhook(body).status_code == 200
    assert live.post_webhook(body).status_code == 200  # Facebook resends: handled once
    hooks = live.wait_hooks("/inbound", 2, **{"from": user})
    time.sleep(0.5)
    hooks = live.hooks("/inbound", **{"from": user})
    by_type = {h.json["message_type"]: h.json for h in hooks}
    assert len(hooks) == 2
    assert by_type["location"]["location"] == {"lat": 48.85, "long": 2.35}
    assert by_type["image"]["image"] == {"url": "https://cdn.fb/cat.jpg"}
    for payload in by_type.values():
        assert (payload["channel"], payload["to"], payload["from"]) == ("messenger", PAGE, user)


@pytest.mark.parametrize(
    "signature", [None, "", "sha256=" + "ab" * 32, "sha1=deadbeef", b"sha256=\xe9\xe9", "signed-with-another-secret"]
)
def test_unsigned_or_badly_signed_posts_are_refused_and_nothing_stored(live: Live, signature: Any) -> None:
    user = f"psid-bad-{hashlib.sha256(str(signature).encode()).hexdigest()[:8]}"
    body = webhook(from_user(user, message={"mid": f"m_{user}", "text": "hi"}))
    if signature == "signed-with-another-secret":
        signature = sign(json.dumps(body).encode(), "another")
    response = live.post_webhook(body, signature)
    assert response.status_code == 401
    # The same body, properly signed, is then handled: the refused one left no dedupe mark.
    assert live.post_webhook(body).status_code == 200
    live.wait_hooks("/inbound", 1, **{"from": user})
    time.sleep(0.3)
    assert len(live.hooks("/inbound", **{"from": user})) == 1


def test_unlinked_page_is_ignored_with_200(live: Live) -> None:
    body = webhook(from_user("psid-nobody", message={"mid": "m_nobody", "text": "hi"}), page="424242")
    assert live.post_webhook(body, sign(json.dumps(body).encode(), "whatever")).status_code == 200
    time.sleep(0.3)
    assert live.hooks("/inbound", **{"from": "psid-nobody"}) == []


def test_delivery_and_read_receipts_produce_statuses(live: Live) -> None:
    user = "psid-receipts"
    first, second = send(live, v1(user)), send(live, v1(user))
    live.wait_hooks("/status", 1, message_uuid=first)
    live.wait_hooks("/status", 1, message_uuid=second)
    delivery = webhook(from_user(user, delivery={"mids": [live_ref(live, first)], "watermark": 1}))
    assert live.post_webhook(delivery).status_code == 200
    live.wait_hooks("/status", 2, message_uuid=first)
    watermark = int(time.time() * 1000) + 1000
    assert live.post_webhook(webhook(from_user(user, read={"watermark": watermark}))).status_code == 200
    for message_uuid, expected in ((first, ["submitted", "delivered", "read"]), (second, ["submitted", "read"])):
        hooks = live.wait_hooks("/status", len(expected), message_uuid=message_uuid)
        time.sleep(0.2)
        hooks = sorted(live.hooks("/status", message_uuid=message_uuid), key=lambda h: h.json["timestamp"])
        assert [h.json["status"] for h in hooks] == expected
    with live.server.client() as client:
        assert client.get(f"/v1/messages/{second}", auth=live.server.basic).json()["status"] == "read"


def live_ref(live: Live, message_uuid: str) -> str:
    with live.server.client() as client:
        history = client.get(f"/v1/messages/{message_uuid}", auth=live.server.basic).json()["history"]
    return next(e["provider_ref"] for e in history if e.get("provider_ref"))


def test_patch_read_sends_mark_seen(live: Live) -> None:
    user = "psid-patch"
    assert live.post_webhook(webhook(from_user(user, message={"mid": "m_patch", "text": "seen?"}))).status_code == 200
    [hook] = live.wait_hooks("/inbound", 1, **{"from": user})
    inbound_uuid = hook.json["message_uuid"]
    with live.server.client() as client:
        response = client.patch(f"/v1/messages/{inbound_uuid}", json={"status": "read"}, headers=live.server.bearer())
        assert response.status_code == 200, response.text
        assert client.patch(f"/v1/messages/{inbound_uuid}", json={"status": "sent"}, auth=live.server.basic).status_code == 422
        assert client.patch("/v1/messages/00000000-0000-0000-0000-000000000000", json={"status": "read"},
                            auth=live.server.basic).status_code == 404
    assert [r.body for r in live.graph.snapshot(user)] == [{"recipient": {"id": user}, "sender_action": "mark_seen"}]


def test_patch_with_replying_indicator_sends_mark_seen_then_typing_on(live: Live) -> None:
    """What the SDK's mark-read call sends with a ReplyingIndicatorText (`{"show": true,
    "type": "text"}`), on Messenger: both sender actions, in Facebook's order."""
    user = "psid-typing"
    assert live.post_webhook(webhook(from_user(user, message={"mid": "m_typing", "text": "anyone?"}))).status_code == 200
    [hook] = live.wait_hooks("/inbound", 1, **{"from": user})
    indicator = ReplyingIndicatorText(show=True).model_dump(by_alias=True, exclude_none=True)
    with live.server.client() as client:
        response = client.patch(f"/v1/messages/{hook.json['message_uuid']}",
                                json={"status": "read", "replying_indicator": indicator}, auth=live.server.basic)
        assert response.status_code == 200, response.text
    assert [r.body for r in live.graph.snapshot(user)] == [
        {"recipient": {"id": user}, "sender_action": "mark_seen"},
        {"recipient": {"id": user}, "sender_action": "typing_on"},
    ]


def test_cli_refuses_a_link_without_credentials(live: Live) -> None:
    result = missive(live.server.data_dir, "channel", "add", "messenger", "--page-id", PAGE, "--page-token", "",
                     "--app-secret", SECRET, "--verify-token", VERIFY)
    assert result.returncode != 0
    assert "page_token" in result.stderr


def test_a_read_condition_workflow_completes_on_the_read_receipt(live: Live) -> None:
    """Failover on Messenger with `condition_status: read`: delivered is not enough, read
    completes the workflow and the SMS fallback is never sent."""
    user = "psid-workflow"
    step = {"from": {"type": "messenger", "id": PAGE}, "to": {"type": "messenger", "id": user},
            "message": {"content": {"type": "text", "text": "Nexmo"}},
            "failover": {"expiry_time": 600, "condition_status": "read"}}
    fallback = {"from": {"type": "sms", "number": "Acme"}, "to": {"type": "sms", "number": "447700900555"},
                "message": {"content": {"type": "text", "text": "Nexmo by SMS"}}}
    with live.server.client() as client:
        response = client.post("/v0.1/dispatch", json={"template": "failover", "workflow": [step, fallback]},
                               headers=live.server.bearer())
        assert response.status_code == 202, response.text
        workflow_id = response.json()["dispatch_uuid"]
        first = client.get(f"/v1/workflows/{workflow_id}", auth=live.server.basic).json()["steps"][0]["message_uuid"]
    live.wait_hooks("/status", 1, message_uuid=first)
    assert live.post_webhook(webhook(from_user(user, delivery={"mids": [live_ref(live, first)], "watermark": 1}))).status_code == 200
    live.wait_hooks("/status", 2, message_uuid=first)
    with live.server.client() as client:
        running = client.get(f"/v1/workflows/{workflow_id}", auth=live.server.basic).json()
    assert running["status"] == "running" and running["current_step"] == 0
    watermark = int(time.time() * 1000) + 1000
    assert live.post_webhook(webhook(from_user(user, read={"watermark": watermark}))).status_code == 200
    report = live.wait_hooks("/status", 1, dispatch_uuid=workflow_id)[0].json
    assert report["status"] == "completed"
    assert [(m["message_uuid"], m["channel"], m["status"]) for m in report["_links"]["messages"]] == [(first, "messenger", "read")]
    with live.server.client() as client:
        done = client.get(f"/v1/workflows/{workflow_id}", auth=live.server.basic).json()
    assert done["steps"][0]["completed_by"] == "read" and done["steps"][1]["status"] == "not_sent"
    assert [h.json["_links"]["workflow"]["dispatch_uuid"] for h in live.hooks("/status", message_uuid=first)] == [workflow_id] * 3

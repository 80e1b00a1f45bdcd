"""Conformance with the hosted API, as an official SDK sees it (issue 21.7).

Every message class of the official Python SDK (`vonage_messages`) for SMS, Messenger and
Viber is built, sent to a real `missive serve` whose providers are the fake SMSC, fake
Graph and fake Viber, and checked twice: what reached the provider, field by field, and
what the status webhooks carried, each validated against the vendor's v1 schema (loaded and
amended as tests/test_properties.py does). Then the answers an SDK user meets besides: the
unsupported channels, the application's webhook version, and a priced link's `usage`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from vonage_messages.models import (
    MessengerAudio,
    MessengerFile,
    MessengerImage,
    MessengerOptions,
    MessengerResource,
    MessengerText,
    MessengerVideo,
    Sms,
    SmsOptions,
    ViberAction,
    ViberFile,
    ViberFileResource,
    ViberImage,
    ViberImageOptions,
    ViberImageResource,
    ViberText,
    ViberTextOptions,
    ViberVideo,
    ViberVideoOptions,
    ViberVideoResource,
)

from missive.channels.viber import MEGABYTE
from missive.schemas.v1 import UNSUPPORTED_CHANNELS
from tests.fakes.fake_graph import FakeGraph
from tests.fakes.fake_smsc import FakeSMSC
from tests.fakes.fake_viber import MEDIA_SIZE, FakeViber
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.harness import Server, missive, missive_json, provisioned_server
from tests.test_properties import _check, beta_status, v1_status

ENV = {"MISSIVE_DISPATCH_BACKOFF_BASE": "0.05", "MISSIVE_WEBHOOK_BACKOFF_BASE": "0.05", "MISSIVE_POLL_INTERVAL": "0.05",
       "MISSIVE_SESSIONS_INTERVAL": "0.3"}
PAGE, PAGE_TOKEN, APP_SECRET = "1234567890", "EAAB-page-token", "fb-app-secret"
SERVICE, VIBER_TOKEN = "acme-bot", "445da6az1s345z78-dazcczb2542zv51a-e0vc5fva17480im9"
VIBER_USER, VIBER_PHONE = "01234567890A=", "447700900123"
PSID = "2468013579"
LONG = "Your parcel is on its way and will arrive tomorrow between nine and eleven. " * 3
SMS_PRICE = {"amount": "0.0333", "currency": "EUR", "per": "part"}
VIBER_PRICE = {"amount": "0.005", "currency": "EUR", "per": "message"}
ERROR_TYPE = "https://developer.vonage.com/api-errors/messages#"


def dump(message: Any) -> dict[str, Any]:
    return dict(message.model_dump(by_alias=True, exclude_none=True))


@dataclass
class Hub:
    server: Server
    smsc: FakeSMSC
    graph: FakeGraph
    viber: FakeViber
    receiver: WebhookReceiver

    def post(self, body: dict[str, Any], path: str = "/v1/messages", auth: Any = None) -> httpx.Response:
        return httpx.post(f"{self.server.url}{path}", content=orjson.dumps(body), auth=auth or self.server.basic,
                          headers={"Content-Type": "application/json"})

    def send(self, body: dict[str, Any], **kwargs: Any) -> str:
        response = self.post(body, **kwargs)
        assert response.status_code == 202, response.text
        return str(response.json()["message_uuid"])

    def statuses(self, uuid: str, until: str = "submitted") -> list[dict[str, Any]]:
        def hooks() -> list[dict[str, Any]]:
            return [h.json for h in self.receiver.snapshot(accepted_only=True) if h.json.get("message_uuid") == uuid]
        self.receiver.wait_for(lambda _: until in [h["status"] for h in hooks()], 20)
        return sorted(hooks(), key=lambda h: h["timestamp"])

    def viber_callback(self, data: dict[str, Any]) -> None:
        body = orjson.dumps(data)
        signature = hmac.new(VIBER_TOKEN.encode(), body, hashlib.sha256).hexdigest()
        response = httpx.post(f"{self.server.url}/inbound/viber/{SERVICE}", content=body,
                              headers={"Content-Type": "application/json", "X-Viber-Content-Signature": signature})
        assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    data_dir = tmp_path_factory.mktemp("conformance")
    with FakeSMSC() as smsc, FakeGraph() as graph, FakeViber(auth_token=VIBER_TOKEN) as viber, WebhookReceiver() as receiver:
        server = provisioned_server(data_dir, env={**ENV, "MISSIVE_GRAPH_API_URL": graph.url,
                                                   "MISSIVE_VIBER_API_URL": viber.url()})
        try:
            missive(data_dir, "account", "update", "--api-key", server.api_key,
                    "--status-url", receiver.url("/status"), "--inbound-url", receiver.url("/inbound"))
            missive_json(data_dir, "channel", "add", "sms", "--host", "127.0.0.1", "--port", str(smsc.port),
                         "--system-id", "missive", "--password", "secret", "--default", "--price", "0.0333 EUR", "--json")
            missive_json(data_dir, "channel", "add", "messenger", "--page-id", PAGE, "--page-token", PAGE_TOKEN,
                         "--app-secret", APP_SECRET, "--verify-token", "verify", "--default", "--json")
            env = {"MISSIVE_VIBER_API_URL": viber.url()}
            added = missive(data_dir, "channel", "add", "viber", "--service-id", SERVICE, "--auth-token", VIBER_TOKEN,
                            "--sender-name", "Acme", "--price", "0.005 eur/message", "--default", "--json", env=env)
            assert added.returncode == 0, added.stderr
            smsc.wait_for(lambda s: s["bound"] >= 1, timeout=15)
            hub = Hub(server, smsc, graph, viber, receiver)
            # The SDK addresses Viber users by number: the user shares their contact first.
            hub.viber_callback({"event": "message", "timestamp": 1, "message_token": 4912661846655238145,
                                "sender": {"id": VIBER_USER, "name": "Jo"},
                                "message": {"type": "contact", "contact": {"name": "Jo", "phone_number": "+" + VIBER_PHONE}}})
            yield hub
        finally:
            server.stop()


# -- every SDK class: what reaches the provider, what the webhooks carry ------------------------


@dataclass(frozen=True)
class Case:
    name: str
    message: Callable[[str], Any]  # the SDK object, from the fake provider's media base URL
    provider: Callable[[Hub, str, dict[str, Any]], dict[str, Any]]  # its provider request (hub, uuid, body)
    expect: Callable[[str], dict[str, Any]]  # its fields
    final: str = "submitted"  # the status to wait for
    parts: int | None = None  # SMS: `sms.count_total`
    usage: str | None = None  # the `usage.price` of the priced links


def sms_case(name: str, to: str, message: Callable[[str], Any], expect: dict[str, Any], parts: int) -> Case:
    def submits(hub: Hub, _: str, __: dict[str, Any]) -> dict[str, Any]:
        found = hub.smsc.wait_for(lambda s: len([x for x in s["submits"] if x["destination_addr"] == to]) >= parts)
        pdus = sorted((x for x in found["submits"] if x["destination_addr"] == to), key=lambda x: x["sequence_number"])
        return {"parts": len(pdus), **{k: pdus[0][k] for k in ("source_addr", "destination_addr", "data_coding", "tlvs")}}
    price = format(Decimal(SMS_PRICE["amount"]) * parts, "f")
    return Case(name, message, submits, lambda _: {"parts": parts, "destination_addr": to, **expect},
                final="delivered", parts=parts, usage=price)


def graph_request(hub: Hub, _: str, sent: dict[str, Any]) -> dict[str, Any]:
    """The Send API request to the message's user (each case has its own)."""
    hub.graph.wait_for(lambda _: bool(hub.graph.snapshot(sent["to"])))
    [request] = hub.graph.snapshot(sent["to"])
    return dict(request.body)


def viber_request(hub: Hub, uuid: str, _: dict[str, Any]) -> dict[str, Any]:
    calls = hub.viber.wait_for(lambda calls: any(c.json.get("tracking_data") == uuid for c in calls))
    return dict(next(c.json for c in calls if c.json.get("tracking_data") == uuid))


def attachment(kind: str, url: str) -> dict[str, Any]:
    return {"messaging_type": "RESPONSE",
            "message": {"attachment": {"type": kind, "payload": {"url": url, "is_reusable": False}}}}


CASES = [
    sms_case("Sms", "447700900701", lambda m: Sms(to="447700900701", from_="Acme", text="Hello", client_ref="c-1"),
             {"source_addr": "Acme", "data_coding": 0, "tlvs": {}}, parts=1),
    sms_case("Sms long, unicode", "447700900702",
             lambda m: Sms(to="447700900702", from_="447700900002", text="Żółw " + LONG[:150],
                           sms=SmsOptions(encoding_type="unicode")),
             {"source_addr": "447700900002", "data_coding": 8}, parts=3),
    sms_case("Sms with DLT ids", "447700900703",
             lambda m: Sms(to="447700900703", from_="Acme", text=LONG,
                           sms=SmsOptions(encoding_type="text", entity_id="1101456", content_id="1107161")),
             {"tlvs": {"0x1400": b"1101456\0".hex(), "0x1401": b"1107161\0".hex()}}, parts=2),
    Case("MessengerText", lambda m: MessengerText(to=PSID + "1", from_=PAGE, text="Hi there"), graph_request,
         lambda m: {"recipient": {"id": PSID + "1"}, "messaging_type": "RESPONSE", "message": {"text": "Hi there"}}),
    Case("MessengerText with a tag",
         lambda m: MessengerText(to=PSID + "2", from_=PAGE, text="Your ticket moved",
                                 messenger=MessengerOptions(category="message_tag", tag="CONFIRMED_EVENT_UPDATE")),
         graph_request, lambda m: {"messaging_type": "MESSAGE_TAG", "tag": "CONFIRMED_EVENT_UPDATE",
                                   "message": {"text": "Your ticket moved"}}),
    Case("MessengerImage", lambda m: MessengerImage(to=PSID + "3", from_=PAGE, image=MessengerResource(url=f"{m}/i.jpg")),
         graph_request, lambda m: attachment("image", f"{m}/i.jpg")),
    Case("MessengerAudio", lambda m: MessengerAudio(to=PSID + "4", from_=PAGE, audio=MessengerResource(url=f"{m}/a.mp3")),
         graph_request, lambda m: attachment("audio", f"{m}/a.mp3")),
    Case("MessengerVideo", lambda m: MessengerVideo(to=PSID + "5", from_=PAGE, video=MessengerResource(url=f"{m}/v.mp4"),
                                                    messenger=MessengerOptions(category="update")),
         graph_request, lambda m: {**attachment("video", f"{m}/v.mp4"), "messaging_type": "UPDATE"}),
    Case("MessengerFile", lambda m: MessengerFile(to=PSID + "6", from_=PAGE, file=MessengerResource(url=f"{m}/f.pdf")),
         graph_request, lambda m: attachment("file", f"{m}/f.pdf")),
    Case("ViberText with action",
         lambda m: ViberText(to=VIBER_PHONE, from_=SERVICE, text="Shipped",
                             viber_service=ViberTextOptions(category="transaction", ttl=600,
                                                            action=ViberAction(url="https://acme.example/t", text="Track"))),
         viber_request, lambda m: {"receiver": VIBER_USER, "type": "text", "text": "Shipped", "keyboard": {
             "Type": "keyboard", "DefaultHeight": False, "Buttons": [{"Columns": 6, "Rows": 1, "ActionType": "open-url",
                                                                      "ActionBody": "https://acme.example/t", "Text": "Track"}]}},
         usage=VIBER_PRICE["amount"]),
    Case("ViberImage", lambda m: ViberImage(to=VIBER_PHONE, from_=SERVICE,
                                            image=ViberImageResource(url=f"{m}/media/p.jpg", caption="Look"),
                                            viber_service=ViberImageOptions(category="transaction")),
         viber_request, lambda m: {"type": "picture", "media": f"{m}/media/p.jpg", "text": "Look"}, usage=VIBER_PRICE["amount"]),
    Case("ViberVideo", lambda m: ViberVideo(to=VIBER_PHONE, from_=SERVICE,
                                            video=ViberVideoResource(url=f"{m}/media/v.mp4", thumb_url=f"{m}/media/t.jpg"),
                                            viber_service=ViberVideoOptions(duration="42", file_size="7")),
         viber_request, lambda m: {"type": "video", "media": f"{m}/media/v.mp4", "thumbnail": f"{m}/media/t.jpg",
                                   "duration": 42, "size": 7 * MEGABYTE}, usage=VIBER_PRICE["amount"]),
    Case("ViberFile", lambda m: ViberFile(to=VIBER_PHONE, from_=SERVICE,
                                          file=ViberFileResource(url=f"{m}/media/x1", name="invoice.pdf")),
         viber_request, lambda m: {"type": "file", "media": f"{m}/media/x1", "file_name": "invoice.pdf", "size": MEDIA_SIZE},
         usage=VIBER_PRICE["amount"]),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_sdk_class(hub: Hub, case: Case) -> None:
    media = hub.viber.url() if "Viber" in case.name else "https://media.example"
    sent = dump(case.message(media))
    uuid = hub.send(sent)
    reached = case.provider(hub, uuid, sent)
    expected = case.expect(media)
    assert {key: reached.get(key) for key in expected} == expected
    hooks = hub.statuses(uuid, case.final)
    assert [h["status"] for h in hooks][:2] == ["submitted", case.final][: len(hooks[:2])]
    for hook in hooks:
        _check(v1_status(), hook)
        assert (hook["channel"], hook["to"], hook["from"]) == (sent["channel"], sent["to"], sent["from"])
        assert hook.get("client_ref") == sent.get("client_ref")
        assert hook.get("sms") == ({"count_total": str(case.parts)} if case.parts else None)
        assert hook.get("usage") == ({"currency": "EUR", "price": case.usage} if case.usage else None)
        assert "error" not in hook


# -- failures, versions, unsupported channels --------------------------------------------------


def test_a_rejection_is_the_v1_error(hub: Hub) -> None:
    hub.smsc.configure(errors=[{"status": 0x0B, "count": 1}])  # ESME_RINVDSTADR
    uuid = hub.send(dump(Sms(to="447700900710", from_="Acme", text="Hello")))
    [hook] = hub.statuses(uuid, "rejected")
    _check(v1_status(), hook)
    error = hook["error"]
    assert set(error) == {"type", "title", "detail", "instance"}
    assert error["type"] == ERROR_TYPE + error["title"] and error["title"].isdigit()
    assert "ESME_RINVDSTADR" in error["detail"] and len(error["instance"]) == 32


def test_beta_messages_keep_the_beta_shapes(hub: Hub) -> None:
    body = {"from": {"type": "sms", "number": "Acme"}, "to": {"type": "sms", "number": "447700900711"},
            "message": {"content": {"type": "text", "text": "Hello"}}}
    uuid = hub.send(body, path="/v0.1/messages")
    hooks = hub.statuses(uuid, "delivered")
    for hook in hooks:
        _check(beta_status(), hook)
        assert hook["to"] == {"type": "sms", "number": "447700900711"}
        assert "sms" not in hook and "channel" not in hook
        assert hook["usage"] == {"currency": "EUR", "price": SMS_PRICE["amount"]}


def test_the_webhook_version_follows_the_application(hub: Hub) -> None:
    """An application whose messages capability says v0.1 gets v0.1 status webhooks; a
    message's own `webhook_version` still wins."""
    created = httpx.post(f"{hub.server.url}/v2/applications", auth=hub.server.basic, json={
        "name": "v0.1 app", "capabilities": {"messages": {"version": "v0.1", "webhooks": {
            "inbound_url": {"address": hub.receiver.url("/v01-inbound"), "http_method": "POST"},
            "status_url": {"address": hub.receiver.url("/v01-status"), "http_method": "POST"}}}}})
    assert created.status_code in (200, 201), created.text
    app = created.json()
    bearer = {"Authorization": f"Bearer {hub.server.jwt(private_key=app['keys']['private_key'], application_id=app['id'])}"}

    def send(**extra: Any) -> str:
        response = httpx.post(f"{hub.server.url}/v1/messages", headers=bearer, json={
            "channel": "sms", "message_type": "text", "to": "447700900712", "from": "Acme", "text": "Hi", **extra})
        assert response.status_code == 202, response.text
        return str(response.json()["message_uuid"])

    follows, own = send(), send(webhook_version="v1")
    for hook in hub.statuses(follows, "delivered"):
        _check(beta_status(), hook)
        assert hook["to"] == {"type": "sms", "number": "447700900712"}
    for hook in hub.statuses(own, "delivered"):
        _check(v1_status(), hook)
        assert hook["to"] == "447700900712" and hook["sms"] == {"count_total": "1"}


def test_unsupported_channels_answer_alike(hub: Hub) -> None:
    assert {"mms", "rcs"} <= set(UNSUPPORTED_CHANNELS)
    answers = []
    for channel in UNSUPPORTED_CHANNELS:
        v1 = {"channel": channel, "message_type": "text", "to": "447700900713", "from": "Acme", "text": "hi"}
        beta = {"from": {"type": channel, "number": "Acme"}, "to": {"type": channel, "number": "447700900713"},
                "message": {"content": {"type": "text", "text": "hi"}}}
        sms = {"channel": "sms", "message_type": "text", "to": "447700900713", "from": "Acme", "text": "hi"}
        for path, body, name in (("/v1/messages", v1, "channel"), ("/v0.1/messages", beta, "to.type"),
                                 ("/v1/messages", {**sms, "failover": [v1]}, "failover[0].channel"),
                                 ("/v0.1/dispatch", {"template": "failover", "workflow": [
                                     {**beta, "failover": {"expiry_time": 60, "condition_status": "delivered"}}, beta]},
                                  "workflow[0].to.type")):
            response = hub.post(body, path=path)
            assert response.status_code == 422, (channel, path, response.text)
            problem = response.json()
            assert name in [p["name"] for p in problem["invalid_parameters"]], (channel, path, problem)
            answers.append((problem["type"], problem["title"]))
    assert len(set(answers)) == 1, answers


# -- the price setting -------------------------------------------------------------------------


def test_price_is_a_checked_link_setting(hub: Hub) -> None:
    url, auth = f"{hub.server.url}/v1/channels", hub.server.basic
    sandbox = {"kind": "sandbox", "channel": "sms", "name": "priced"}
    for bad, where in (({"amount": 0.05, "currency": "EUR"}, "config.price.amount"),
                       ({"amount": "1e3", "currency": "EUR"}, "config.price.amount"),
                       ({"amount": "0.05", "currency": "euro"}, "config.price.currency"),
                       ({"amount": "0.05", "currency": "EUR", "per": "sms"}, "config.price.per"),
                       ("0.05 EUR", "config.price")):
        response = httpx.post(url, auth=auth, json={**sandbox, "config": {"price": bad}})
        assert response.status_code == 422, response.text
        assert where in [p["name"] for p in response.json()["invalid_parameters"]], (bad, response.text)
    created = httpx.post(url, auth=auth, json={**sandbox, "config": {"delivered_after": 1, "price": {"amount": "0.01", "currency": "USD"}}})
    assert created.status_code == 201, created.text
    assert created.json()["config"] == {"delivered_after": 1, "price": {"amount": "0.01", "currency": "USD", "per": "part"}}
    changed = httpx.patch(f"{url}/{created.json()['id']}", auth=auth, json={"config": {"price": None}})
    assert changed.status_code == 200 and changed.json()["config"] == {"delivered_after": 1}
    assert httpx.delete(f"{url}/{created.json()['id']}", auth=auth).status_code == 204

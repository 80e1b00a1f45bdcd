"""WhatsApp over Meta's Cloud API: sends, the 24-hour rule, Meta's errors.

Tables run against the fake Cloud API on 127.0.0.1 (outbound: the message in, the Cloud
API request expected out, the scripted answers, the result or error) and the v1
validation (the body in, the fields named). Then end to end: a real server whose
MISSIVE_GRAPH_API_URL is the fake, the link made with the CLI, the SDK's classes and
curl-shaped JSON sent, a real webhook receiver.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from vonage_messages import (
    WhatsappAudio,
    WhatsappAudioResource,
    WhatsappContext,
    WhatsappCustom,
    WhatsappFile,
    WhatsappFileResource,
    WhatsappImage,
    WhatsappImageResource,
    WhatsappSticker,
    WhatsappStickerId,
    WhatsappStickerUrl,
    WhatsappTemplate,
    WhatsappTemplateResource,
    WhatsappTemplateSettings,
    WhatsappText,
    WhatsappVideo,
    WhatsappVideoResource,
)

from missive.api.errors import ProblemError
from missive.channels.base import (
    ChannelLink,
    Misconfigured,
    OutboundMessage,
    Rejected,
    SendError,
    Throttled,
    Unavailable,
    Undeliverable,
)
from missive.channels.whatsapp import ERRORS, WhatsappChannel
from missive.config import Settings
from missive.schemas.v1 import validate_v1
from missive.store.tables import channel_links, conversation_windows, inbound_messages
from tests.fakes.fake_whatsapp import Answer, FakeWhatsapp, error, ok
from tests.fakes.webhook_receiver import Hook, WebhookReceiver
from tests.harness import (
    Server,
    missive,
    missive_json,
    provisioned_server,
    send_webhooks_to,
    sync_engine,
)

NUMBER_ID, WABA, TOKEN, SECRET, VERIFY = "106540352242922", "102290129340398", "EAAGwa-t0ken-s3cr3t", "wa-app-secret-9", "wa-verify-7"
BUSINESS = "447700900100"
CONFIG = {"phone_number_id": NUMBER_ID, "waba_id": WABA, "access_token": TOKEN, "app_secret": SECRET,
          "verify_token": VERIFY, "phone_number": BUSINESS}
LINK = ChannelLink(id="link-wa", kind="whatsapp", channel="whatsapp", config=CONFIG)
WAMID = "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJDQjZCMzlEQUE4OTJBMTE4RTUA"


# -- outbound ------------------------------------------------------------------------------


def message(message_type: str = "text", **body: Any) -> OutboundMessage:
    if message_type == "text":
        body.setdefault("text", "Nexmo")
    return OutboundMessage("uuid-1", "whatsapp", message_type, "447700900001", NUMBER_ID, body)


def expect(kind: str, content: dict, **extra: Any) -> dict:
    return {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "447700900001",
            "biz_opaque_callback_data": "uuid-1", **extra,
            "type": kind, kind: content}


TEXT = expect("text", {"body": "Nexmo", "preview_url": False})
CUSTOM_INTERACTIVE = {"type": "interactive", "interactive": {
    "type": "button", "body": {"text": "Ready?"},
    "action": {"buttons": [{"type": "reply", "reply": {"id": "yes", "title": "Yes"}}]}}}
CUSTOM_LOCATION = {"type": "location", "location": {"latitude": 51.5, "longitude": -0.12, "name": "Office"}}
CUSTOM_CONTACTS = {"type": "contacts", "contacts": [{"name": {"formatted_name": "Ada L", "first_name": "Ada"},
                                                     "phones": [{"phone": "+447700900555", "type": "WORK"}]}]}
HEADER_AND_BUTTON = [
    {"type": "header", "parameters": [{"type": "image", "image": {"link": "https://example.com/h.png"}}]},
    {"type": "button", "sub_type": "quick_reply", "index": "0", "parameters": [{"type": "payload", "payload": "STOP"}]},
]


@dataclass(frozen=True)
class Out:
    message: OutboundMessage
    # The Cloud API request bodies expected, in order (an empty tuple: nothing may be sent).
    requests: tuple[dict, ...]
    answers: tuple[Answer, ...] = ()
    error: type[SendError] | None = None
    code: int | None = None
    link: ChannelLink = LINK


def failing(answer: Answer, kind: type[SendError], code: int | None = None) -> Out:
    return Out(message(), (TEXT,), (answer,), kind, code)


OUTBOUND: dict[str, Out] = {
    "text": Out(message(), (TEXT,)),
    "text-with-url-previews": Out(message(text="See https://example.com/x"),
                                  (expect("text", {"body": "See https://example.com/x", "preview_url": True}),)),
    "text-4096": Out(message(text="x" * 4096), (expect("text", {"body": "x" * 4096, "preview_url": False}),)),
    "reply-context": Out(message(context={"message_uuid": "u-1", "message_id": WAMID}),
                         (expect("text", {"body": "Nexmo", "preview_url": False}, context={"message_id": WAMID}),)),
    "image-caption": Out(message("image", image={"url": "https://example.com/a.jpg", "caption": "A cat"}),
                         (expect("image", {"link": "https://example.com/a.jpg", "caption": "A cat"}),)),
    "audio": Out(message("audio", audio={"url": "https://example.com/a.mp3"}),
                 (expect("audio", {"link": "https://example.com/a.mp3"}),)),
    "video-caption": Out(message("video", video={"url": "https://example.com/a.mp4", "caption": "Clip"}),
                         (expect("video", {"link": "https://example.com/a.mp4", "caption": "Clip"}),)),
    "file-named": Out(message("file", file={"url": "https://example.com/d/x.pdf", "caption": "Bill", "name": "bill.pdf"}),
                      (expect("document", {"link": "https://example.com/d/x.pdf", "caption": "Bill", "filename": "bill.pdf"}),)),
    "file-caption-names-it": Out(message("file", file={"url": "https://example.com/d/x.pdf", "caption": "Bill"}),
                                 (expect("document", {"link": "https://example.com/d/x.pdf", "caption": "Bill", "filename": "Bill"}),)),
    "file-url-names-it": Out(message("file", file={"url": "https://example.com/d/june%20bill.pdf"}),
                             (expect("document", {"link": "https://example.com/d/june%20bill.pdf", "filename": "june bill.pdf"}),)),
    "sticker-url": Out(message("sticker", sticker={"url": "https://example.com/s.webp"}),
                       (expect("sticker", {"link": "https://example.com/s.webp"}),)),
    "sticker-id": Out(message("sticker", sticker={"id": "1234567890"}), (expect("sticker", {"id": "1234567890"}),)),
    "template-parameters-bcp47": Out(
        message("template", template={"name": "whatsapp:hsm:verify", "parameters": ["Acme", "12345"]},
                whatsapp={"policy": "deterministic", "locale": "en-GB"}),
        (expect("template", {"name": "verify", "language": {"policy": "deterministic", "code": "en_GB"},
                             "components": [{"type": "body", "parameters": [
                                 {"type": "text", "text": "Acme"}, {"type": "text", "text": "12345"}]}]}),),
        (ok(),)),
    "template-no-parameters-sdk-locale": Out(
        message("template", template={"name": "hello_world"}, whatsapp={"locale": "en_US"}),
        (expect("template", {"name": "hello_world", "language": {"policy": "deterministic", "code": "en_US"}}),)),
    "template-header-media-and-button": Out(
        message("template", template={"name": "sale", "parameters": ["20%"], "components": HEADER_AND_BUTTON},
                whatsapp={"locale": "pt_BR"}),
        (expect("template", {"name": "sale", "language": {"policy": "deterministic", "code": "pt_BR"}, "components": [
            {"type": "body", "parameters": [{"type": "text", "text": "20%"}]}, *HEADER_AND_BUTTON]}),)),
    "custom-interactive": Out(message("custom", custom=CUSTOM_INTERACTIVE),
                              ({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "447700900001",
                                "biz_opaque_callback_data": "uuid-1",
                                **CUSTOM_INTERACTIVE},)),
    "custom-location-reply": Out(message("custom", custom=CUSTOM_LOCATION, context={"message_uuid": "u", "message_id": WAMID}),
                                 ({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "447700900001",
                                   "biz_opaque_callback_data": "uuid-1", "context": {"message_id": WAMID}, **CUSTOM_LOCATION},)),
    "custom-contacts": Out(message("custom", custom=CUSTOM_CONTACTS),
                           ({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "447700900001",
                             "biz_opaque_callback_data": "uuid-1", **CUSTOM_CONTACTS},)),
    "custom-reaction-to-context": Out(
        message("custom", custom={"type": "reaction", "reaction": {"emoji": "\U0001f44d"}},
                context={"message_uuid": "u", "message_id": WAMID}),
        ({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "447700900001",
          "biz_opaque_callback_data": "uuid-1", "type": "reaction",
          "reaction": {"emoji": "\U0001f44d", "message_id": WAMID}},)),
    "rate-limit-130429": failing(error(130429), Throttled, 1000),
    "pair-rate-limit-131056": failing(error(131056), Throttled, 1000),
    "app-rate-limit-4": failing(error(4), Throttled, 1000),
    "http-429-unknown-code": failing(Answer(429, {"error": {"message": "slow", "type": "X", "code": 999}}), Throttled),
    "re-engagement-131047": failing(error(131047, message="Re-engagement message"), Rejected, 1340),
    "undeliverable-131026": failing(error(131026, message="Message undeliverable"), Undeliverable, 1300),
    "opted-out-131050": failing(error(131050), Undeliverable, 1240),
    "token-190": failing(error(190, status=401), Rejected, 1370),
    "permission-200-range": failing(error(294), Rejected, 1030),
    "template-missing-132001": failing(error(132001), Rejected, 1022),
    "not-allowed-list-131030": failing(error(131030), Rejected, 1150),
    "invalid-parameter-100": failing(error(100), Rejected, 1020),
    "unknown-code-400": failing(error(987654), Rejected, 1020),
    "something-went-wrong-131000": failing(error(131000, status=500), Unavailable, 1331),
    "maintenance-131057": failing(error(131057), Unavailable, 1331),
    "html-503": failing(Answer(503, raw=b"<html>down</html>"), Unavailable, 1331),
    "answer-without-id": failing(Answer(200, {"messaging_product": "whatsapp", "messages": []}), Unavailable),
    "timeout": failing(Answer(delay=3.0), Unavailable, 1331),
    "wrong-token-refused-by-meta": Out(message(), (TEXT,), (), Rejected, 1370, ChannelLink(
        "l", "whatsapp", "whatsapp", {**CONFIG, "access_token": "EAAG-not-the-token"})),
    "text-over-4096-refused-unsent": Out(message(text="x" * 4097), (), (), Rejected, 1020),
    "no-token-unsent": Out(message(), (), (), Misconfigured, 1030,
                           ChannelLink("l", "whatsapp", "whatsapp", {"phone_number_id": NUMBER_ID})),
}


@pytest.fixture(scope="module")
def cloud() -> Iterator[FakeWhatsapp]:
    with FakeWhatsapp(token=TOKEN) as fake:
        yield fake


@pytest.mark.parametrize("name", list(OUTBOUND))
def test_outbound(cloud: FakeWhatsapp, name: str, caplog: pytest.LogCaptureFixture) -> None:
    case = OUTBOUND[name]
    to = str(abs(hash(name)) % 10**9 + 447000000000)
    msg = OutboundMessage("uuid-1", "whatsapp", case.message.message_type, to, NUMBER_ID, case.message.body)
    cloud.script(*case.answers, to=to)
    settings = Settings(graph_api_url=cloud.url, graph_api_version="v21.0", provider_timeout=2.0)
    caplog.set_level(logging.DEBUG)

    async def run() -> Any:
        channel = WhatsappChannel(settings)
        try:
            return await channel.send(msg, case.link)
        except SendError as exc:
            return exc
        finally:
            await channel.close()

    result = asyncio.run(run())
    sent = cloud.snapshot(to)
    assert [r.body for r in sent] == [dict(b, to=to) for b in case.requests]
    assert all(r.path == f"/v21.0/{NUMBER_ID}/messages" for r in sent)
    assert cloud.unused(to) == [], "every scripted answer is used"
    if case.error is None:
        assert result.provider_ref.startswith("wamid.FAKE")
    else:
        assert type(result) is case.error, result
        assert result.retryable is (case.error in (Throttled, Unavailable))
        if case.code is not None:
            assert result.code == case.code
        assert TOKEN not in str(result)
    assert TOKEN not in caplog.text and SECRET not in caplog.text


def test_every_meta_code_of_the_table_is_documented() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "channels.md").read_text()
    section = doc.split("## WhatsApp", 1)[1].split("\n## ", 1)[0]
    missing = [code for code in ERRORS if str(code) not in section]
    assert missing == []


# -- validation ------------------------------------------------------------------------------


def v1(message_type: str = "text", to: str = "447700900001", sender: str = BUSINESS, **extra: Any) -> dict:
    body = {"channel": "whatsapp", "message_type": message_type, "to": to, "from": sender, **extra}
    if message_type == "text":
        body.setdefault("text", "Nexmo")
    return body


TEMPLATE = {"name": "verify", "parameters": ["Acme"]}
VALID: dict[str, dict] = {
    "text": v1(),
    "from-phone-number-id": v1(sender=NUMBER_ID),
    "image": v1("image", image={"url": "https://example.com/a.jpg", "caption": "c"}),
    "file-with-name": v1("file", file={"url": "https://example.com/a.pdf", "name": "a.pdf"}),
    "sticker-id": v1("sticker", sticker={"id": "42"}),
    "template": v1("template", template=TEMPLATE, whatsapp={"policy": "deterministic", "locale": "en-GB"}),
    "custom": v1("custom", custom=CUSTOM_INTERACTIVE),
    "reply": v1(context={"message_uuid": str(uuid.uuid4())}),
}
INVALID: dict[str, tuple[dict, set[str]]] = {
    "text-4097": (v1(text="x" * 4097), {"text"}),
    "to-not-a-number": (v1(to="psid-1"), {"to"}),
    "from-alphanumeric": (v1(sender="Acme"), {"from"}),
    "sticker-both": (v1("sticker", sticker={"id": "1", "url": "https://example.com/s.webp"}), {"sticker"}),
    "sticker-neither": (v1("sticker", sticker={}), {"sticker"}),
    "sticker-missing": (v1("sticker"), {"sticker"}),
    "template-without-whatsapp": (v1("template", template=TEMPLATE), {"whatsapp"}),
    "template-without-locale": (v1("template", template=TEMPLATE, whatsapp={"policy": "deterministic"}), {"whatsapp.locale"}),
    "template-fallback-policy": (v1("template", template=TEMPLATE, whatsapp={"policy": "fallback", "locale": "en"}),
                                 {"whatsapp.policy"}),
    "template-bad-locale": (v1("template", template=TEMPLATE, whatsapp={"locale": "english please"}), {"whatsapp.locale"}),
    "template-body-twice": (v1("template", template={**TEMPLATE, "components": [{"type": "body", "parameters": []}]},
                               whatsapp={"locale": "en"}), {"template.components"}),
    "template-component-untyped": (v1("template", template={"name": "x", "components": [{"parameters": []}]},
                                      whatsapp={"locale": "en"}), {"template.components"}),
    "custom-without-type": (v1("custom", custom={"location": {}}), {"custom.type"}),
    "custom-sets-to": (v1("custom", custom={"type": "text", "text": {"body": "x"}, "to": "447700900999"}), {"custom.to"}),
    "custom-missing": (v1("custom"), {"custom"}),
    "every-bad-field-named": (v1("image", to="x", sender="y", image={"url": "ftp://x"}, context={"message_uuid": ""}),
                              {"to", "from", "image.url", "context.message_uuid"}),
    "type-unknown": (v1("reaction"), {"message_type"}),
}


@pytest.mark.parametrize("name", list(VALID))
def test_valid(name: str) -> None:
    stored = validate_v1(VALID[name])
    assert stored["channel"] == "whatsapp"


@pytest.mark.parametrize("name", list(INVALID))
def test_invalid_names_every_bad_field(name: str) -> None:
    body, names = INVALID[name]
    with pytest.raises(ProblemError) as caught:
        validate_v1(body)
    assert caught.value.status == 422
    assert {p.name for p in caught.value.invalid_parameters} == names


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
    cloud: FakeWhatsapp
    receiver: WebhookReceiver
    link: dict

    def hooks(self, **match: Any) -> list[Hook]:
        return [h for h in self.receiver.snapshot(accepted_only=True)
                if h.path == "/status" and all(h.json.get(k) == v for k, v in match.items())]

    def final(self, message_uuid: str) -> dict:
        self.receiver.wait_for(lambda _: bool(self.hooks(message_uuid=message_uuid)), timeout=15)
        return self.hooks(message_uuid=message_uuid)[0].json

    def wrote(self, user: str, seconds_ago: float = 60) -> None:
        """The user wrote to the business number `seconds_ago` (what inbound messages record)."""
        engine = sync_engine(self.server.data_dir)
        try:
            with engine.begin() as conn:
                conn.execute(conversation_windows.insert().values(
                    link_id=self.link["id"], user_id=user, last_inbound_at=time.time() - seconds_ago))
        finally:
            engine.dispose()

    def send(self, body: dict) -> str:
        with self.server.client() as client:
            response = client.post("/v1/messages", json=body, headers=self.server.bearer())
        assert response.status_code == 202, response.text
        return str(response.json()["message_uuid"])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data_dir: Path = tmp_path_factory.mktemp("whatsapp")
    with FakeWhatsapp(token=TOKEN) as cloud, WebhookReceiver() as receiver:
        server = provisioned_server(data_dir, env={**FAST, "MISSIVE_GRAPH_API_URL": cloud.url})
        try:
            send_webhooks_to(server, receiver)
            link = missive_json(data_dir, "channel", "add", "whatsapp", "--phone-number-id", NUMBER_ID, "--waba-id", WABA,
                                "--access-token", TOKEN, "--app-secret", SECRET, "--verify-token", VERIFY,
                                "--phone-number", BUSINESS, "--app", server.app_id, "--tps", "50", "--json")
            yield Live(server, cloud, receiver, link)
        finally:
            server.stop()


def failure(hook: dict) -> tuple[int, str]:
    """A status webhook's error code and reason (v1 writes them as `title` and `detail`
    in the vendor's problem shape, the beta as `code` and `reason`)."""
    error = hook["error"]
    return int(error.get("code", error.get("title"))), str(error.get("reason", error.get("detail")))


def sdk(model: Any) -> dict:
    return json.loads(json.dumps(model.model_dump(by_alias=True, exclude_none=True)))


def test_link_hides_its_secrets(live: Live) -> None:
    assert live.link["kind"] == live.link["channel"] == "whatsapp"
    assert live.link["config"] == {"phone_number_id": NUMBER_ID, "waba_id": WABA, "phone_number": BUSINESS}
    assert live.link["tps"] == 50
    with live.server.client() as client:
        shown = json.dumps(client.get("/v1/channels", auth=live.server.basic).json())
    assert TOKEN not in shown and SECRET not in shown and VERIFY not in shown


def test_link_config_is_validated_over_the_api(live: Live) -> None:
    with live.server.client() as client:
        response = client.post("/v1/channels", auth=live.server.basic, json={
            "kind": "whatsapp", "channel": "whatsapp", "name": "bad",
            "config": {"phone_number_id": "+1 555", "phone_number": "0044"}})
    assert response.status_code == 422
    names = {p["name"] for p in response.json()["invalid_parameters"]}
    assert names == {"config.phone_number_id", "config.phone_number", "config.waba_id", "config.access_token",
                     "config.app_secret", "config.verify_token"}


def test_cli_refuses_a_link_without_a_token(live: Live) -> None:
    result = missive(live.server.data_dir, "channel", "add", "whatsapp", "--phone-number-id", NUMBER_ID, "--waba-id", WABA,
                     "--access-token", "", "--app-secret", SECRET, "--verify-token", VERIFY)
    assert result.returncode != 0
    assert "access_token" in result.stderr


def test_every_sdk_class_goes_out_as_its_cloud_api_request(live: Live) -> None:
    user = "447700900201"
    live.wrote(user)
    ids = {"from_": BUSINESS, "to": user}
    models = {
        "text": WhatsappText(text="Nexmo", **ids),
        "image": WhatsappImage(image=WhatsappImageResource(url="https://example.com/a.jpg", caption="Cat"), **ids),
        "audio": WhatsappAudio(audio=WhatsappAudioResource(url="https://example.com/a.mp3"), **ids),
        "video": WhatsappVideo(video=WhatsappVideoResource(url="https://example.com/a.mp4"), **ids),
        "file": WhatsappFile(file=WhatsappFileResource(url="https://example.com/a.pdf", name="a.pdf"), **ids),
        "sticker-url": WhatsappSticker(sticker=WhatsappStickerUrl(url="https://example.com/s.webp"), **ids),
        "sticker-id": WhatsappSticker(sticker=WhatsappStickerId(id="777"), from_=NUMBER_ID, to=user),
        "template": WhatsappTemplate(template=WhatsappTemplateResource(name="verify", parameters=["Acme"]),
                                     whatsapp=WhatsappTemplateSettings(locale="en-GB", policy="deterministic"), **ids),
        "custom": WhatsappCustom(custom=CUSTOM_LOCATION, **ids),
    }
    uuids = {name: live.send(sdk(model)) for name, model in models.items()}
    for name, message_uuid in uuids.items():
        hook = live.final(message_uuid)
        assert hook["status"] == "submitted", (name, hook)
        assert (hook["channel"], hook["to"]) == ("whatsapp", user)
    bodies = [r.body for r in live.cloud.snapshot(user)]
    by_type: dict[str, list[dict]] = {}
    for body in bodies:
        by_type.setdefault(body["type"], []).append(body)
    assert by_type["text"] == [{"messaging_product": "whatsapp", "recipient_type": "individual", "to": user,
                                "biz_opaque_callback_data": uuids["text"],
                                "type": "text", "text": {"body": "Nexmo", "preview_url": False}}]
    assert by_type["image"][0]["image"] == {"link": "https://example.com/a.jpg", "caption": "Cat"}
    assert by_type["audio"][0]["audio"] == {"link": "https://example.com/a.mp3"}
    assert by_type["video"][0]["video"] == {"link": "https://example.com/a.mp4"}
    assert by_type["document"][0]["document"] == {"link": "https://example.com/a.pdf", "filename": "a.pdf"}
    assert sorted(json.dumps(b["sticker"]) for b in by_type["sticker"]) == sorted(
        [json.dumps({"link": "https://example.com/s.webp"}), json.dumps({"id": "777"})])
    assert by_type["template"][0]["template"] == {
        "name": "verify", "language": {"policy": "deterministic", "code": "en_GB"},
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "Acme"}]}]}
    assert by_type["location"][0]["location"] == CUSTOM_LOCATION["location"]
    for request in live.cloud.snapshot(user):
        assert request.path == f"/v19.0/{NUMBER_ID}/messages" and request.authorization == f"Bearer {TOKEN}"
    with live.server.client() as client:
        seen = client.get(f"/v1/messages/{uuids['text']}", auth=live.server.basic).json()
    assert seen["history"][-1]["provider_ref"].startswith("wamid.FAKE")
    log = live.server.log()
    assert TOKEN not in log and SECRET not in log


def test_free_form_outside_the_window_is_rejected_without_calling_meta(live: Live) -> None:
    never, stale = "447700900202", "447700900203"
    live.wrote(stale, seconds_ago=24 * 3600 + 60)
    curl_text = {"channel": "whatsapp", "message_type": "text", "to": never, "from": BUSINESS, "text": "Hi"}
    refused = [live.send(curl_text), live.send({**curl_text, "to": stale}),
               live.send(v1("image", to=never, image={"url": "https://example.com/a.jpg"}))]
    curl_template = {"channel": "whatsapp", "message_type": "template", "to": never, "from": BUSINESS,
                     "template": {"name": "welcome", "parameters": ["Ada"]},
                     "whatsapp": {"policy": "deterministic", "locale": "en-US"}}
    templates = [live.send(curl_template),
                 live.send(v1("custom", to=stale, custom={"type": "template", "template": {
                     "name": "welcome", "language": {"policy": "deterministic", "code": "en"}}}))]
    for message_uuid in refused:
        hook = live.final(message_uuid)
        assert (hook["status"], failure(hook)[0]) == ("rejected", 1340)
        assert "24 hours" in failure(hook)[1] and "template" in failure(hook)[1]
    for message_uuid in templates:
        assert live.final(message_uuid)["status"] == "submitted"
    assert [r.body["type"] for r in live.cloud.snapshot(never)] == ["template"]
    assert [r.body["type"] for r in live.cloud.snapshot(stale)] == ["template"]
    assert live.cloud.snapshot(never)[0].body["template"]["language"] == {"policy": "deterministic", "code": "en_US"}


def test_replies_carry_the_wamid_of_the_message_they_answer(live: Live) -> None:
    user = "447700900204"
    live.wrote(user)
    first = live.send(v1(to=user, sender=NUMBER_ID))
    assert live.final(first)["status"] == "submitted"
    inbound_uuid = str(uuid.uuid4())
    engine = sync_engine(live.server.data_dir)
    try:
        with engine.begin() as conn:
            # A message the user sent, as the inbound side records it (wamid as provider_ref).
            conn.execute(inbound_messages.insert().values(
                uuid=inbound_uuid, account_id=_account_id(live), application_id=live.server.app_id, channel="whatsapp",
                message_type="text", to_addr=BUSINESS, from_addr=user, payload={"text": "hi"}, provider_ref=WAMID,
                status="received", created_at=time.time()))
    finally:
        engine.dispose()
    to_ours = live.send(sdk(WhatsappText(text="Re: ours", to=user, from_=BUSINESS, context=WhatsappContext(message_uuid=first))))
    to_theirs = live.send(v1("custom", to=user, custom={"type": "reaction", "reaction": {"emoji": "\u2764"}},
                             context={"message_uuid": inbound_uuid}))
    unknown = live.send(v1(to=user, text="Re: ?", context={"message_uuid": str(uuid.uuid4())}))
    assert live.final(to_ours)["status"] == live.final(to_theirs)["status"] == "submitted"
    hook = live.final(unknown)
    assert (hook["status"], failure(hook)[0]) == ("rejected", 1020)
    assert "context.message_uuid" in failure(hook)[1]
    bodies = {r.body.get("text", {}).get("body") or r.body["type"]: r.body for r in live.cloud.snapshot(user)}
    assert bodies["Re: ours"]["context"] == {"message_id": _ref(live, first)}
    assert bodies["reaction"]["reaction"] == {"emoji": "\u2764", "message_id": WAMID}
    assert "context" not in bodies["reaction"]
    assert "Re: ?" not in bodies


def _ref(live: Live, message_uuid: str) -> str:
    with live.server.client() as client:
        history = client.get(f"/v1/messages/{message_uuid}", auth=live.server.basic).json()["history"]
    return str(next(e["provider_ref"] for e in history if e.get("provider_ref")))


def _account_id(live: Live) -> str:
    engine = sync_engine(live.server.data_dir)
    try:
        with engine.connect() as conn:
            return str(conn.execute(select(channel_links.c.account_id).where(channel_links.c.id == live.link["id"])).scalar())
    finally:
        engine.dispose()


def test_meta_errors_become_statuses_and_retries(live: Live) -> None:
    engaged, gone, busy, paired = "447700900205", "447700900206", "447700900207", "447700900208"
    for user in (engaged, gone, busy, paired):
        live.wrote(user)
    live.cloud.script(error(131047, message="Re-engagement message"), to=engaged)
    live.cloud.script(error(131026, message="Message undeliverable"), to=gone)
    live.cloud.script(error(130429, message="Rate limit hit"), error(131000, status=500), ok(), to=busy)
    live.cloud.script(error(131056, message="Pair rate limit hit"), ok(), to=paired)
    uuids = {user: live.send(v1(to=user)) for user in (engaged, gone, busy, paired)}
    hook = live.final(uuids[engaged])
    assert (hook["status"], failure(hook)[0]) == ("rejected", 1340)
    hook = live.final(uuids[gone])
    assert (hook["status"], failure(hook)[0]) == ("undeliverable", 1300)
    assert live.final(uuids[busy])["status"] == "submitted"
    assert live.final(uuids[paired])["status"] == "submitted"
    assert len(live.cloud.snapshot(busy)) == 3 and len(live.cloud.snapshot(paired)) == 2
    assert live.cloud.unused() == []


def test_a_number_no_link_serves_is_refused(live: Live) -> None:
    hook = live.final(live.send(v1(to="447700900209", sender="447700900999")))
    assert (hook["status"], failure(hook)[0]) == ("rejected", 1490)
    assert live.cloud.snapshot("447700900209") == []


def test_a_send_is_in_the_provider_log_with_the_token_masked(live: Live) -> None:
    user = "447700900777"
    live.wrote(user)
    message_uuid = live.send(v1(to=user, text="logged"))
    assert live.final(message_uuid)["status"] == "submitted"
    with live.server.client() as client:
        answer = client.get(f"/v1/messages/{message_uuid}/logs", headers=live.server.bearer())
    assert answer.status_code == 200
    logs = answer.json()["_embedded"]["logs"]
    assert [(e["direction"], e["protocol"]) for e in logs] == [("out", "http"), ("in", "http")]
    assert logs[0]["summary"].startswith("POST ") and logs[0]["summary"].endswith(f"/{NUMBER_ID}/messages")
    assert '"body":"logged"' in logs[0]["detail"]["body"].replace(" ", "")
    assert logs[1]["detail"]["status"] == 200 and "wamid" in logs[1]["detail"]["body"]
    assert TOKEN not in answer.text

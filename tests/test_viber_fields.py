"""Every field the official Python SDK's Viber classes send (vonage_messages
models/viber.py), and what of it reaches Viber's bot API: tables through validation and
the channel against the fake Viber, then end to end through `missive serve`."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from vonage_messages.models import (
    ViberAction,
    ViberFile,
    ViberFileOptions,
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

from missive.api.errors import ProblemError
from missive.channels.base import ChannelLink, OutboundMessage
from missive.channels.viber import MEGABYTE, ViberChannel
from missive.config import Settings
from missive.schemas.beta import validate_beta
from missive.schemas.v1 import validate_v1
from missive.url_safety import policy_for
from tests.fakes.fake_viber import MEDIA_SIZE, FakeViber
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.harness import Server, missive, provisioned_server

TOKEN = "445da6az1s345z78-dazcczb2542zv51a-e0vc5fva17480im9"
SERVICE = "acme-bot"
USER = "01234567890A="
PHONE = "447700900123"  # the SDK's `to` is always a number
BUTTON = {"url": "https://acme.example/track/1", "text": "Track order"}


def keyboard(url: str, text: str) -> dict[str, Any]:
    button = {"Columns": 6, "Rows": 1, "ActionType": "open-url", "ActionBody": url, "Text": text}
    return {"Type": "keyboard", "DefaultHeight": False, "Buttons": [button]}


def dump(message: Any) -> dict[str, Any]:
    return dict(message.model_dump(by_alias=True, exclude_none=True))


# -- the SDK's classes, one table ------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    # The v1 body, from the media host's base URL.
    body: Callable[[str], dict[str, Any]]
    # What reaches Viber besides receiver, sender, tracking_data and min_api_version.
    expect: Callable[[str], dict[str, Any]]
    heads: int = 0  # HEAD requests to the media host
    absent: tuple[str, ...] = field(default=())


CASES = [
    Case("ViberText", lambda m: dump(ViberText(to=PHONE, from_=SERVICE, text="Your order shipped")),
         lambda m: {"type": "text", "text": "Your order shipped"}, absent=("keyboard",)),
    Case("ViberText with action: a keyboard of one open-url button",
         lambda m: dump(ViberText(to=PHONE, from_=SERVICE, text="Your order shipped",
                                  viber_service=ViberTextOptions(category="transaction", ttl=600,
                                                                 action=ViberAction(**BUTTON)))),
         lambda m: {"type": "text", "text": "Your order shipped", "keyboard": keyboard(**BUTTON)}),
    Case("ViberImage with caption and action",
         lambda m: dump(ViberImage(to=PHONE, from_=SERVICE, image=ViberImageResource(url=f"{m}/media/p.jpg", caption="Look"),
                                   viber_service=ViberImageOptions(action=ViberAction(**BUTTON)))),
         lambda m: {"type": "picture", "media": f"{m}/media/p.jpg", "text": "Look", "keyboard": keyboard(**BUTTON)}),
    Case("ViberVideo: thumbnail, duration, size and text as given, no HEAD",
         lambda m: dump(ViberVideo(to=PHONE, from_=SERVICE,
                                   video=ViberVideoResource(url=f"{m}/media/v.mp4", thumb_url=f"{m}/media/t.jpg",
                                                            caption="Unboxing"),
                                   viber_service=ViberVideoOptions(duration="42", file_size="7", category="promotion"))),
         lambda m: {"type": "video", "media": f"{m}/media/v.mp4", "thumbnail": f"{m}/media/t.jpg",
                    "duration": 42, "size": 7 * MEGABYTE, "text": "Unboxing"}),
    Case("ViberVideo without caption",
         lambda m: dump(ViberVideo(to=PHONE, from_=SERVICE,
                                   video=ViberVideoResource(url=f"{m}/media/v.mp4", thumb_url=f"{m}/media/t.jpg"),
                                   viber_service=ViberVideoOptions(duration="1", file_size="200"))),
         lambda m: {"type": "video", "media": f"{m}/media/v.mp4", "thumbnail": f"{m}/media/t.jpg",
                    "duration": 1, "size": 200 * MEGABYTE}, absent=("text",)),
    Case("ViberFile with name: the file_name, size asked with a HEAD",
         lambda m: dump(ViberFile(to=PHONE, from_=SERVICE, file=ViberFileResource(url=f"{m}/media/x7f3", name="invoice-42.pdf"),
                                  viber_service=ViberFileOptions(category="transaction", type="string"))),
         lambda m: {"type": "file", "media": f"{m}/media/x7f3", "file_name": "invoice-42.pdf", "size": MEDIA_SIZE},
         heads=1),
    Case("ViberFile without name: the URL's last segment",
         lambda m: dump(ViberFile(to=PHONE, from_=SERVICE, file=ViberFileResource(url=f"{m}/media/report.pdf"))),
         lambda m: {"type": "file", "media": f"{m}/media/report.pdf", "file_name": "report.pdf", "size": MEDIA_SIZE},
         heads=1),
    # Not what the SDK's classes build, but what the v1 format allows.
    Case("video without file_size: size from a HEAD, nothing invented",
         lambda m: {"channel": "viber_service", "message_type": "video", "to": USER, "from": SERVICE,
                    "video": {"url": f"{m}/media/v.mp4"}},
         lambda m: {"type": "video", "media": f"{m}/media/v.mp4", "size": MEDIA_SIZE},
         heads=1, absent=("duration", "thumbnail", "text", "keyboard")),
    Case("action on a video",
         lambda m: {"channel": "viber_service", "message_type": "video", "to": USER, "from": SERVICE,
                    "video": {"url": f"{m}/media/v.mp4"}, "viber_service": {"file_size": 3, "duration": 9, "action": BUTTON}},
         lambda m: {"type": "video", "media": f"{m}/media/v.mp4", "size": 3 * MEGABYTE, "duration": 9,
                    "keyboard": keyboard(**BUTTON)}),
]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeViber]:
    with FakeViber(auth_token=TOKEN) as viber:
        yield viber


def link() -> ChannelLink:
    return ChannelLink("link-1", "viber", "viber_service", {"service_id": SERVICE, "auth_token": TOKEN, "sender_name": "Acme"})


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_sdk_fields_reach_viber(case: Case, fake: FakeViber) -> None:
    settings = Settings(viber_api_url=fake.url(), provider_timeout=2.0, allow_private_urls=True)
    stored = validate_v1(orjson.loads(orjson.dumps(case.body(fake.url()))), policy_for(settings))
    # The dispatcher sends to the user id it resolved for the number.
    message = OutboundMessage(str(uuidlib.uuid4()), "viber_service", stored["message_type"], USER, SERVICE, stored)
    heads = len(fake.media_heads)

    async def run() -> None:
        channel = ViberChannel(settings)
        try:
            await channel.send(message, link())
        finally:
            await channel.close()

    asyncio.run(run())
    call = fake.sent()[-1].json
    assert call["tracking_data"] == message.uuid and call["receiver"] == USER
    expected = case.expect(fake.url())
    assert {key: call.get(key) for key in expected} == expected
    assert [key for key in case.absent if key in call] == []
    assert len(fake.media_heads) - heads == case.heads
    assert fake.unused() == {}


# -- what is refused, by name ------------------------------------------------------------------


def viber(**fields: Any) -> dict[str, Any]:
    return {"channel": "viber_service", "message_type": "text", "to": USER, "from": SERVICE, "text": "hi", **fields}


def video(video: dict[str, Any], **options: Any) -> dict[str, Any]:
    return viber(message_type="video", text=None, video=video, viber_service=options)


REFUSED = [
    ("template", viber(viber_service={"type": "template"}), "viber_service.type", "template is not supported"),
    ("unknown type", viber(viber_service={"type": "carousel"}), "viber_service.type", "must be string"),
    ("action text over 30", viber(viber_service={"action": {"url": BUTTON["url"], "text": "x" * 31}}),
     "viber_service.action.text", "at most 30"),
    ("action without url", viber(viber_service={"action": {"text": "Go"}}), "viber_service.action.url", "is required"),
    ("action to an internal address", viber(viber_service={"action": {"url": "http://169.254.169.254/", "text": "Go"}}),
     "viber_service.action.url", ""),
    ("duration over 600", video({"url": "https://m.example/v.mp4"}, duration="601"), "viber_service.duration", "600"),
    ("duration not a number", video({"url": "https://m.example/v.mp4"}, duration="ten"), "viber_service.duration",
     "integer"),
    ("file_size 0", video({"url": "https://m.example/v.mp4"}, file_size="0"), "viber_service.file_size", "1"),
    ("thumb_url not a URL", video({"url": "https://m.example/v.mp4", "thumb_url": "thumb.jpg"}), "video.thumb_url", ""),
    ("empty file name", viber(message_type="file", text=None, file={"url": "https://m.example/f.pdf", "name": ""}),
     "file.name", ""),
]


@pytest.mark.parametrize(("name", "body", "where", "reason"), REFUSED, ids=[c[0] for c in REFUSED])
def test_refused(name: str, body: dict[str, Any], where: str, reason: str) -> None:
    with pytest.raises(ProblemError) as raised:
        validate_v1({k: v for k, v in body.items() if v is not None})
    assert raised.value.status == 422
    params = {p.name: p.reason for p in raised.value.invalid_parameters}
    assert where in params, params
    assert reason in params[where]


def test_beta_template_is_refused_at_its_beta_path() -> None:
    body = {"from": {"type": "viber_service_msg", "id": SERVICE}, "to": {"type": "viber_service_msg", "id": USER},
            "message": {"content": {"type": "text", "text": "hi"}, "viber_service_msg": {"type": "template"}}}
    with pytest.raises(ProblemError) as raised:
        validate_beta(body)
    assert [p.name for p in raised.value.invalid_parameters] == ["message.viber_service_msg.type"]


def test_stored_form_reads_the_sdk_strings_as_integers() -> None:
    sent = dump(ViberVideo(to=PHONE, from_=SERVICE,
                           video=ViberVideoResource(url="https://m.example/v.mp4", thumb_url="https://m.example/t.jpg"),
                           viber_service=ViberVideoOptions(duration="42", file_size="7", type="string")))
    stored = validate_v1(sent)
    assert stored["viber_service"] == {"duration": 42, "file_size": 7, "type": "string", "category": "transaction"}
    assert stored["video"] == {"url": "https://m.example/v.mp4", "thumb_url": "https://m.example/t.jpg"}


# -- end to end ------------------------------------------------------------------------------------


FAST = {
    "MISSIVE_DISPATCH_BACKOFF_BASE": "0.05",
    "MISSIVE_WEBHOOK_BACKOFF_BASE": "0.05",
    "MISSIVE_POLL_INTERVAL": "0.05",
}


@dataclass
class Hub:
    server: Server
    receiver: WebhookReceiver
    viber: FakeViber

    def post(self, body: dict[str, Any]) -> Any:
        with self.server.client() as client:
            return client.post("/v1/messages", content=orjson.dumps(body), auth=self.server.basic,
                               headers={"Content-Type": "application/json"})

    def callback(self, data: dict[str, Any]) -> int:
        body = orjson.dumps(data)
        signature = hmac.new(TOKEN.encode(), body, hashlib.sha256).hexdigest()
        with self.server.client() as client:
            response = client.post(f"/inbound/viber/{SERVICE}", content=body,
                                   headers={"Content-Type": "application/json", "X-Viber-Content-Signature": signature})
        return int(response.status_code)

    def sent(self, uuid: str) -> dict[str, Any]:
        calls = self.viber.wait_for(lambda calls: any(c.json.get("tracking_data") == uuid for c in calls))
        return dict(next(c.json for c in calls if c.json.get("tracking_data") == uuid))

    def statuses(self, uuid: str) -> list[dict[str, Any]]:
        self.receiver.wait_for(lambda hooks: any(h.json.get("message_uuid") == uuid for h in hooks))
        return [h.json for h in self.receiver.snapshot() if h.json.get("message_uuid") == uuid]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    data_dir = tmp_path_factory.mktemp("viber-fields")
    with FakeViber(auth_token=TOKEN) as viber, WebhookReceiver() as receiver:
        server = provisioned_server(data_dir, env={**FAST, "MISSIVE_VIBER_API_URL": viber.url()})
        try:
            updated = missive(data_dir, "account", "update", "--api-key", server.api_key,
                              "--status-url", receiver.url("/status"), "--inbound-url", receiver.url("/inbound"))
            assert updated.returncode == 0, updated.stderr
            env = {"MISSIVE_VIBER_API_URL": viber.url(), "MISSIVE_PUBLIC_URL": server.url}
            added = missive(data_dir, "channel", "add", "viber", "--service-id", SERVICE, "--auth-token", TOKEN,
                            "--sender-name", "Acme", "--default", "--api-key", server.api_key, "--json", env=env)
            assert added.returncode == 0, added.stderr
            hub = Hub(server, receiver, viber)
            # The user shares their contact: Missive learns their number.
            shared = {"event": "message", "timestamp": 1, "message_token": 4912661846655238145,
                      "sender": {"id": USER, "name": "Jo"},
                      "message": {"type": "contact", "contact": {"name": "Jo", "phone_number": "+" + PHONE}}}
            assert hub.callback(shared) == 200
            yield hub
        finally:
            server.stop()


@pytest.mark.parametrize("case", [c for c in CASES if c.body("").get("to") == PHONE], ids=lambda c: c.name)
def test_e2e_sdk_classes(hub: Hub, case: Case) -> None:
    media = hub.viber.url()
    response = hub.post(case.body(media))
    assert response.status_code == 202, response.text
    call = hub.sent(response.json()["message_uuid"])
    assert call["receiver"] == USER and call["sender"]["name"] == "Acme"
    expected = case.expect(media)
    assert {key: call.get(key) for key in expected} == expected
    assert [key for key in case.absent if key in call] == []


def test_e2e_unknown_number_says_how_to_reach_the_user(hub: Hub) -> None:
    before = len(hub.viber.sent())
    response = hub.post(dump(ViberText(to="447700900999", from_=SERVICE, text="hello")))
    assert response.status_code == 202, response.text
    uuid = response.json()["message_uuid"]
    hook = hub.statuses(uuid)[0]
    assert hook["status"] == "rejected"
    said = orjson.dumps(hook["error"]).decode()
    assert "share their contact with the bot" in said and "Viber user id" in said
    assert len(hub.viber.sent()) == before


def test_e2e_template_is_a_422_naming_the_field(hub: Hub) -> None:
    before = len(hub.viber.sent())
    response = hub.post(dump(ViberText(to=PHONE, from_=SERVICE, text="hello",
                                       viber_service=ViberTextOptions(type="template"))))
    assert response.status_code == 422
    problem = response.json()
    assert [p["name"] for p in problem["invalid_parameters"]] == ["viber_service.type"]
    assert "template is not supported" in problem["invalid_parameters"][0]["reason"]
    assert len(hub.viber.sent()) == before


def test_fields_are_documented() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "channels.md").read_text()
    section = docs.split("## Viber", 1)[1].split("\n## ", 1)[0]
    for name in ("viber_service.action", "video.thumb_url", "viber_service.duration", "viber_service.file_size",
                 "video.caption", "file.name", "viber_service.type", "viber_service.ttl", "viber_service.category"):
        assert f"`{name}`" in section, name

"""Every field of a v1 SMS does what docs/channels.md says, end to end: a real `missive
serve`, the fake SMSC recording what reached it on the wire, webhooks to a receiver.

`ttl` -> submit_sm validity_period (and no submit once it has passed); `sms.entity_id` /
`sms.content_id` -> TLVs (default and per-link tags); `trusted_recipient`, `sms.pool_id`
accepted; inbound SMS carry `sms` in v0.1 webhooks and from the sandbox.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy
from vonage_messages import Sms, SmsOptions

from missive.channels.sms import validity_period
from missive.sms.smpp_pdus import relative_time
from tests.fakes.fake_smsc import FakeSMSC
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.harness import Server, missive, missive_json, provisioned_server, sync_engine

# A retry waits about 2 s: long enough to change a message between two tries.
ENV = {
    "MISSIVE_DISPATCH_BACKOFF_BASE": "2",
    "MISSIVE_WEBHOOK_BACKOFF_BASE": "0.05",
    "MISSIVE_POLL_INTERVAL": "0.05",
    "MISSIVE_SESSIONS_INTERVAL": "0.3",
    "MISSIVE_PROVIDER_TIMEOUT": "2",
}
LONG = "Your one-time code is 482913. It expires in ten minutes; do not share it with anyone. " * 3
RELATIVE = re.compile(r"^0000(\d\d)(\d\d)(\d\d)(\d\d)000R$")


@dataclass
class Live:
    server: Server
    smsc: FakeSMSC
    receiver: WebhookReceiver
    link: dict[str, Any]
    other_link: dict[str, Any]

    def post(self, body: dict[str, Any]) -> str:
        response = httpx.post(f"{self.server.url}/v1/messages", json=body, auth=self.server.basic)
        assert response.status_code == 202, response.text
        return response.json()["message_uuid"]

    def send(self, to: str, text: str = "hello", sender: str = "Acme", **extra: Any) -> str:
        return self.post({"channel": "sms", "message_type": "text", "to": to, "from": sender, "text": text, **extra})

    def statuses(self, message_uuid: str) -> list[dict[str, Any]]:
        return [h.json for h in self.receiver.snapshot(accepted_only=True)
                if h.path == "/status" and h.json.get("message_uuid") == message_uuid]

    def wait_status(self, message_uuid: str, status: str) -> dict[str, Any]:
        self.receiver.wait_for(lambda _: status in [h["status"] for h in self.statuses(message_uuid)], 20)
        return next(h for h in self.statuses(message_uuid) if h["status"] == status)

    def submitted(self, to: str) -> list[dict[str, Any]]:
        accepted = [s for s in self.smsc.submits() if s["destination_addr"] == to and s["status"] == 0]
        return sorted(accepted, key=lambda s: s["message_id"])

    def inbound(self, path: str, sender: str) -> dict[str, Any]:
        def found() -> list[dict[str, Any]]:
            return [h.json for h in self.receiver.snapshot(accepted_only=True) if h.path == path and sender in str(h.json)]
        self.receiver.wait_for(lambda _: bool(found()), 15)
        [hook] = found()
        return hook

    def configure_link(self, config: dict[str, Any]) -> httpx.Response:
        return httpx.patch(f"{self.server.url}/v1/channels/{self.link['id']}", auth=self.server.basic,
                           json={"config": config})


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data_dir = tmp_path_factory.mktemp("sms-fields")
    with FakeSMSC() as smsc, WebhookReceiver() as receiver:
        server = provisioned_server(data_dir, env=ENV)
        try:
            missive(data_dir, "account", "update", "--api-key", server.api_key,
                    "--status-url", receiver.url("/status"), "--inbound-url", receiver.url("/inbound"))
            smpp = ["channel", "add", "sms", "--host", "127.0.0.1", "--port", str(smsc.port),
                    "--system-id", "missive", "--password", "secret"]
            link = missive_json(data_dir, *smpp, "--default", "--json")
            # Messages from "DLTCO" go through a link of an SMSC with other DLT tags.
            other = missive_json(data_dir, *smpp, "--sender", "DLTCO", "--entity-id-tag", "0x3001",
                                 "--content-id-tag", "5376", "--dlt-tlv-format", "octets", "--json")
            smsc.wait_for(lambda s: s["bound"] == 2, timeout=15)
            yield Live(server, smsc, receiver, link, other)
        finally:
            server.stop()


def seconds(validity: str) -> int:
    match = RELATIVE.match(validity)
    assert match, validity
    days, hours, minutes, secs = (int(g) for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + secs


def test_ttl_is_the_validity_period_of_every_part(live: Live) -> None:
    message_uuid = live.send("447700900801", LONG, ttl=604800)
    live.wait_status(message_uuid, "delivered")
    submits = live.submitted("447700900801")
    assert len(submits) == 2 and len({s["validity_period"] for s in submits}) == 1
    # What is left of a week since the message was accepted: a few seconds at most gone.
    assert 604800 - 10 <= seconds(submits[0]["validity_period"]) <= 604800


def test_a_short_ttl_and_none(live: Live) -> None:
    short = live.send("447700900802", ttl=20)
    plain = live.send("447700900803")
    live.wait_status(short, "delivered")
    live.wait_status(plain, "delivered")
    [submit] = live.submitted("447700900802")
    assert 10 <= seconds(submit["validity_period"]) <= 20
    assert live.submitted("447700900803")[0]["validity_period"] == ""  # the SMSC's default


def test_relative_times_are_days_hours_minutes_seconds() -> None:
    assert relative_time(604800) == "000007000000000R"
    assert relative_time(3723) == "000000010203000R"
    assert validity_period(600, 1000.0, 1000.0) == "000000001000000R"
    assert validity_period(600, 1000.0, 1590.2) == "000000000009000R"  # what is left, rounded down
    assert validity_period(600, None, 99999.0) == "000000001000000R"  # no acceptance time known


def test_a_message_whose_ttl_passed_before_it_could_be_sent_is_not_submitted(live: Live) -> None:
    # The SMSC refuses the first try with a temporary error; before the retry, the message
    # is made older than its ttl (its acceptance time moved back a minute).
    live.smsc.configure(errors=[{"status": 0x08, "count": 1}])  # ESME_RSYSERR: retried
    message_uuid = live.send("447700900804", "too late", ttl=20)
    live.smsc.wait_for(lambda s: any(x["destination_addr"] == "447700900804" for x in s["submits"]))
    engine = sync_engine(live.server.data_dir)
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("UPDATE messages SET created_at = created_at - 60 WHERE uuid = :uuid"),
                         {"uuid": message_uuid})
    finally:
        engine.dispose()
    hook = live.wait_status(message_uuid, "undeliverable")
    assert int(hook["error"]["title"]) == 1360 and "TTL" in hook["error"]["detail"]
    tries = [s["status"] for s in live.smsc.submits() if s["destination_addr"] == "447700900804"]
    assert tries == [0x08]  # the refused try only: nothing after the ttl
    assert [h["status"] for h in live.statuses(message_uuid)] == ["undeliverable"]


def test_dlt_ids_are_tlvs_with_the_default_tags(live: Live) -> None:
    message_uuid = live.send("447700900805", LONG, sms={"entity_id": "1101456789012345678",
                                                        "content_id": "1107161234567890123"})
    live.wait_status(message_uuid, "delivered")
    submits = live.submitted("447700900805")
    assert len(submits) == 2
    for submit in submits:  # every part: the operator checks each against the template
        assert submit["tlvs"] == {"0x1400": b"1101456789012345678\0".hex(), "0x1401": b"1107161234567890123\0".hex()}
    plain = live.send("447700900806")
    live.wait_status(plain, "delivered")
    assert live.submitted("447700900806")[0]["tlvs"] == {}


def test_dlt_tags_and_format_are_the_links(live: Live) -> None:
    config = live.other_link["config"]  # as `missive channel add sms` stored them
    assert (config["entity_id_tag"], config["content_id_tag"], config["dlt_tlv_format"]) == (0x3001, 0x1500, "octets")
    message_uuid = live.send("447700900807", sender="DLTCO", sms={"entity_id": "E1", "content_id": "T2"})
    live.wait_status(message_uuid, "delivered")
    [submit] = live.submitted("447700900807")
    assert submit["tlvs"] == {"0x3001": b"E1".hex(), "0x1500": b"T2".hex()}


@pytest.mark.parametrize(("config", "name"), [
    ({"entity_id_tag": 0x0200}, "config.entity_id_tag"),  # a tag of SMPP 3.4 itself
    ({"content_id_tag": 0x4000}, "config.content_id_tag"),
    ({"entity_id_tag": "0x1400"}, "config.entity_id_tag"),
    ({"content_id_tag": 0x1400}, "config"),  # the same tag twice
    ({"dlt_tlv_format": "utf16"}, "config.dlt_tlv_format"),
])
def test_bad_dlt_link_settings_are_refused(live: Live, config: dict[str, Any], name: str) -> None:
    response = live.configure_link(config)
    assert response.status_code == 422, response.text
    names = [p["name"] for p in response.json()["invalid_parameters"]]
    assert any(n.startswith(name) for n in names), names


def test_the_cli_refuses_a_tag_that_is_no_number_or_the_other_ones(live: Live) -> None:
    common = ["channel", "add", "sms", "--host", "127.0.0.1", "--port", "1", "--system-id", "x", "--password", "y"]
    refused = missive(live.server.data_dir, *common, "--entity-id-tag", "PE_ID")
    assert refused.returncode != 0 and "--entity-id-tag" in refused.stderr
    same = missive(live.server.data_dir, *common, "--content-id-tag", "0x1400")  # the entity id's default
    assert same.returncode != 0 and "must differ" in same.stderr


def test_the_sdks_sms_with_every_field_reaches_the_smsc(live: Live) -> None:
    message = Sms(to="447700900808", from_="Acme", text="hello from the SDK", ttl=3600, trusted_recipient=True,
                  client_ref="sdk-sms",
                  sms=SmsOptions(encoding_type="unicode", content_id="1107000000000000001",
                                 entity_id="1101000000000000001", pool_id="pool-1"))
    body = message.model_dump(by_alias=True, exclude_none=True)  # what Vonage.messages.send posts
    assert {"ttl", "trusted_recipient", "sms"} <= body.keys() and body["sms"]["pool_id"] == "pool-1"
    message_uuid = live.post(body)
    live.wait_status(message_uuid, "delivered")
    [submit] = live.submitted("447700900808")
    assert submit["data_coding"] == 8  # encoding_type unicode
    assert 3590 <= seconds(submit["validity_period"]) <= 3600
    assert submit["tlvs"] == {"0x1400": b"1101000000000000001\0".hex(), "0x1401": b"1107000000000000001\0".hex()}
    stored = httpx.get(f"{live.server.url}/v1/messages/{message_uuid}", auth=live.server.basic).json()
    assert stored["client_ref"] == "sdk-sms"


@pytest.mark.parametrize(("body", "name"), [
    ({"trusted_recipient": "yes"}, "trusted_recipient"),
    ({"sms": {"pool_id": 7}}, "sms.pool_id"),
    ({"ttl": 19}, "ttl"),
    ({"ttl": 604801}, "ttl"),
])
def test_wrong_types_are_still_refused(live: Live, body: dict[str, Any], name: str) -> None:
    response = httpx.post(f"{live.server.url}/v1/messages", auth=live.server.basic, json={
        "channel": "sms", "message_type": "text", "to": "447700900809", "from": "Acme", "text": "x", **body})
    assert response.status_code == 422, response.text
    assert name in [p["name"] for p in response.json()["invalid_parameters"]]


def test_v01_inbound_sms_carries_num_messages(live: Live) -> None:
    url = live.receiver.url("/v01-inbound")
    created = httpx.post(f"{live.server.url}/v2/applications", auth=live.server.basic, json={
        "name": "v0.1 app", "capabilities": {"messages": {"version": "v0.1", "webhooks": {
            "inbound_url": {"address": url, "http_method": "POST"},
            "status_url": {"address": live.receiver.url("/v01-status"), "http_method": "POST"}}}}})
    assert created.status_code in (200, 201), created.text
    missive_json(live.server.data_dir, "number", "add", "447700900880", "--app", created.json()["id"], "--json")
    text = "Stop sending me these long messages please, " * 5
    assert live.smsc.deliver("447700900881", "447700900880", text, parts=2)["statuses"] == [0, 0]
    hook = live.inbound("/v01-inbound", "447700900881")
    assert hook["from"] == {"type": "sms", "number": "447700900881"}
    assert hook["message"]["content"] == {"type": "text", "text": text}
    assert hook["message"]["sms"]["num_messages"] == "2"


def test_sandbox_inbound_sms_carries_the_same_sms_object_as_an_smscs(live: Live) -> None:
    text = "Hello there, this inbound message is long enough to take two parts of GSM text: " * 3
    assert live.smsc.deliver("447700900891", "447700900890", text)["statuses"] == [0, 0]
    from_smsc = live.inbound("/inbound", "447700900891")
    response = httpx.post(f"{live.server.url}/v1/sandbox/inbound", auth=live.server.basic,
                          json={"channel": "sms", "from": "447700900892", "to": "447700900890", "text": text})
    assert response.status_code == 202, response.text
    from_sandbox = live.inbound("/inbound", "447700900892")
    assert from_sandbox["sms"] == from_smsc["sms"] == {"num_messages": "2", "keyword": "HELLO"}
    assert {k for k in from_sandbox if k not in ("message_uuid", "timestamp", "from")} == \
        {k for k in from_smsc if k not in ("message_uuid", "timestamp", "from")}
    short = httpx.post(f"{live.server.url}/v1/sandbox/inbound", auth=live.server.basic,
                       json={"channel": "sms", "from": "447700900893", "text": "yes"})
    assert short.status_code == 202
    assert live.inbound("/inbound", "447700900893")["sms"] == {"num_messages": "1", "keyword": "YES"}

"""SMS over SMPP end to end: the HTTP API, a real `missive serve`, and an SMSC simulator
(the npm `smpp` server) on 127.0.0.1, with status and inbound webhooks to a receiver.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from missive.sms.deliveries import parse_receipt
from missive.sms.encoding import decode_payload, split_udh
from missive.sms.gsm import count_parts
from tests.fakes.fake_smsc import FakeSMSC
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.harness import Server, missive, missive_json, provisioned_server, query

FAST = {
    "MISSIVE_DISPATCH_BACKOFF_BASE": "0.05",
    "MISSIVE_WEBHOOK_BACKOFF_BASE": "0.05",
    "MISSIVE_POLL_INTERVAL": "0.05",
    "MISSIVE_SESSIONS_INTERVAL": "0.3",
    "MISSIVE_PROVIDER_TIMEOUT": "2",
}
GSM_LONG = ("Hello {world} [SMPP] ~ €uro | back\\slash ^caret; " * 9).strip()  # extension characters throughout
UCS2_LONG = "Привет, мир! 😀 Ünïcödé — " * 8


@dataclass
class Live:
    server: Server
    smsc: FakeSMSC
    receiver: WebhookReceiver
    link: dict[str, Any]

    def send(self, to: str, text: str, sender: str = "Acme", **extra: Any) -> str:
        body = {"channel": "sms", "message_type": "text", "to": to, "from": sender, "text": text, **extra}
        response = httpx.post(f"{self.server.url}/v1/messages", json=body, auth=self.server.basic)
        assert response.status_code == 202, response.text
        return response.json()["message_uuid"]

    def statuses(self, message_uuid: str) -> list[dict[str, Any]]:
        hooks = [h.json for h in self.receiver.snapshot(accepted_only=True)
                 if h.path == "/status" and h.json.get("message_uuid") == message_uuid]
        return sorted(hooks, key=lambda h: h["timestamp"])

    def wait_status(self, message_uuid: str, status: str, timeout: float = 15.0) -> list[dict[str, Any]]:
        self.receiver.wait_for(lambda _: status in [h["status"] for h in self.statuses(message_uuid)], timeout)
        return self.statuses(message_uuid)

    def submits_to(self, to: str) -> list[dict[str, Any]]:
        return [s for s in self.smsc.submits() if s["destination_addr"] == to and s["message_id"] is not None]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data_dir = tmp_path_factory.mktemp("sms")
    with FakeSMSC() as smsc, WebhookReceiver() as receiver:
        server = provisioned_server(data_dir, env=FAST)
        try:
            missive(data_dir, "account", "update", "--api-key", server.api_key,
                    "--status-url", receiver.url("/status"), "--inbound-url", receiver.url("/inbound"))
            link = missive_json(data_dir, "channel", "add", "sms", "--host", "127.0.0.1", "--port", str(smsc.port),
                                "--system-id", "missive", "--password", "secret", "--binds", "2", "--window", "8",
                                "--default", "--json")
            smsc.wait_for(lambda s: s["bound"] == 2, timeout=15)
            yield Live(server, smsc, receiver, link)
        finally:
            server.stop()


@pytest.fixture(autouse=True)
def fresh_smsc(live: Live) -> Iterator[None]:
    live.smsc.reset()
    yield


def parts_of(submits: list[dict[str, Any]]) -> tuple[list[Any], str]:
    """The concatenation headers and the decoded text of a message's submits."""
    heads, payloads = [], []
    for submit in submits:
        concat, payload = split_udh(bytes.fromhex(submit["short_message"]), submit["esm_class"])
        heads.append(concat)
        payloads.append(payload)
    coding = submits[0]["data_coding"]
    joined = b"".join(payloads)
    return heads, decode_payload(joined, coding)


def test_link_is_stored_without_its_password(live: Live) -> None:
    assert live.link["kind"] == "sms" and "password" not in live.link["config"]
    assert "secret" not in live.server.log()
    assert all(b["system_id"] == "missive" and b["ok"] for b in live.smsc.state()["binds"][-2:])


def test_a_long_gsm_message_arrives_in_correct_parts_and_is_delivered(live: Live) -> None:
    message_uuid = live.send("447700900201", GSM_LONG)
    assert [h["status"] for h in live.wait_status(message_uuid, "delivered")] == ["submitted", "delivered"]
    submits = live.submits_to("447700900201")
    heads, text = parts_of(submits)
    assert text == GSM_LONG
    count = count_parts(GSM_LONG)
    assert len(submits) == count >= 3 and all(s["data_coding"] == 0 and s["esm_class"] == 0x40 for s in submits)
    assert [(h.total, h.seq) for h in heads] == [(count, i) for i in range(1, count + 1)] and len({h.ref for h in heads}) == 1
    for submit in submits:
        payload = split_udh(bytes.fromhex(submit["short_message"]), 0x40)[1]
        assert len(payload) <= 153 and not payload.endswith(b"\x1b")
        assert (submit["source_addr"], submit["source_addr_ton"], submit["source_addr_npi"]) == ("Acme", 5, 0)
        assert (submit["dest_addr_ton"], submit["dest_addr_npi"], submit["registered_delivery"]) == (1, 1, 1)


def test_long_messages_sent_together_get_different_concatenation_references(live: Live) -> None:
    # A handset joins parts by (sender, reference): two long messages to one number with
    # the same reference could be mixed up. Random per message: six equal ones would mean
    # the reference comes from something shared, such as the time.
    uuids = [live.send("447700900209", GSM_LONG) for _ in range(6)]
    for message_uuid in uuids:
        live.wait_status(message_uuid, "delivered")
    refs = {head.ref for head in parts_of(live.submits_to("447700900209"))[0]}
    assert len(refs) > 1, refs


def test_a_long_unicode_message_is_ucs2_without_split_characters(live: Live) -> None:
    message_uuid = live.send("447700900202", UCS2_LONG, sender="447700900999")
    live.wait_status(message_uuid, "delivered")
    submits = live.submits_to("447700900202")
    heads, text = parts_of(submits)
    assert text == UCS2_LONG and all(s["data_coding"] == 8 for s in submits)
    assert len(submits) == len(heads) == heads[0].total > 1
    for submit in submits:
        payload = split_udh(bytes.fromhex(submit["short_message"]), 0x40)[1]
        assert len(payload) <= 134
        payload.decode("utf-16-be")  # no part ends inside a surrogate pair
        assert (submit["source_addr_ton"], submit["source_addr_npi"]) == (1, 1)


def test_encoding_type_unicode_forces_ucs2(live: Live) -> None:
    message_uuid = live.send("447700900203", "plain", sms={"encoding_type": "unicode"})
    live.wait_status(message_uuid, "delivered")
    [submit] = live.submits_to("447700900203")
    assert submit["data_coding"] == 8 and submit["esm_class"] == 0
    assert bytes.fromhex(submit["short_message"]).decode("utf-16-be") == "plain"


def test_a_permanent_error_rejects_with_a_mapped_code(live: Live) -> None:
    live.smsc.configure(errors=[{"status": 0x0B, "count": 1}])
    message_uuid = live.send("447700900204", "bad destination")
    hooks = live.wait_status(message_uuid, "rejected")
    assert [h["status"] for h in hooks] == ["rejected"]
    assert int(hooks[0]["error"]["title"]) == 1170 and "ESME_RINVDSTADR" in hooks[0]["error"]["detail"]


def test_throttling_is_retried_and_delivered(live: Live) -> None:
    live.smsc.configure(errors=[{"status": 0x58, "count": 2}, {"status": 0x14, "count": 1}])
    message_uuid = live.send("447700900205", "slow down")
    assert [h["status"] for h in live.wait_status(message_uuid, "delivered")] == ["submitted", "delivered"]
    statuses = [s["status"] for s in live.smsc.submits() if s["destination_addr"] == "447700900205"]
    assert statuses == [0x58, 0x58, 0x14, 0]


@pytest.mark.parametrize(("stat", "code"), [("UNDELIV", 1260), ("EXPIRED", 1180), ("REJECTD", 1280), ("DELETED", 1330)])
def test_failed_receipts_are_undeliverable(live: Live, stat: str, code: int) -> None:
    to = f"44770090031{code % 10}"
    live.smsc.configure(receipts={"stat_by_destination": {to: stat}})
    message_uuid = live.send(to, "receipt " + stat)
    hooks = live.wait_status(message_uuid, "undeliverable")
    assert [h["status"] for h in hooks] == ["submitted", "undeliverable"]
    assert int(hooks[1]["error"]["title"]) == code and stat in hooks[1]["error"]["detail"]


def set_receipt_ids(live: Live, value: str) -> None:
    response = httpx.patch(f"{live.server.url}/v1/channels/{live.link['id']}", auth=live.server.basic,
                           json={"config": {"receipt_ids": value}})
    assert response.status_code == 200, response.text
    time.sleep(1)  # the sessions loop rebinds with the new configuration
    live.smsc.wait_for(lambda s: s["bound"] == 2, timeout=15)


@pytest.mark.parametrize("tlv", [True, False], ids=["tlv", "text-only"])
def test_receipt_ids_in_hex_match_decimal_submit_ids(live: Live, tlv: bool) -> None:
    set_receipt_ids(live, "hex")
    try:
        live.smsc.configure(resp_id_format="dec", receipts={"id_format": "hex", "tlv": tlv})
        message_uuid = live.send("447700900207", "hex receipts " + str(tlv))
        assert [h["status"] for h in live.wait_status(message_uuid, "delivered")] == ["submitted", "delivered"]
    finally:
        set_receipt_ids(live, "as_submitted")


def test_a_receipt_id_is_read_one_way_only() -> None:
    """"229" is a decimal id, and hex for 553: on a busy link both exist, so the link
    says which reading its SMSC uses instead of Missive guessing."""
    def refs(receipt_ids: str) -> set[str]:
        receipt = parse_receipt(b"id:229 stat:DELIVRD err:000", None, None, "L", receipt_ids)
        assert receipt is not None
        return set(receipt.refs)

    assert refs("as_submitted") == {"L:229"}
    assert refs("hex") == {"L:553"}
    assert refs("decimal") == {"L:E5", "L:e5"}


def test_delayed_reordered_receipts_deliver_a_multipart_message_once_all_parts_are(live: Live) -> None:
    live.smsc.configure(receipts={"mode": "delay", "delay_ms": 300, "reorder": True,
                                  "stat_by_destination": {}})
    uuids = [live.send(f"44770090030{i}", GSM_LONG) for i in range(3)]
    for message_uuid in uuids:
        assert [h["status"] for h in live.wait_status(message_uuid, "delivered")] == ["submitted", "delivered"]


def test_a_multipart_message_with_one_failed_part_is_undeliverable(live: Live) -> None:
    live.smsc.configure(receipts={"mode": "none"})
    message_uuid = live.send("447700900208", GSM_LONG)
    live.wait_status(message_uuid, "submitted")
    first, second, *rest = (s["message_id"] for s in live.submits_to("447700900208"))
    live.smsc.receipt(first, "DELIVRD")
    live.smsc.receipt(second, "UNDELIV", "005")
    hooks = live.wait_status(message_uuid, "undeliverable")
    for other in rest:
        live.smsc.receipt(other, "DELIVRD")
    time.sleep(0.5)
    assert [h["status"] for h in live.statuses(message_uuid)] == ["submitted", "undeliverable"]
    assert int(hooks[-1]["error"]["title"]) == 1260


def test_an_unknown_receipt_is_kept_and_applied_when_its_message_is_sent(live: Live) -> None:
    live.smsc.configure(receipts={"mode": "none"})
    stray = live.smsc.receipt(987654321, "DELIVRD", source_addr="447700900299", destination_addr="Acme")
    assert stray["status"] == 0  # acknowledged: it is stored, not dropped
    upcoming = live.smsc.state()["next_message_id"]
    early = live.smsc.receipt(upcoming, "DELIVRD", source_addr="447700900209", destination_addr="Acme")
    assert early["status"] == 0
    kept = {row[0].rpartition(":")[2] for row in query(live.server.data_dir, "SELECT ref FROM unmatched_receipts")}
    assert {"987654321", str(upcoming)} <= kept
    message_uuid = live.send("447700900209", "overtaken by its receipt")
    assert [h["status"] for h in live.wait_status(message_uuid, "delivered")] == ["submitted", "delivered"]
    assert "987654321" in live.server.log()


def test_dropping_the_connection_mid_stream_loses_nothing(live: Live) -> None:
    live.smsc.configure(drop_after=7, submit_delay_ms=20)
    uuids = [live.send(f"4477009004{i:02d}", f"message {i}") for i in range(30)]
    for message_uuid in uuids:
        try:
            live.wait_status(message_uuid, "delivered", timeout=30)
        except AssertionError:
            import json
            print(json.dumps([{k: d.get(k) for k in ("message_id", "session", "attempt", "status", "time")} for d in live.smsc.state()["delivers"]]))
            print(json.dumps(live.smsc.state()["sessions"]), live.smsc.state()["queued"])
            print(json.dumps([{k: s[k] for k in ("session", "message_id", "status", "destination_addr")} | {"dropped": s.get("dropped")} for s in live.smsc.submits()]))
            raise
    assert any(s.get("dropped") for s in live.smsc.submits())
    with httpx.Client(base_url=live.server.url, auth=live.server.basic) as client:
        assert {client.get(f"/v1/messages/{u}").json()["status"] for u in uuids} == {"delivered"}


def test_a_refused_bind_rejects_with_internal_error(tmp_path_factory: pytest.TempPathFactory) -> None:
    data_dir = tmp_path_factory.mktemp("sms-refused")
    with FakeSMSC() as smsc, WebhookReceiver() as receiver:
        smsc.configure(credentials={"missive": "right"})
        server = provisioned_server(data_dir, env={**FAST, "MISSIVE_DISPATCH_MAX_ATTEMPTS": "2"})
        try:
            missive(data_dir, "account", "update", "--api-key", server.api_key, "--status-url", receiver.url("/status"))
            missive_json(data_dir, "channel", "add", "sms", "--host", "127.0.0.1", "--port", str(smsc.port),
                         "--system-id", "missive", "--password", "wrong", "--default", "--json")
            response = httpx.post(f"{server.url}/v1/messages", auth=server.basic,
                                  json={"channel": "sms", "message_type": "text", "to": "447700900210", "from": "Acme", "text": "hi"})
            message_uuid = response.json()["message_uuid"]
            receiver.wait_for(lambda hooks: any(h.json.get("message_uuid") == message_uuid for h in hooks), 40)
            [hook] = [h.json for h in receiver.snapshot() if h.json.get("message_uuid") == message_uuid]
            assert hook["status"] == "rejected" and int(hook["error"]["title"]) == 1030
            assert "ESME_RINVPASWD" in hook["error"]["detail"]
            assert "wrong" not in server.log()
        finally:
            server.stop()


def test_inbound_multipart_arrives_reassembled(live: Live) -> None:
    text = "Bonjour! " + "a long inbound message with {braces} and € " * 6
    answer = live.smsc.deliver("447700900211", "447700900100", text, encoding="gsm", parts=3, reverse=True)
    assert answer["statuses"] == [0, 0, 0]
    live.receiver.wait_for(lambda _: any(h.json.get("from") == "447700900211" for h in live.receiver.snapshot()), 15)
    [hook] = [h.json for h in live.receiver.snapshot(accepted_only=True) if h.json.get("from") == "447700900211"]
    assert hook["channel"] == "sms" and hook["message_type"] == "text" and hook["to"] == "447700900100"
    assert hook["text"] == text
    assert hook["sms"] == {"num_messages": "3", "keyword": "BONJOUR!"}


@pytest.mark.parametrize(("encoding", "text"), [("ucs2", "Привет 😀"), ("latin1", "Ça coûte 5 £"), ("gsm", "hi there")])
def test_inbound_single_part_is_decoded(live: Live, encoding: str, text: str) -> None:
    sender = f"44770090050{len(encoding)}"
    assert live.smsc.deliver(sender, "447700900100", text, encoding=encoding)["statuses"] == [0]
    live.receiver.wait_for(lambda _: any(h.json.get("from") == sender for h in live.receiver.snapshot()), 15)
    [hook] = [h.json for h in live.receiver.snapshot(accepted_only=True) if h.json.get("from") == sender]
    assert hook["text"] == text and hook["sms"]["num_messages"] == "1"


def test_inbound_goes_to_the_application_owning_the_number(live: Live) -> None:
    server = live.server
    body = {"name": "sms-app", "capabilities": {"messages": {"webhooks": {
        "inbound_url": {"address": live.receiver.url("/app-inbound"), "http_method": "POST"},
        "status_url": {"address": live.receiver.url("/app-status"), "http_method": "POST"}}}}}
    assert httpx.put(f"{server.url}/v2/applications/{server.app_id}", json=body, auth=server.basic).status_code == 200
    missive_json(server.data_dir, "number", "add", "447700900777", "--app", server.app_id, "--json")
    assert live.smsc.deliver("447700900612", "+447700900777", "to the app")["statuses"] == [0]
    live.receiver.wait_for(lambda hooks: any(h.path == "/app-inbound" for h in hooks), 15)
    [hook] = [h for h in live.receiver.snapshot(accepted_only=True) if h.json.get("from") == "447700900612"]
    assert hook.path == "/app-inbound" and hook.json["text"] == "to the app"
    assert hook.json["to"] == "+447700900777"


def test_a_receipt_with_both_tlvs_reads_its_text_only_for_the_error() -> None:
    text = b"id:ignored sub:001 dlvrd:000 submit date:2612072325 done date:2612072325 stat:DELIVRD err:007 text:"
    delivered = parse_receipt(text, "1F2E", 2, "L")
    assert delivered is not None and (delivered.refs[0], delivered.status) == ("L:1F2E", "delivered")
    # The TLVs win over the text; the error comes from the text.
    failed = parse_receipt(text, "1F2E", 5, "L")
    assert failed is not None and (failed.refs[0], failed.status, failed.error_code) == ("L:1F2E", "undeliverable", 1260)
    assert failed.error_reason == "Destination unreachable (SMSC stat UNDELIV, err 007)"
    # A state that is not final: no receipt; no id anywhere: none either.
    assert parse_receipt(text, "1F2E", 1, "L") is None
    assert parse_receipt(b"stat:DELIVRD", None, 2, "L") is None

"""Failover workflows with WhatsApp steps, through a real server.

A v1 `failover` array and a /v0.1/dispatch workflow may send on WhatsApp: a step the
sandbox refuses (a recipient ending in 0005, whose 24-hour window is closed) or Meta
refuses (the fake Cloud API answering an error) fails over to SMS; a step whose
condition is `read` completes on the `read` status Meta posts, signed, to
/inbound/whatsapp, and the SMS after it is never sent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from missive.dispatch import whatsapp_rules
from tests.fakes.fake_whatsapp import FakeWhatsapp, error
from tests.fakes.webhook_receiver import Hook, WebhookReceiver
from tests.harness import Server, missive, missive_json, provisioned_server, send_webhooks_to

NUMBER_ID, WABA, TOKEN, SECRET, VERIFY = "106540352242922", "102290129340398", "EAAGwa-f4ilover", "wa-app-secret-f", "wa-verify-f"
BUSINESS = "447700900100"
FAST = {
    "MISSIVE_DISPATCH_BACKOFF_BASE": "0.05",
    "MISSIVE_WEBHOOK_BACKOFF_BASE": "0.05",
    "MISSIVE_POLL_INTERVAL": "0.05",
    "MISSIVE_PROVIDER_TIMEOUT": "2",
    "MISSIVE_SANDBOX_DELIVERED_AFTER": "0.2",
    "MISSIVE_SANDBOX_READ_AFTER": "0.3",
}
TEMPLATE = {"template": {"name": "order_update", "parameters": ["42"]},
            "whatsapp": {"policy": "deterministic", "locale": "en-GB"}}


@dataclass
class Live:
    server: Server
    cloud: FakeWhatsapp
    receiver: WebhookReceiver
    sandboxed: tuple[str, str]  # a second account, with no links: the sandbox carries everything

    def hooks(self, path: str = "/status", **match: Any) -> list[Hook]:
        return [h for h in self.receiver.snapshot(accepted_only=True)
                if h.path == path and all(h.json.get(k) == v for k, v in match.items())]

    def wait_hooks(self, count: int, path: str = "/status", **match: Any) -> list[Hook]:
        self.receiver.wait_for(lambda _: len(self.hooks(path, **match)) >= count, timeout=15)
        return self.hooks(path, **match)

    def post(self, path: str, body: dict, auth: tuple[str, str] | None = None) -> dict:
        with self.server.client() as client:
            if auth is None:
                response = client.post(path, json=body, headers=self.server.bearer())
            else:
                response = client.post(path, json=body, auth=auth)
        assert response.status_code == 202, response.text
        return dict(response.json())

    def workflow(self, workflow_id: str) -> dict:
        with self.server.client() as client:
            return dict(client.get(f"/v1/workflows/{workflow_id}", auth=self.server.basic).json())

    def wamid(self, message_uuid: str) -> str:
        with self.server.client() as client:
            history = client.get(f"/v1/messages/{message_uuid}", auth=self.server.basic).json()["history"]
        return str(next(e["provider_ref"] for e in history if e.get("provider_ref")))

    def meta_status(self, wamid: str, user: str, state: str) -> None:
        """Meta's status callback for `wamid`, signed with the link's app secret."""
        value = {"messaging_product": "whatsapp", "metadata": {"display_phone_number": BUSINESS, "phone_number_id": NUMBER_ID},
                 "statuses": [{"id": wamid, "status": state, "timestamp": str(int(time.time())), "recipient_id": user}]}
        raw = json.dumps({"object": "whatsapp_business_account",
                          "entry": [{"id": WABA, "changes": [{"field": "messages", "value": value}]}]}).encode()
        signature = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
        with self.server.client() as client:
            response = client.post("/inbound/whatsapp", content=raw,
                                   headers={"content-type": "application/json", "x-hub-signature-256": signature})
        assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data_dir: Path = tmp_path_factory.mktemp("whatsapp-failover")
    with FakeWhatsapp(token=TOKEN) as cloud, WebhookReceiver() as receiver:
        server = provisioned_server(data_dir, env={**FAST, "MISSIVE_GRAPH_API_URL": cloud.url})
        try:
            send_webhooks_to(server, receiver)
            missive_json(data_dir, "channel", "add", "whatsapp", "--phone-number-id", NUMBER_ID, "--waba-id", WABA,
                         "--access-token", TOKEN, "--app-secret", SECRET, "--verify-token", VERIFY,
                         "--phone-number", BUSINESS, "--app", server.app_id, "--json")
            other = missive_json(data_dir, "account", "create")
            updated = missive(data_dir, "account", "update", "--api-key", other["api_key"],
                              "--status-url", receiver.url("/sandboxed"))
            assert updated.returncode == 0, updated.stderr
            yield Live(server, cloud, receiver, (other["api_key"], other["api_secret"]))
        finally:
            server.stop()


def statuses(hooks: list[Hook]) -> list[str]:
    return [h.json["status"] for h in sorted(hooks, key=lambda h: h.json["timestamp"])]


def test_a_sandbox_whatsapp_step_outside_the_window_fails_over_to_sms(live: Live) -> None:
    first = {"channel": "whatsapp", "message_type": "text", "to": "447700900005", "from": BUSINESS, "text": "Your order"}
    fallback = {"channel": "sms", "message_type": "text", "to": "447700900006", "from": "Acme", "text": "Your order"}
    answer = live.post("/v1/messages", {**first, "failover": [fallback]}, auth=live.sandboxed)
    workflow_id, whatsapp_uuid = answer["workflow_id"], answer["message_uuid"]
    [rejected] = live.wait_hooks(1, "/sandboxed", message_uuid=whatsapp_uuid)
    assert (rejected.json["channel"], rejected.json["status"]) == ("whatsapp", "rejected")
    assert rejected.json["error"]["title"] == "1340" and rejected.json["error"]["detail"] == whatsapp_rules.CLOSED
    assert rejected.json["workflow"]["workflow_id"] == workflow_id
    sms = live.wait_hooks(2, "/sandboxed", channel="sms", to="447700900006")
    assert statuses(sms) == ["submitted", "delivered"]
    assert {h.json["workflow"]["workflow_id"] for h in sms} == {workflow_id}
    assert live.cloud.snapshot("447700900005") == []  # the sandbox carried it, not Meta


def test_a_whatsapp_step_meta_refuses_fails_over_to_sms(live: Live) -> None:
    user = "447700900211"
    live.cloud.script(error(131026, message="Message undeliverable"), to=user)
    step = {"from": {"type": "whatsapp", "number": BUSINESS}, "to": {"type": "whatsapp", "number": user},
            "message": {"content": {"type": "template", "template": TEMPLATE["template"]}, "whatsapp": TEMPLATE["whatsapp"]},
            "failover": {"expiry_time": 600, "condition_status": "delivered"}}
    fallback = {"from": {"type": "sms", "number": "Acme"}, "to": {"type": "sms", "number": "447700900212"},
                "message": {"content": {"type": "text", "text": "Order 42 by SMS"}}}
    workflow_id = live.post("/v0.1/dispatch", {"template": "failover", "workflow": [step, fallback]})["dispatch_uuid"]
    report = live.wait_hooks(1, dispatch_uuid=workflow_id)[0].json
    assert report["status"] == "completed"
    assert [(m["channel"], m["status"]) for m in report["_links"]["messages"]] == [("whatsapp", "undeliverable"),
                                                                                 ("sms", "delivered")]
    [request] = live.cloud.snapshot(user)
    assert request.body["type"] == "template" and request.body["template"]["name"] == "order_update"
    assert live.cloud.unused(user) == []
    steps = live.workflow(workflow_id)["steps"]
    assert [s["status"] for s in steps] == ["undeliverable", "delivered"]


def test_a_read_condition_completes_on_the_whatsapp_read_status(live: Live) -> None:
    user = "447700900221"
    step = {"from": {"type": "whatsapp", "number": BUSINESS}, "to": {"type": "whatsapp", "number": user},
            "message": {"content": {"type": "template", "template": TEMPLATE["template"]}, "whatsapp": TEMPLATE["whatsapp"]},
            "failover": {"expiry_time": 600, "condition_status": "read"}}
    fallback = {"from": {"type": "sms", "number": "Acme"}, "to": {"type": "sms", "number": "447700900222"},
                "message": {"content": {"type": "text", "text": "Order 42 by SMS"}}}
    workflow_id = live.post("/v0.1/dispatch", {"template": "failover", "workflow": [step, fallback]})["dispatch_uuid"]
    first = live.workflow(workflow_id)["steps"][0]["message_uuid"]
    live.wait_hooks(1, message_uuid=first)
    wamid = live.wamid(first)
    live.meta_status(wamid, user, "delivered")
    live.wait_hooks(2, message_uuid=first)
    running = live.workflow(workflow_id)
    assert (running["status"], running["current_step"]) == ("running", 0)  # delivered is not read
    live.meta_status(wamid, user, "read")
    report = live.wait_hooks(1, dispatch_uuid=workflow_id)[0].json
    assert report["status"] == "completed"
    assert [(m["message_uuid"], m["channel"], m["status"]) for m in report["_links"]["messages"]] == [(first, "whatsapp", "read")]
    assert statuses(live.hooks(message_uuid=first)) == ["submitted", "delivered", "read"]
    done = live.workflow(workflow_id)
    assert done["steps"][0]["completed_by"] == "read" and done["steps"][1]["status"] == "not_sent"
    assert live.hooks(to="447700900222") == []


def test_a_v1_failover_array_may_fall_back_to_whatsapp(live: Live) -> None:
    user = "447700900231"
    first = {"channel": "sms", "message_type": "text", "to": "447700900001", "from": "Acme", "text": "Order 42"}
    fallback = {"channel": "whatsapp", "message_type": "template", "to": user, "from": BUSINESS, **TEMPLATE}
    workflow_id = live.post("/v1/messages", {**first, "failover": [fallback]})["workflow_id"]
    live.cloud.wait_for(lambda _: bool(live.cloud.snapshot(user)))
    [hook] = live.wait_hooks(1, channel="whatsapp", to=user)
    assert hook.json["status"] == "submitted" and hook.json["workflow"]["workflow_id"] == workflow_id
    assert [s["status"] for s in live.workflow(workflow_id)["steps"]] == ["rejected", "submitted"]

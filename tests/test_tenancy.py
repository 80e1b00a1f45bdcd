"""A hostile second tenant: account B, on the same server as account A, with its own SMSC,
its own Messenger link to A's page id (a squat, with B's own app secret), its own Viber
bot and A's number registered in another format, tries to receive, change and inject A's
traffic through every path that comes from a provider. Nothing it does reaches A.

Everything a provider sends is attributed through the link it arrived on (SMPP session,
verified signature): references, dedupe keys and numbers are looked up among that link's
(and its account's) only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from tests.fakes.fake_graph import FakeGraph
from tests.fakes.fake_smsc import FakeSMSC
from tests.fakes.fake_viber import FakeViber
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.harness import Server, missive, missive_json, provisioned_server

FAST = {
    "MISSIVE_DISPATCH_BACKOFF_BASE": "0.05",
    "MISSIVE_WEBHOOK_BACKOFF_BASE": "0.05",
    "MISSIVE_POLL_INTERVAL": "0.05",
    "MISSIVE_SESSIONS_INTERVAL": "0.3",
    "MISSIVE_PROVIDER_TIMEOUT": "2",
}
PAGE = "page-of-a"
NUMBER = "447700900555"
# How long a status that must not come is waited for: the server turns an applied
# callback into a webhook within tens of milliseconds.
QUIET = 1.5


@dataclass
class Tenant:
    name: str
    auth: tuple[str, str]
    smsc: FakeSMSC
    app_secret: str
    viber_service: str
    viber_token: str


@dataclass
class World:
    server: Server
    receiver: WebhookReceiver
    graph: FakeGraph
    viber: FakeViber
    a: Tenant
    b: Tenant

    def hooks(self, path: str, **match: Any) -> list[dict[str, Any]]:
        return [h.json for h in self.receiver.snapshot(accepted_only=True)
                if h.path == path and all(h.json.get(k) == v for k, v in match.items())]

    def wait_hooks(self, path: str, count: int = 1, **match: Any) -> list[dict[str, Any]]:
        self.receiver.wait_for(lambda _: len(self.hooks(path, **match)) >= count, timeout=15)
        return self.hooks(path, **match)

    def statuses(self, tenant: Tenant, message_uuid: str) -> list[str]:
        hooks = sorted(self.hooks(f"/{tenant.name}/status", message_uuid=message_uuid), key=lambda h: h["timestamp"])
        return [h["status"] for h in hooks]

    def send(self, tenant: Tenant, body: dict[str, Any]) -> str:
        with self.server.client() as client:
            response = client.post("/v1/messages", json=body, auth=tenant.auth)
        assert response.status_code == 202, response.text
        return str(response.json()["message_uuid"])

    def status_of(self, tenant: Tenant, message_uuid: str) -> str:
        with self.server.client() as client:
            return str(client.get(f"/v1/messages/{message_uuid}", auth=tenant.auth).json()["status"])

    def provider_ref(self, tenant: Tenant, message_uuid: str) -> str:
        with self.server.client() as client:
            history = client.get(f"/v1/messages/{message_uuid}", auth=tenant.auth).json()["history"]
        return next(e["provider_ref"] for e in history if e.get("provider_ref"))

    def messenger_callback(self, body: dict[str, Any], secret: str) -> httpx.Response:
        raw = json.dumps(body).encode()
        signature = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        with self.server.client() as client:
            return client.post("/inbound/messenger", content=raw,
                               headers={"content-type": "application/json", "x-hub-signature-256": signature})

    def viber_callback(self, service: str, body: dict[str, Any], token: str) -> httpx.Response:
        raw = orjson.dumps(body)
        signature = hmac.new(token.encode(), raw, hashlib.sha256).hexdigest()
        with self.server.client() as client:
            return client.post(f"/inbound/viber/{service}", content=raw,
                               headers={"content-type": "application/json", "x-viber-content-signature": signature})


def _link(data_dir: Any, tenant: Tenant, *args: str, env: dict[str, str] | None = None) -> None:
    added = missive(data_dir, "channel", "add", *args, "--api-key", tenant.auth[0], "--json", env=env)
    assert added.returncode == 0, added.stderr


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir = tmp_path_factory.mktemp("tenancy")
    with FakeSMSC() as smsc_a, FakeSMSC() as smsc_b, FakeGraph() as graph, FakeViber() as viber, \
            WebhookReceiver() as receiver:
        server = provisioned_server(data_dir, env={**FAST, "MISSIVE_GRAPH_API_URL": graph.url,
                                                   "MISSIVE_VIBER_API_URL": viber.url()})
        try:
            other = missive_json(data_dir, "account", "create")
            a = Tenant("a", server.basic, smsc_a, "secret-of-a", "bot-of-a", "viber-token-a")
            b = Tenant("b", (other["api_key"], other["api_secret"]), smsc_b, "secret-of-b", "bot-of-b", "viber-token-b")
            env = {"MISSIVE_VIBER_API_URL": viber.url(), "MISSIVE_PUBLIC_URL": server.url}
            for tenant in (a, b):
                updated = missive(data_dir, "account", "update", "--api-key", tenant.auth[0],
                                  "--status-url", receiver.url(f"/{tenant.name}/status"),
                                  "--inbound-url", receiver.url(f"/{tenant.name}/inbound"))
                assert updated.returncode == 0, updated.stderr
                _link(data_dir, tenant, "sms", "--host", "127.0.0.1", "--port", str(tenant.smsc.port),
                      "--system-id", "missive", "--password", "secret", "--default")
                # B links A's page id too, with its own app secret: a squat.
                _link(data_dir, tenant, "messenger", "--page-id", PAGE, "--page-token", f"token-{tenant.name}",
                      "--app-secret", tenant.app_secret, "--verify-token", f"verify-{tenant.name}")
                _link(data_dir, tenant, "viber", "--service-id", tenant.viber_service, "--auth-token",
                      tenant.viber_token, "--sender-name", tenant.name, env=env)
            # B also links A's Viber service id, with its own token.
            _link(data_dir, b, "viber", "--service-id", a.viber_service, "--auth-token", b.viber_token,
                  "--sender-name", "squat", env=env)
            for tenant in (a, b):
                tenant.smsc.wait_for(lambda s: s["bound"] >= 1, timeout=15)
            yield World(server, receiver, graph, viber, a, b)
        finally:
            server.stop()


def _register(world: World, tenant: Tenant, number: str) -> httpx.Response:
    with world.server.client() as client:
        return client.post("/v1/numbers", json={"number": number}, auth=tenant.auth)


# -- SMS -------------------------------------------------------------------------------------


def test_inbound_sms_goes_to_the_account_of_the_link_it_arrived_on(world: World) -> None:
    a, b = world.a, world.b
    assert _register(world, a, NUMBER).status_code == 201
    # B registers A's number in another format: accepted (no answer tells that A has it).
    assert _register(world, b, "+44 7700 900555").status_code == 201
    assert a.smsc.deliver("447700900001", "+" + NUMBER, "for a")["statuses"] == [0]
    assert world.wait_hooks("/a/inbound", text="for a")[0]["to"] in (NUMBER, "+" + NUMBER)
    # B pushes a deliver_sm through its own SMSC to A's number with A's customer as sender:
    # it reaches B's own webhook, never A's.
    assert b.smsc.deliver("447700900001", NUMBER, "injected by b")["statuses"] == [0]
    world.wait_hooks("/b/inbound", text="injected by b")
    time.sleep(QUIET)
    assert world.hooks("/a/inbound", text="injected by b") == []
    assert world.hooks("/b/inbound", text="for a") == []


def test_another_smsc_cannot_complete_a_message_with_its_receipts(world: World) -> None:
    a, b = world.a, world.b
    a.smsc.configure(receipts={"mode": "none", "delay_ms": 0, "stat": "DELIVRD", "err": "000", "reorder": False,
                               "tlv": True, "id_format": "dec", "stat_by_destination": {}})
    message_uuid = world.send(a, {"channel": "sms", "message_type": "text", "to": "447700900777", "from": "A",
                                  "text": "receipt test"})
    a.smsc.wait_for(lambda _: any(s["destination_addr"] == "447700900777" and s["message_id"]
                                  for s in a.smsc.submits()), timeout=15)
    world.wait_hooks("/a/status", message_uuid=message_uuid, status="submitted")
    smsc_id = next(s["message_id"] for s in a.smsc.submits() if s["destination_addr"] == "447700900777")
    # B's SMSC sends a failure receipt naming A's SMSC id.
    b.smsc.receipt(smsc_id, stat="UNDELIV", err="001", source_addr="447700900777", destination_addr="A")
    time.sleep(QUIET)
    assert world.statuses(a, message_uuid) == ["submitted"]
    assert world.status_of(a, message_uuid) == "submitted"
    # A's own SMSC's receipt is applied.
    a.smsc.receipt(smsc_id)
    world.wait_hooks("/a/status", message_uuid=message_uuid, status="delivered")
    assert world.status_of(a, message_uuid) == "delivered"


# -- Messenger ---------------------------------------------------------------------------------


def _page_callback(user: str, **event: Any) -> dict[str, Any]:
    return {"object": "page", "entry": [{"id": PAGE, "time": 1, "messaging": [
        {"sender": {"id": user}, "recipient": {"id": PAGE}, "timestamp": int(time.time() * 1000), **event}]}]}


def test_a_squatted_page_keeps_its_callbacks_with_its_real_owner(world: World) -> None:
    a, b = world.a, world.b
    message_uuid = world.send(a, {"channel": "messenger", "message_type": "text", "to": "psid-a1", "from": PAGE,
                                  "text": "hello"})
    world.wait_hooks("/a/status", message_uuid=message_uuid, status="submitted")
    mid = world.provider_ref(a, message_uuid)
    # B's correctly signed callbacks name A's message id: nothing happens to A's message.
    for event in ({"delivery": {"mids": [mid], "watermark": 1}},
                  {"read": {"watermark": int(time.time() * 1000) + 5000}},
                  {"message": {"mid": "m-b-1", "text": "from b's squat"}}):
        assert world.messenger_callback(_page_callback("psid-a1", **event), b.app_secret).status_code == 200
    world.wait_hooks("/b/inbound", text="from b's squat")
    time.sleep(QUIET)
    assert world.statuses(a, message_uuid) == ["submitted"] and world.status_of(a, message_uuid) == "submitted"
    assert world.hooks("/a/inbound", text="from b's squat") == []
    # Facebook's real callbacks, signed with A's app secret, still reach A (not a 401).
    answer = world.messenger_callback(_page_callback("psid-a1", delivery={"mids": [mid], "watermark": 1}), a.app_secret)
    assert answer.status_code == 200
    world.wait_hooks("/a/status", message_uuid=message_uuid, status="delivered")
    inbound = world.messenger_callback(_page_callback("psid-a1", message={"mid": "m-a-1", "text": "to a"}), a.app_secret)
    assert inbound.status_code == 200
    world.wait_hooks("/a/inbound", text="to a")
    time.sleep(QUIET)
    assert world.hooks("/b/inbound", text="to a") == []
    # Signed by neither: refused.
    assert world.messenger_callback(_page_callback("psid-a1", message={"mid": "m-x", "text": "x"}), "nobody").status_code == 401


def test_handled_event_keys_are_scoped_to_the_link(world: World) -> None:
    # B sends first an inbound message with the id A's user's message will have: A's is
    # still delivered (B cannot make A's events look already handled).
    a, b = world.a, world.b
    event = {"message": {"mid": "m-shared-id", "text": "first seen by b"}}
    assert world.messenger_callback(_page_callback("psid-a2", **event), b.app_secret).status_code == 200
    world.wait_hooks("/b/inbound", text="first seen by b")
    event = {"message": {"mid": "m-shared-id", "text": "a's own"}}
    assert world.messenger_callback(_page_callback("psid-a2", **event), a.app_secret).status_code == 200
    world.wait_hooks("/a/inbound", text="a's own")


# -- Viber -------------------------------------------------------------------------------------


def test_another_bot_cannot_complete_or_fail_a_viber_message(world: World) -> None:
    a, b = world.a, world.b
    message_uuid = world.send(a, {"channel": "viber_service", "message_type": "text", "to": "viber-user-a",
                                  "from": a.viber_service, "text": "hi"})
    world.wait_hooks("/a/status", message_uuid=message_uuid, status="submitted")
    token = world.viber.tokens[message_uuid]
    failed = {"event": "failed", "timestamp": 1, "message_token": token, "user_id": "viber-user-a", "desc": "x"}
    # Through B's own bot's URL, and through A's service id, which B linked too: both
    # verified against B's link, neither reaches A's message.
    assert world.viber_callback(b.viber_service, failed, b.viber_token).status_code == 200
    assert world.viber_callback(a.viber_service, failed, b.viber_token).status_code == 200
    time.sleep(QUIET)
    assert world.statuses(a, message_uuid) == ["submitted"] and world.status_of(a, message_uuid) == "submitted"
    delivered = {"event": "delivered", "timestamp": 2, "message_token": token, "user_id": "viber-user-a"}
    assert world.viber_callback(a.viber_service, delivered, a.viber_token).status_code == 200
    world.wait_hooks("/a/status", message_uuid=message_uuid, status="delivered")
    # A callback signed with a token of no link of that service: refused.
    assert world.viber_callback(a.viber_service, delivered, "guess").status_code == 401


# -- resources -----------------------------------------------------------------------------------


def test_b_can_neither_read_nor_change_a_resources(world: World) -> None:
    a, b = world.a, world.b
    message_uuid = world.send(a, {"channel": "sms", "message_type": "text", "to": "447700900778", "from": "A",
                                  "text": "private"})
    assert world.messenger_callback(_page_callback("psid-a3", message={"mid": "m-a-3", "text": "inbound of a"}),
                                    a.app_secret).status_code == 200
    inbound_uuid = world.wait_hooks("/a/inbound", text="inbound of a")[0]["message_uuid"]
    with world.server.client() as client:
        assert client.get(f"/v1/messages/{message_uuid}", auth=b.auth).status_code == 404
        assert client.patch(f"/v1/messages/{inbound_uuid}", json={"status": "read"}, auth=b.auth).status_code == 404
        assert client.get(f"/v1/numbers/{NUMBER}", auth=b.auth).json().get("application_id") is None
        theirs = client.get("/v1/channels", auth=b.auth).json()["_embedded"]["channels"]
        mine = client.get("/v1/channels", auth=a.auth).json()["_embedded"]["channels"]
        assert not {c["id"] for c in theirs} & {c["id"] for c in mine}
        for link in mine:
            assert client.get(f"/v1/channels/{link['id']}", auth=b.auth).status_code == 404
            assert client.delete(f"/v1/channels/{link['id']}", auth=b.auth).status_code == 404
        assert client.get(f"/v1/messages/{message_uuid}", auth=a.auth).status_code == 200

"""No message is faked as delivered: routing sends Messenger and Viber messages through
the link of their `from` page or service, whatever the authentication, and the built-in
sandbox carries a channel only for an account with no real link for it. Status webhooks
and `GET /v1/messages/{uuid}` name the link that carried a message.

One real server on 127.0.0.1 with the fake Graph and Viber APIs and a real webhook
receiver; three accounts:

    linked   a Facebook page and a Viber service, each linked to its application only;
             it sends with Basic auth
    fresh    no links at all
    mixed    an account-wide page (its default Messenger link) and a sandbox link for
             Messenger, configured explicitly; an SMS sandbox link of its application
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from missive.channels.base import Rejected
from missive.dispatch.routing import NO_LINK, route
from tests.fakes.fake_graph import FakeGraph
from tests.fakes.fake_viber import FakeViber
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.harness import Server, missive, missive_json, provisioned_server

PAGE, PAGE_TOKEN = "1122334455", "EAAGpagetoken-linked"
MIXED_PAGE, MIXED_TOKEN = "5544332211", "EAAGpagetoken-mixed"
SERVICE, VIBER_TOKEN = "acme-bot", "445da6az1s345z78-dazcczb2542zv51a-e0vc5fva17480im9"
UNLINKED_PAGE, UNLINKED_SERVICE = "9988776655", "nobodys-bot"
FAST = {
    "MISSIVE_SANDBOX_DELIVERED_AFTER": "0.2",
    "MISSIVE_SANDBOX_READ_AFTER": "0.4",
    "MISSIVE_DISPATCH_BACKOFF_BASE": "0.05",
    "MISSIVE_WEBHOOK_BACKOFF_BASE": "0.05",
    "MISSIVE_POLL_INTERVAL": "0.05",
    "MISSIVE_PROVIDER_TIMEOUT": "2",
}


@dataclass
class World:
    linked: Server
    fresh: Server
    mixed: Server
    graph: FakeGraph
    viber: FakeViber
    receiver: WebhookReceiver
    sandbox_log: Path
    links: dict[str, dict[str, Any]]

    def statuses(self, account: Server, message_uuid: str, count: int, timeout: float = 15) -> list[dict[str, Any]]:
        """The status webhooks of a message, sent to its account's status URL, oldest first."""
        def mine() -> list[dict[str, Any]]:
            return sorted((h.json for h in self.receiver.snapshot(accepted_only=True)
                           if h.path == f"/{account.extra['name']}" and h.json.get("message_uuid") == message_uuid),
                          key=lambda body: body["timestamp"])
        self.receiver.wait_for(lambda _: len(mine()) >= count, timeout=timeout)
        return mine()

    def sandbox_sends(self) -> list[str]:
        return self.sandbox_log.read_text().split() if self.sandbox_log.exists() else []


def send(account: Server, body: dict[str, Any], token: str | None = None) -> str:
    with account.client() as client:
        if token is None:
            response = client.post("/v1/messages", json=body, auth=account.basic)
        else:
            response = client.post("/v1/messages", json=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 202, response.text
    return str(response.json()["message_uuid"])


def read_back(account: Server, message_uuid: str) -> dict[str, Any]:
    with account.client() as client:
        response = client.get(f"/v1/messages/{message_uuid}", auth=account.basic)
    assert response.status_code == 200, response.text
    return dict(response.json())


def add_link(account: Server, body: dict[str, Any]) -> dict[str, Any]:
    with account.client() as client:
        response = client.post("/v1/channels", json=body, auth=account.basic)
    assert response.status_code == 201, response.text
    return dict(response.json())


def messenger(sender: str, to: str) -> dict[str, Any]:
    return {"channel": "messenger", "message_type": "text", "to": to, "from": sender, "text": "Your order shipped"}


def viber(sender: str, to: str) -> dict[str, Any]:
    return {"channel": "viber_service", "message_type": "text", "to": to, "from": sender, "text": "Your order shipped"}


def sms(to: str) -> dict[str, Any]:
    return {"channel": "sms", "message_type": "text", "to": to, "from": "Acme", "text": "Your order shipped"}


def messenger_link(page: str, token: str, application_id: str | None = None, default: bool = False) -> dict[str, Any]:
    return {"kind": "messenger", "channel": "messenger", "name": f"page-{page}", "application_id": application_id,
            "default": default,
            "config": {"page_id": page, "page_token": token, "app_secret": "app-secret", "verify_token": "verify"}}


def as_account(server: Server, name: str) -> Server:
    """Another account of the same server, made with the CLI, with one application."""
    account = missive_json(server.data_dir, "account", "create")
    other = replace(server, api_key=account["api_key"], api_secret=account["api_secret"],
                    signature_secret=account["signature_secret"], extra={"name": name})
    with other.client() as client:
        created = client.post("/v2/applications", json={"name": name}, auth=other.basic)
    assert created.status_code == 201, created.text
    return replace(other, app_id=created.json()["id"], private_key=created.json()["keys"]["private_key"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir = tmp_path_factory.mktemp("no-fake-delivery")
    sandbox_log = data_dir / "sandbox-sends.log"
    with FakeGraph() as graph, FakeViber(auth_token=VIBER_TOKEN) as fake_viber, WebhookReceiver() as receiver:
        env = {**FAST, "MISSIVE_GRAPH_API_URL": graph.url, "MISSIVE_VIBER_API_URL": fake_viber.url(),
               "MISSIVE_SANDBOX_LOG": str(sandbox_log)}
        server = provisioned_server(data_dir, env=env)
        try:
            linked = replace(server, extra={"name": "linked"})
            with ThreadPoolExecutor(2) as pool:
                fresh, mixed = pool.map(lambda name: as_account(server, name), ["fresh", "mixed"])
            updates = [missive(data_dir, "account", "update", "--api-key", account.api_key,
                               "--status-url", receiver.url(f"/{account.extra['name']}"))
                       for account in (linked, fresh, mixed)]
            assert all(u.returncode == 0 for u in updates), [u.stderr for u in updates]
            # Every link made before the first message: routing caches an account's links.
            links = {
                "page": add_link(linked, messenger_link(PAGE, PAGE_TOKEN, linked.app_id)),
                "service": add_link(linked, {
                    "kind": "viber", "channel": "viber_service", "name": "bot", "application_id": linked.app_id,
                    "config": {"service_id": SERVICE, "auth_token": VIBER_TOKEN, "sender_name": "Acme"}}),
                "mixed_page": add_link(mixed, messenger_link(MIXED_PAGE, MIXED_TOKEN, default=True)),
                "mixed_sandbox": add_link(mixed, {"kind": "sandbox", "channel": "messenger", "name": "test-page",
                                                  "config": {"delivered_after": 0.3}}),
                "mixed_sms": add_link(mixed, {"kind": "sandbox", "channel": "sms", "name": "test-sms",
                                              "application_id": mixed.app_id, "config": {"delivered_after": 0.3}}),
            }
            yield World(linked, fresh, mixed, graph, fake_viber, receiver, sandbox_log, links)
        finally:
            server.stop()


def sent_to_graph(world: World, user: str) -> list[Any]:
    return world.graph.snapshot(recipient=user)


def graph_request(world: World, user: str) -> Any:
    """The one Send API request for `user`, once it has come."""
    world.graph.wait_for(lambda _: len(sent_to_graph(world, user)) >= 1)
    [request] = sent_to_graph(world, user)
    return request


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def test_basic_auth_messenger_goes_out_through_the_page_linked_to_an_application(world: World) -> None:
    user = "psid-basic"
    message_uuid = send(world.linked, messenger(PAGE, user))
    request = graph_request(world, user)
    assert request.query["access_token"] == PAGE_TOKEN
    assert request.body["message"] == {"text": "Your order shipped"}
    [submitted] = world.statuses(world.linked, message_uuid, 1)
    assert submitted["status"] == "submitted"
    assert submitted["channel_link"] == {"id": world.links["page"]["id"], "kind": "messenger"}
    assert message_uuid not in world.sandbox_sends()
    view = read_back(world.linked, message_uuid)
    assert view["channel_link"] == {"id": world.links["page"]["id"], "kind": "messenger"}
    assert [step["status"] for step in view["history"]] == ["accepted", "submitted"]


def test_jwt_messenger_of_the_application_still_uses_its_page(world: World) -> None:
    user = "psid-jwt"
    message_uuid = send(world.linked, messenger(PAGE, user), world.linked.jwt())
    graph_request(world, user)
    view = read_back(world.linked, message_uuid)
    deadline = time.monotonic() + 10
    while view["status"] == "accepted" and time.monotonic() < deadline:
        time.sleep(0.05)
        view = read_back(world.linked, message_uuid)
    assert view["status"] == "submitted"
    assert view["channel_link"] == {"id": world.links["page"]["id"], "kind": "messenger"}


def test_basic_auth_viber_goes_out_through_the_service_linked_to_an_application(world: World) -> None:
    user = "viber-user-1="
    message_uuid = send(world.linked, viber(SERVICE, user))
    world.viber.wait_for(lambda sent: any(c.json.get("tracking_data") == message_uuid for c in sent))
    [call] = [c for c in world.viber.sent() if c.json.get("tracking_data") == message_uuid]
    assert call.json["receiver"] == user
    [submitted] = world.statuses(world.linked, message_uuid, 1)
    assert submitted["status"] == "submitted"
    assert submitted["channel_link"] == {"id": world.links["service"]["id"], "kind": "viber"}
    assert message_uuid not in world.sandbox_sends()


@pytest.mark.parametrize(
    ("body", "named"),
    [(messenger(UNLINKED_PAGE, "psid-unlinked"), f"Facebook page '{UNLINKED_PAGE}'"),
     (viber(UNLINKED_SERVICE, "viber-user-2="), f"Viber service '{UNLINKED_SERVICE}'")],
    ids=["messenger", "viber"],
)
def test_a_sender_no_link_names_is_rejected_never_delivered(world: World, body: dict[str, Any], named: str) -> None:
    message_uuid = send(world.linked, body)
    [rejected] = world.statuses(world.linked, message_uuid, 1)
    assert rejected["status"] == "rejected"
    assert int(rejected["error"]["title"]) == NO_LINK == 1490
    assert rejected["error"]["detail"].startswith("No link: ") and named in rejected["error"]["detail"]
    assert "channel_link" not in rejected
    # Longer than the sandbox's `delivered` would take: nothing else comes.
    time.sleep(1.0)
    assert [s["status"] for s in world.statuses(world.linked, message_uuid, 1)] == ["rejected"]
    assert message_uuid not in world.sandbox_sends()
    assert not sent_to_graph(world, body["to"])
    assert not [c for c in world.viber.sent() if c.json.get("tracking_data") == message_uuid]
    view = read_back(world.linked, message_uuid)
    assert view["status"] == "rejected" and "channel_link" not in view
    assert view["history"][-1]["error"] == {"code": NO_LINK, "reason": rejected["error"]["detail"]}


def test_a_channel_without_real_links_still_gets_the_sandbox(world: World) -> None:
    # The linked account has Messenger and Viber links but none for SMS.
    message_uuid = send(world.linked, sms("447700900123"))
    hooks = world.statuses(world.linked, message_uuid, 2)
    assert [h["status"] for h in hooks] == ["submitted", "delivered"]
    assert all(h["channel_link"] == {"id": "sandbox:sms", "kind": "sandbox"} for h in hooks)
    assert message_uuid in world.sandbox_sends()


@pytest.mark.parametrize("channel", ["messenger", "viber_service"])
def test_a_fresh_account_gets_the_sandbox(world: World, channel: str) -> None:
    body = messenger("any-page", "psid-fresh") if channel == "messenger" else viber("any-bot", "viber-fresh=")
    message_uuid = send(world.fresh, body)
    hooks = world.statuses(world.fresh, message_uuid, 2)
    assert [h["status"] for h in hooks[:2]] == ["submitted", "delivered"]
    sandbox = {"id": f"sandbox:{channel}", "kind": "sandbox"}
    assert all(h["channel_link"] == sandbox for h in hooks)
    assert message_uuid in world.sandbox_sends()
    assert read_back(world.fresh, message_uuid)["channel_link"] == sandbox


def test_a_sandbox_link_configured_explicitly_carries_what_no_page_does(world: World) -> None:
    # The account's default Messenger link is a real page; a message from another page
    # goes to the sandbox link the account configured, not out as that page.
    message_uuid = send(world.mixed, messenger(UNLINKED_PAGE, "psid-mixed"))
    hooks = world.statuses(world.mixed, message_uuid, 2)
    link = {"id": world.links["mixed_sandbox"]["id"], "kind": "sandbox"}
    assert [h["status"] for h in hooks[:2]] == ["submitted", "delivered"]
    assert all(h["channel_link"] == link for h in hooks)
    assert not sent_to_graph(world, "psid-mixed")
    assert read_back(world.mixed, message_uuid)["channel_link"] == link
    # Its own page still goes out as that page.
    page_uuid = send(world.mixed, messenger(MIXED_PAGE, "psid-mixed-page"))
    request = graph_request(world, "psid-mixed-page")
    assert request.query["access_token"] == MIXED_TOKEN
    [submitted] = world.statuses(world.mixed, page_uuid, 1)
    assert submitted["channel_link"] == {"id": world.links["mixed_page"]["id"], "kind": "messenger"}


def test_basic_auth_sms_may_use_an_application_bound_link(world: World) -> None:
    message_uuid = send(world.mixed, sms("447700900456"))
    hooks = world.statuses(world.mixed, message_uuid, 2)
    link = {"id": world.links["mixed_sms"]["id"], "kind": "sandbox"}
    assert [h["status"] for h in hooks] == ["submitted", "delivered"]
    assert all(h["channel_link"] == link for h in hooks)
    # The link's own delay (0.3 s), not the built-in sandbox's (0.2 s).
    gap = epoch(hooks[1]["timestamp"]) - epoch(hooks[0]["timestamp"])
    assert gap == pytest.approx(0.3, abs=0.004)


# -- routing, as a table: the account's links, the message, the link chosen or the refusal --------


def row(ident: str, kind: str, channel: str, app: str | None = None, default: bool = False,
        **config: Any) -> dict[str, Any]:
    return {"id": ident, "kind": kind, "channel": channel, "application_id": app, "is_default": default,
            "config": config, "tps": None, "account_id": "acc"}


ROWS = [
    row("sms-app1", "sms", "sms", "app1"),
    row("sms-app2", "sms", "sms", "app2", senders=["Shop"]),
    row("page-app1", "messenger", "messenger", "app1", page_id="P1"),
    row("page-app2", "messenger", "messenger", "app2", page_id="P2"),
    row("page-p1-wide", "messenger", "messenger", page_id="P1"),
    row("bot-wide", "viber", "viber_service", service_id="B1"),
]

ROUTES = {
    # Messenger and Viber: the link of the `from`, whoever sends; its own application's first.
    "basic-page-of-an-app": ("messenger", None, "P2", "page-app2"),
    "jwt-page-of-another-app": ("messenger", "app1", "P2", "page-app2"),
    "jwt-own-page-first": ("messenger", "app1", "P1", "page-app1"),
    "basic-account-wide-page-first": ("messenger", None, "P1", "page-p1-wide"),
    "unlinked-page": ("messenger", "app1", "P9", NO_LINK),
    "basic-service": ("viber_service", None, "B1", "bot-wide"),
    "unlinked-service": ("viber_service", "app1", "B9", NO_LINK),
    # SMS: rules, the application's link, the account's default; Basic may use app links.
    "jwt-own-sms": ("sms", "app1", "Acme", "sms-app1"),
    "jwt-no-sms-of-its-own": ("sms", "app3", "Acme", NO_LINK),
    "basic-sms-rule": ("sms", None, "Shop", "sms-app2"),
    "basic-sms-first": ("sms", None, "Acme", "sms-app1"),
}


@pytest.mark.parametrize("case", list(ROUTES))
def test_routing_table(case: str) -> None:
    channel, application_id, sender, expected = ROUTES[case]
    message = {"channel": channel, "application_id": application_id, "from_addr": sender, "to_addr": "447700900000"}
    if expected == NO_LINK:
        with pytest.raises(Rejected) as refused:
            route(ROWS, message)
        assert refused.value.code == NO_LINK and refused.value.reason.startswith("No link: ")
    else:
        found = route(ROWS, message)
        assert found is not None and found["id"] == expected


def test_routing_uses_the_built_in_sandbox_only_without_real_links() -> None:
    message = {"channel": "messenger", "application_id": None, "from_addr": "P9", "to_addr": "u"}
    assert route([], message) is None
    assert route([row("sms-only", "sms", "sms")], message) is None
    explicit = row("sandbox-page", "sandbox", "messenger", "app1")
    # A Basic-auth message may use an application's sandbox link; another application's JWT may not.
    assert route([*ROWS, explicit], message) == explicit
    with pytest.raises(Rejected):
        route([*ROWS, explicit], {**message, "application_id": "app2"})

"""End to end: durable dispatch through the sandbox, and the status and inbound webhooks.

Real servers (`missive serve` subprocesses) with short sandbox delays and backoffs, and a
real webhook receiver on 127.0.0.1. Sequences are asserted exactly, per message.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import subprocess
import threading
import time
import uuid as uuidlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from missive.dispatch import whatsapp_rules
from tests.fakes.webhook_receiver import Hook, WebhookReceiver
from tests.harness import Server, missive, missive_json, provisioned_server, start_server

DELIVERED_AFTER = 0.2
READ_AFTER = 0.4
FAST = {
    "MISSIVE_SANDBOX_DELIVERED_AFTER": str(DELIVERED_AFTER),
    "MISSIVE_SANDBOX_READ_AFTER": str(READ_AFTER),
    "MISSIVE_DISPATCH_BACKOFF_BASE": "0.05",
    "MISSIVE_WEBHOOK_BACKOFF_BASE": "0.05",
    "MISSIVE_POLL_INTERVAL": "0.05",
}
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
V1_KEYS = {"message_uuid", "to", "from", "channel", "timestamp", "status"}
BETA_KEYS = {"message_uuid", "to", "from", "timestamp", "status"}


def built_in(channel: str) -> dict:
    """The `channel_link` of a message the built-in sandbox carried."""
    return {"id": f"sandbox:{channel}", "kind": "sandbox"}


# -- helpers -------------------------------------------------------------------------------


class Responder:
    """The receiver's `respond`: per-path rules (called with the 1-based call number for
    that path), and the arrival time of every request by path."""

    def __init__(self) -> None:
        self.rules: dict[str, Callable[[int], int | tuple[int, float]]] = {}
        self.calls: dict[str, list[float]] = defaultdict(list)
        self._lock = threading.Lock()

    def __call__(self, hook: Hook) -> int | tuple[int, float]:
        with self._lock:
            self.calls[hook.path].append(hook.at)
            number = len(self.calls[hook.path])
        rule = self.rules.get(hook.path)
        return rule(number) if rule else 200

    def count(self, path: str) -> int:
        with self._lock:
            return len(self.calls[path])


def receiver_with_responder() -> tuple[WebhookReceiver, Responder]:
    receiver = WebhookReceiver()
    responder = Responder()
    receiver.respond = responder
    return receiver, responder


def send(
    server: Server, body: dict, *, path: str = "/v1/messages", headers: dict | None = None
) -> str:
    """POST a message (Basic auth unless `headers` carry a bearer token); its uuid."""
    with server.client() as client:
        if headers is None:
            response = client.post(path, json=body, auth=server.basic)
        else:
            response = client.post(path, json=body, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()["message_uuid"]


def read(server: Server, message_uuid: str) -> dict:
    with server.client() as client:
        response = client.get(f"/v1/messages/{message_uuid}", auth=server.basic)
    assert response.status_code == 200, response.text
    return response.json()


def wait_read(
    server: Server, message_uuid: str, condition: Callable[[dict], bool], timeout: float = 10.0
) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        seen = read(server, message_uuid)
        if condition(seen):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"message {message_uuid} never matched: {seen}")
        time.sleep(0.05)


def hooks_for(hooks: list[Hook], message_uuid: str) -> list[Hook]:
    """The webhooks of one message, in the order of their `timestamp` (the order of the
    status changes). The contract does not promise arrival order, so it is not asserted."""
    return sorted(
        (h for h in hooks if h.json.get("message_uuid") == message_uuid),
        key=lambda h: h.json["timestamp"],
    )


def accepted_for(receiver: WebhookReceiver, message_uuid: str) -> list[Hook]:
    return hooks_for(receiver.snapshot(accepted_only=True), message_uuid)


def statuses(hooks: list[Hook]) -> list[str]:
    return [h.json["status"] for h in hooks]


def wait_statuses(
    receiver: WebhookReceiver, message_uuid: str, count: int, timeout: float = 10.0
) -> list[Hook]:
    receiver.wait_for(
        lambda hooks: (
            len(hooks_for([h for h in hooks if 200 <= h.answered < 300], message_uuid)) >= count
        ),
        timeout,
    )
    return accepted_for(receiver, message_uuid)


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def check_timestamp(value: str) -> None:
    assert ISO_MS.match(value), value
    assert abs(epoch(value) - time.time()) < 120, value


def check_v1(
    payload: dict,
    *,
    message_uuid: str,
    to: str,
    sender: str,
    channel: str,
    status: str,
    link: dict | None,
    client_ref: str | None = None,
    error_code: int | None = None,
) -> None:
    """`link`: the channel link that carried or refused the message; None for one no link
    took (routing found none)."""
    keys = set(V1_KEYS)
    if client_ref is not None:
        keys.add("client_ref")
    if error_code is not None:
        keys.add("error")
    if link is not None:
        keys.add("channel_link")
    if channel == "sms":
        keys.add("sms")  # its parts (issue 21.1)
    assert set(payload) == keys, payload
    if channel == "sms":
        assert payload["sms"]["count_total"].isdigit(), payload
    assert payload.get("channel_link") == link
    assert payload["message_uuid"] == message_uuid
    assert payload["to"] == to
    assert payload["from"] == sender
    assert payload["channel"] == channel
    assert payload["status"] == status
    check_timestamp(payload["timestamp"])
    if client_ref is not None:
        assert payload["client_ref"] == client_ref
    if error_code is not None:
        # The v1 error (issue 21.1); the beta {code, reason} is checked with the beta shapes.
        assert set(payload["error"]) == {"type", "title", "detail", "instance"}, payload
        assert payload["error"]["type"] == f"https://developer.vonage.com/api-errors/messages#{error_code}"
        assert payload["error"]["title"] == str(error_code)
        assert isinstance(payload["error"]["detail"], str) and payload["error"]["detail"]
        assert len(payload["error"]["instance"]) == 32


def verify_signature(hook: Hook, secret: str) -> dict[str, Any]:
    scheme, _, token = hook.headers["authorization"].partition(" ")
    assert scheme == "Bearer"
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(
        token,
        secret,
        algorithms=["HS256"],
        issuer="Missive",
        options={"require": ["iat", "jti", "iss"]},
    )
    assert claims["payload_hash"] == hashlib.sha256(hook.body).hexdigest()
    return claims


def app_body(
    name: str,
    status_url: str | None = None,
    inbound_url: str | None = None,
    version: str | None = None,
) -> dict:
    webhooks: dict[str, Any] = {}
    if status_url:
        webhooks["status_url"] = {"address": status_url, "http_method": "POST"}
    if inbound_url:
        webhooks["inbound_url"] = {"address": inbound_url, "http_method": "POST"}
    messages: dict[str, Any] = {"webhooks": webhooks}
    if version:
        messages["version"] = version
    return {"name": name, "capabilities": {"messages": messages}}


def set_app_urls(server: Server, app_id: str, body: dict) -> None:
    with server.client() as client:
        response = client.put(f"/v2/applications/{app_id}", json=body, auth=server.basic)
    assert response.status_code == 200, response.text


def new_app(server: Server, body: dict) -> tuple[str, str]:
    """A second application: (id, private key)."""
    with server.client() as client:
        response = client.post("/v2/applications", json=body, auth=server.basic)
    assert response.status_code == 201, response.text
    created = response.json()
    return created["id"], created["keys"]["private_key"]


def sms(to: str = "447700900000", **extra: Any) -> dict:
    return {
        "channel": "sms",
        "message_type": "text",
        "to": to,
        "from": "Acme",
        "text": "hello",
        **extra,
    }


def messenger(to: str = "psid-1234", **extra: Any) -> dict:
    return {
        "channel": "messenger",
        "message_type": "text",
        "to": to,
        "from": "page-42",
        "text": "hello",
        **extra,
    }


def viber(to: str = "vuser-5678", **extra: Any) -> dict:
    return {
        "channel": "viber_service",
        "message_type": "text",
        "to": to,
        "from": "16273",
        "text": "hello",
        **extra,
    }


def whatsapp(to: str = "447700900200", **extra: Any) -> dict:
    return {
        "channel": "whatsapp",
        "message_type": "text",
        "to": to,
        "from": "447700900100",
        "text": "hello",
        **extra,
    }


def sandbox_attempts(log_path: Path, message_uuid: str) -> list[int]:
    if not log_path.exists():
        return []
    return [
        int(line.split()[1])
        for line in log_path.read_text().splitlines()
        if line.split()[0] == message_uuid
    ]


# -- the main server: account and application URLs point at one receiver -------------------


@dataclass
class Hub:
    server: Server
    receiver: WebhookReceiver
    responder: Responder
    sandbox_log: Path


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    receiver, responder = receiver_with_responder()
    data_dir = tmp_path_factory.mktemp("dispatch")
    sandbox_log = data_dir / "sandbox-sends.log"
    env = {**FAST, "MISSIVE_WEBHOOK_TIMEOUT": "0.5", "MISSIVE_SANDBOX_LOG": str(sandbox_log)}
    with receiver:
        server = provisioned_server(data_dir, env=env)
        try:
            # No message has been routed yet, so no webhook URL is cached: set them now.
            updated = missive(
                data_dir,
                "account",
                "update",
                "--api-key",
                server.api_key,
                "--status-url",
                receiver.url("/account/status"),
                "--inbound-url",
                receiver.url("/account/inbound"),
            )
            assert updated.returncode == 0, updated.stderr
            set_app_urls(
                server,
                server.app_id,
                app_body("tests", receiver.url("/app/status"), receiver.url("/app/inbound")),
            )
            yield Hub(server, receiver, responder, sandbox_log)
        finally:
            server.stop()


# 1. Every magic recipient, and the normal sequences, per channel.


@dataclass(frozen=True)
class Case:
    body: dict
    expected: tuple[str, ...]
    error_code: int | None = None
    attempts: tuple[int, ...] = (1,)


CASES: dict[str, Case] = {
    "sms": Case(sms("447700900000", client_ref="ref-sms"), ("submitted", "delivered")),
    "sms-0001-rejected": Case(sms("447700900001", client_ref="ref-0001"), ("rejected",), 1020),
    "sms-0002-undeliverable": Case(sms("447700900002"), ("submitted", "undeliverable"), 1260),
    "sms-0003-submitted-only": Case(sms("447700900003", client_ref="ref-0003"), ("submitted",)),
    "sms-0004-retried": Case(
        sms("447700900004", client_ref="ref-0004"), ("submitted", "delivered"), attempts=(1, 2, 3)
    ),
    "messenger": Case(
        messenger("psid-1234", client_ref="ref-messenger"), ("submitted", "delivered", "read")
    ),
    "viber": Case(viber("vuser-5678"), ("submitted", "delivered", "read")),
    "messenger-0001-rejected": Case(messenger("psid-0001"), ("rejected",), 1020),
    "messenger-0003-submitted-only": Case(messenger("psid-0003"), ("submitted",)),
    "viber-0002-undeliverable": Case(viber("vuser-0002"), ("submitted", "undeliverable"), 1260),
    "viber-0004-retried": Case(
        viber("vuser-0004"), ("submitted", "delivered", "read"), attempts=(1, 2, 3)
    ),
    "whatsapp": Case(whatsapp(client_ref="ref-whatsapp"), ("submitted", "delivered", "read")),
    "whatsapp-0001-rejected": Case(whatsapp("447700900001"), ("rejected",), 1020),
    "whatsapp-0002-undeliverable": Case(whatsapp("447700900002"), ("submitted", "undeliverable"), 1260),
    "whatsapp-0003-submitted-only": Case(whatsapp("447700900003"), ("submitted",)),
    "whatsapp-0004-retried": Case(
        whatsapp("447700900004"), ("submitted", "delivered", "read"), attempts=(1, 2, 3)
    ),
    # The user's 24-hour window is closed: free-form is refused, a template still goes.
    "whatsapp-0005-window-closed": Case(whatsapp("447700900005"), ("rejected",), 1340),
    "whatsapp-0005-template": Case(
        {**{k: v for k, v in whatsapp("447700900005").items() if k != "text"}, "message_type": "template",
         "template": {"name": "verify", "parameters": ["1234"]}, "whatsapp": {"policy": "deterministic", "locale": "en-GB"}},
        ("submitted", "delivered", "read"),
    ),
    "sms-0005-normal": Case(sms("447700900005"), ("submitted", "delivered")),
}
QUIET = 0.8  # after the last expected webhook: nothing more may arrive (4x delivered_after)


@pytest.fixture(scope="module")
def magic_run(hub: Hub) -> dict[str, str]:
    """Send every case at once (Basic auth: the account's status URL), wait for every
    expected webhook, then a quiet period in which nothing more may come."""
    uuids = {name: send(hub.server, case.body) for name, case in CASES.items()}

    def complete(hooks: list[Hook]) -> bool:
        ok = [h for h in hooks if 200 <= h.answered < 300]
        return all(
            len(hooks_for(ok, uuids[name])) >= len(case.expected) for name, case in CASES.items()
        )

    hub.receiver.wait_for(complete, timeout=15)
    time.sleep(QUIET)
    return uuids


@pytest.mark.parametrize("name", list(CASES))
def test_magic_recipients_give_the_documented_webhook_sequence(
    hub: Hub, magic_run: dict[str, str], name: str
) -> None:
    case, message_uuid = CASES[name], magic_run[name]
    hooks = hooks_for(hub.receiver.snapshot(), message_uuid)
    # Exactly the expected sequence, no more and no duplicates, each accepted at its first attempt.
    assert statuses(hooks) == list(case.expected)
    assert all(h.answered == 200 and h.path == "/account/status" for h in hooks)
    for hook in hooks:
        status = hook.json["status"]
        failed = status in ("rejected", "undeliverable")
        check_v1(
            hook.json,
            message_uuid=message_uuid,
            to=case.body["to"],
            sender=case.body["from"],
            channel=case.body["channel"],
            status=status,
            # The sandbox carried it, or refused it: named either way.
            link=built_in(case.body["channel"]),
            client_ref=case.body.get("client_ref"),
            error_code=case.error_code if failed else None,
        )
    stamps = [epoch(h.json["timestamp"]) for h in hooks]
    if "delivered" in case.expected:
        gap = stamps[case.expected.index("delivered")] - stamps[case.expected.index("submitted")]
        assert gap == pytest.approx(DELIVERED_AFTER, abs=0.005)
    if "read" in case.expected:
        gap = stamps[case.expected.index("read")] - stamps[case.expected.index("submitted")]
        assert gap == pytest.approx(READ_AFTER, abs=0.005)

    # What the server shows: the same history (with `accepted` first), the final status,
    # and one webhook per status change, delivered at the first attempt.
    stored = read(hub.server, message_uuid)
    assert stored["status"] == case.expected[-1]
    history = stored["history"]
    assert [e["status"] for e in history] == ["accepted", *case.expected]
    assert [e["timestamp"] for e in history[1:]] == [h.json["timestamp"] for h in hooks]
    for entry in history[1:]:
        if entry["status"] in ("rejected", "undeliverable"):
            assert entry["error"]["code"] == case.error_code
        else:
            assert "error" not in entry
            assert entry["provider_ref"].startswith("sandbox-")
    assert [(w["kind"], w["status"], w["state"], w["attempts"]) for w in stored["webhooks"]] == [
        ("status", s, "delivered", 1) for s in case.expected
    ]
    assert all(w["url"] == hub.receiver.url("/account/status") for w in stored["webhooks"])
    # The sandbox's own record: how many tries reached it (0004 fails twice, retryably).
    assert sandbox_attempts(hub.sandbox_log, message_uuid) == list(case.attempts)


def test_whatsapp_0005_is_refused_as_the_24_hour_rule_refuses(hub: Hub, magic_run: dict[str, str]) -> None:
    [rejected] = [e for e in read(hub.server, magic_run["whatsapp-0005-window-closed"])["history"] if "error" in e]
    assert rejected["error"] == {"code": 1340, "reason": whatsapp_rules.CLOSED}


# 2. The beta (v0.1) shape.


BETA_CASES = {
    "sms": (
        {
            "from": {"type": "sms", "number": "Acme"},
            "to": {"type": "sms", "number": "447700900000"},
            "message": {"content": {"type": "text", "text": "hi"}},
            "client_ref": "beta-sms",
        },
        ("submitted", "delivered"),
        {"type": "sms", "number": "447700900000"},
        {"type": "sms", "number": "Acme"},
    ),
    "sms-rejected": (
        {
            "from": {"type": "sms", "number": "Acme"},
            "to": {"type": "sms", "number": "447700900001"},
            "message": {"content": {"type": "text", "text": "hi"}},
        },
        ("rejected",),
        {"type": "sms", "number": "447700900001"},
        {"type": "sms", "number": "Acme"},
    ),
    "messenger": (
        {
            "from": {"type": "messenger", "id": "page-7"},
            "to": {"type": "messenger", "id": "psid-7"},
            "message": {"content": {"type": "text", "text": "hi"}},
        },
        ("submitted", "delivered", "read"),
        {"type": "messenger", "id": "psid-7"},
        {"type": "messenger", "id": "page-7"},
    ),
    "viber": (
        {
            "from": {"type": "viber_service_msg", "id": "16273"},
            "to": {"type": "viber_service_msg", "number": "447700900000"},
            "message": {"content": {"type": "text", "text": "hi"}},
            "client_ref": "beta-viber",
        },
        ("submitted", "delivered", "read"),
        {"type": "viber_service_msg", "number": "447700900000"},
        {"type": "viber_service_msg", "id": "16273"},
    ),
}


BETA_CHANNELS = {"sms": "sms", "messenger": "messenger", "viber_service_msg": "viber_service"}


def check_beta(
    payload: dict,
    *,
    message_uuid: str,
    to: dict,
    sender: dict,
    status: str,
    link: dict | None,
    client_ref: str | None = None,
) -> None:
    keys = (
        set(BETA_KEYS)
        | ({"client_ref"} if client_ref else set())
        | ({"error"} if status == "rejected" else set())
        | ({"channel_link"} if link is not None else set())
    )
    assert set(payload) == keys, payload
    assert payload.get("channel_link") == link
    assert payload["message_uuid"] == message_uuid
    assert payload["to"] == to
    assert payload["from"] == sender
    assert payload["status"] == status
    check_timestamp(payload["timestamp"])
    if client_ref:
        assert payload["client_ref"] == client_ref
    if status == "rejected":
        assert payload["error"]["code"] == 1020


@pytest.mark.parametrize("path", ["/v0.1/messages", "/beta/messages"])
def test_beta_format_messages_get_beta_webhooks(hub: Hub, path: str) -> None:
    uuids = {name: send(hub.server, body, path=path) for name, (body, *_rest) in BETA_CASES.items()}
    for name, (body, expected, to, sender) in BETA_CASES.items():
        hooks = wait_statuses(hub.receiver, uuids[name], len(expected))
        assert statuses(hooks) == list(expected), name
        for hook in hooks:
            check_beta(
                hook.json,
                message_uuid=uuids[name],
                to=to,
                sender=sender,
                status=hook.json["status"],
                link=built_in(BETA_CHANNELS[to["type"]]),  # carried or refused by it
                client_ref=body.get("client_ref"),
            )
    time.sleep(2 * DELIVERED_AFTER)
    for name, (_body, expected, *_rest) in BETA_CASES.items():
        assert statuses(hooks_for(hub.receiver.snapshot(), uuids[name])) == list(expected), name


def test_webhook_version_v01_gets_beta_webhooks(hub: Hub) -> None:
    cases = [
        (
            sms("447700900000", webhook_version="v0.1", client_ref="v01"),
            ("submitted", "delivered"),
            {"type": "sms", "number": "447700900000"},
            {"type": "sms", "number": "Acme"},
        ),
        (
            viber("vuser-99", webhook_version="v0.1"),
            ("submitted", "delivered", "read"),
            {"type": "viber_service_msg", "id": "vuser-99"},
            {"type": "viber_service_msg", "id": "16273"},
        ),
        (
            messenger("psid-99", webhook_version="v0.1", webhook_url=hub.receiver.url("/v01/own")),
            ("submitted", "delivered", "read"),
            {"type": "messenger", "id": "psid-99"},
            {"type": "messenger", "id": "page-42"},
        ),
    ]
    sent = [
        (send(hub.server, body), body, expected, to, sender) for body, expected, to, sender in cases
    ]
    for message_uuid, body, expected, to, sender in sent:
        hooks = wait_statuses(hub.receiver, message_uuid, len(expected))
        assert statuses(hooks) == list(expected)
        assert {h.path for h in hooks} == {
            "/v01/own" if "webhook_url" in body else "/account/status"
        }
        for hook in hooks:
            check_beta(
                hook.json,
                message_uuid=message_uuid,
                to=to,
                sender=sender,
                status=hook.json["status"],
                link=built_in(BETA_CHANNELS[to["type"]]),  # carried or refused by it
                client_ref=body.get("client_ref"),
            )
    # And explicitly v1 is the v1 shape.
    message_uuid = send(hub.server, sms("447700900000", webhook_version="v1"))
    hooks = wait_statuses(hub.receiver, message_uuid, 2)
    for hook in hooks:
        check_v1(
            hook.json,
            message_uuid=message_uuid,
            to="447700900000",
            sender="Acme",
            channel="sms",
            status=hook.json["status"],
            link=built_in("sms"),
        )


# 3. Where status webhooks go, and their signatures.


def test_status_webhooks_go_to_webhook_url_else_application_else_account(hub: Hub) -> None:
    bearer = hub.server.bearer()
    routes = {
        send(hub.server, sms("447700900003")): "/account/status",
        send(
            hub.server, sms("447700900003", webhook_url=hub.receiver.url("/own/basic"))
        ): "/own/basic",
        send(hub.server, sms("447700900003"), headers=bearer): "/app/status",
        send(
            hub.server,
            sms("447700900003", webhook_url=hub.receiver.url("/own/jwt")),
            headers=hub.server.bearer(),
        ): "/own/jwt",
    }
    for message_uuid, path in routes.items():
        hooks = wait_statuses(hub.receiver, message_uuid, 1)
        assert [(h.path, h.json["status"]) for h in hooks] == [(path, "submitted")]


def test_webhooks_are_signed_with_the_account_signature_secret(hub: Hub) -> None:
    server = hub.server
    basic_uuid = send(server, messenger("psid-sig1"))
    jwt_uuid = send(server, messenger("psid-sig2"), headers=server.bearer())
    with server.client() as client:
        response = client.post(
            "/v1/sandbox/inbound",
            json={"channel": "messenger", "from": "user-sig", "text": "hi"},
            headers=server.bearer(),
        )
    assert response.status_code == 202, response.text
    inbound_uuid = response.json()["message_uuid"]

    expected_app = {basic_uuid: None, jwt_uuid: server.app_id, inbound_uuid: server.app_id}
    wait_statuses(hub.receiver, basic_uuid, 3)
    wait_statuses(hub.receiver, jwt_uuid, 3)
    wait_statuses(hub.receiver, inbound_uuid, 1)
    checked = 0
    for message_uuid, application_id in expected_app.items():
        for hook in accepted_for(hub.receiver, message_uuid):
            claims = verify_signature(hook, server.signature_secret)
            assert claims["iss"] == "Missive"
            assert claims["api_key"] == server.api_key
            assert claims.get("application_id") == application_id
            assert isinstance(claims["iat"], int) and abs(claims["iat"] - time.time()) < 120
            assert claims["jti"]
            with pytest.raises(jwt.InvalidSignatureError):
                jwt.decode(
                    hook.headers["authorization"].split(" ", 1)[1],
                    "x" * 43,  # a wrong secret, as long as a real one
                    algorithms=["HS256"],
                )
            checked += 1
    assert checked == 7
    # Every jti is different (a replay can be recognised).
    tokens = [
        h.headers["authorization"] for m in expected_app for h in accepted_for(hub.receiver, m)
    ]
    jtis = {
        jwt.decode(t.split(" ", 1)[1], server.signature_secret, algorithms=["HS256"])["jti"]
        for t in tokens
    }
    assert len(jtis) == len(tokens)


# 4. Retries of webhooks.


def test_webhook_answered_500_three_times_is_retried_until_accepted_once(hub: Hub) -> None:
    path = f"/flaky/{uuidlib.uuid4().hex}"
    hub.responder.rules[path] = lambda n: 500 if n <= 3 else 200
    message_uuid = send(hub.server, sms("447700900003", webhook_url=hub.receiver.url(path)))
    hub.receiver.wait_for(
        lambda hooks: any(h.path == path and h.answered == 200 for h in hooks), timeout=10
    )
    stored = wait_read(
        hub.server,
        message_uuid,
        lambda m: m["webhooks"] and m["webhooks"][0]["state"] == "delivered",
    )
    time.sleep(0.5)
    answered = [h.answered for h in hub.receiver.snapshot() if h.path == path]
    assert answered == [500, 500, 500, 200]
    assert all(h.json["status"] == "submitted" for h in hub.receiver.snapshot() if h.path == path)
    stored = read(hub.server, message_uuid)
    assert len(stored["webhooks"]) == 1
    hook = stored["webhooks"][0]
    assert (hook["status"], hook["state"], hook["attempts"], hook["last_status_code"]) == (
        "submitted",
        "delivered",
        4,
        200,
    )
    assert hook["url"] == hub.receiver.url(path)
    assert "last_error" not in hook
    check_timestamp(hook["delivered_at"])


def test_webhook_receiver_that_hangs_past_the_timeout_is_retried(hub: Hub) -> None:
    path = f"/hang/{uuidlib.uuid4().hex}"
    # The first call hangs 3 s, six times MISSIVE_WEBHOOK_TIMEOUT (0.5 s).
    hub.responder.rules[path] = lambda n: (200, 3.0) if n == 1 else 200
    started = time.monotonic()
    message_uuid = send(hub.server, sms("447700900003", webhook_url=hub.receiver.url(path)))
    stored = wait_read(
        hub.server,
        message_uuid,
        lambda m: m["webhooks"] and m["webhooks"][0]["state"] == "delivered",
    )
    elapsed = time.monotonic() - started
    hook = stored["webhooks"][0]
    assert (hook["state"], hook["attempts"], hook["last_status_code"]) == ("delivered", 2, 200)
    assert hub.responder.count(path) == 2
    calls = hub.responder.calls[path]
    # The retry came after the timeout, not after the receiver's 3 s.
    assert 0.45 <= calls[1] - calls[0] < 2.5
    assert elapsed < 2.8


# 7. Inbound messages.


def check_inbound(
    payload: dict,
    *,
    message_uuid: str,
    channel: str,
    to: str,
    sender: str,
    message_type: str,
    content: dict,
) -> None:
    assert set(payload) == {
        "channel",
        "message_uuid",
        "to",
        "from",
        "timestamp",
        "message_type",
        *content,
    }, payload
    assert payload["channel"] == channel
    assert payload["message_uuid"] == message_uuid
    assert payload["to"] == to
    assert payload["from"] == sender
    assert payload["message_type"] == message_type
    check_timestamp(payload["timestamp"])
    for key, value in content.items():
        assert payload[key] == value


INBOUND_HTTP = [
    (
        {"channel": "messenger", "from": "user-1", "to": "page-1", "text": "hi"},
        "basic",
        "/account/inbound",
        "text",
        {"text": "hi"},
    ),
    (
        {
            "channel": "messenger",
            "from": "user-2",
            "to": "page-1",
            "image": {"url": "https://example.com/cat.jpg"},
        },
        "jwt",
        "/app/inbound",
        "image",
        {"image": {"url": "https://example.com/cat.jpg"}},
    ),
    (
        {
            "channel": "messenger",
            "from": "user-3",
            "location": {"lat": 51.5, "long": -0.12, "name": "London"},
        },
        "jwt",
        "/app/inbound",
        "location",
        {"location": {"lat": 51.5, "long": -0.12, "name": "London"}},
    ),
    (
        {
            "channel": "viber_service",
            "from": "vuser-4",
            "to": "16273",
            "video": {"url": "https://example.com/v.mp4"},
        },
        "basic",
        "/account/inbound",
        "video",
        {"video": {"url": "https://example.com/v.mp4"}},
    ),
    (
        {"channel": "messenger", "from": "user-5", "file": {"url": "https://example.com/a.pdf"}},
        "basic+app",
        "/app/inbound",
        "file",
        {"file": {"url": "https://example.com/a.pdf"}},
    ),
    (
        {"channel": "whatsapp", "from": "447700900301", "to": "447700900100", "text": "hi on WhatsApp"},
        "jwt",
        "/app/inbound",
        "text",
        {"text": "hi on WhatsApp"},
    ),
]


@pytest.mark.parametrize(
    ("body", "auth", "path", "message_type", "content"),
    INBOUND_HTTP,
    ids=[
        "basic-text",
        "jwt-image",
        "jwt-location",
        "basic-viber-video",
        "basic-application_id-file",
        "jwt-whatsapp-text",
    ],
)
def test_sandbox_inbound_over_http(
    hub: Hub, body: dict, auth: str, path: str, message_type: str, content: dict
) -> None:
    server = hub.server
    body = dict(body)
    with server.client() as client:
        if auth == "jwt":
            response = client.post("/v1/sandbox/inbound", json=body, headers=server.bearer())
        else:
            if auth == "basic+app":
                body["application_id"] = server.app_id
            response = client.post("/v1/sandbox/inbound", json=body, auth=server.basic)
    assert response.status_code == 202, response.text
    message_uuid = response.json()["message_uuid"]
    hooks = wait_statuses(hub.receiver, message_uuid, 1)
    assert [h.path for h in hooks] == [path]
    check_inbound(
        hooks[0].json,
        message_uuid=message_uuid,
        channel=body["channel"],
        to=body.get("to", "sandbox"),
        sender=body["from"],
        message_type=message_type,
        content=content,
    )
    claims = verify_signature(hooks[0], server.signature_secret)
    assert claims.get("application_id") == (server.app_id if path == "/app/inbound" else None)


@pytest.mark.parametrize(
    ("body", "name"),
    [
        (
            {
                "channel": "messenger",
                "from": "u",
                "text": "hi",
                "image": {"url": "https://example.com/a.jpg"},
            },
            "body",
        ),
        ({"channel": "messenger", "from": "u"}, "body"),
        (
            {
                "channel": "sms",
                "from": "447700900000",
                "image": {"url": "https://example.com/a.jpg"},
            },
            "body",
        ),
        ({"channel": "fax", "from": "u", "text": "hi"}, "channel"),
        ({"channel": "messenger", "from": "u", "location": {"lat": 91, "long": 0}}, "location.lat"),
    ],
)
def test_sandbox_inbound_validation(hub: Hub, body: dict, name: str) -> None:
    with hub.server.client() as client:
        response = client.post("/v1/sandbox/inbound", json=body, auth=hub.server.basic)
    assert response.status_code == 422, response.text
    names = [p["name"] for p in response.json()["invalid_parameters"]]
    assert any(n == name or n.startswith(name) for n in names), names


def test_sandbox_inbound_for_an_unknown_application_is_refused(hub: Hub) -> None:
    with hub.server.client() as client:
        response = client.post(
            "/v1/sandbox/inbound",
            auth=hub.server.basic,
            json={
                "channel": "messenger",
                "from": "u",
                "text": "hi",
                "application_id": str(uuidlib.uuid4()),
            },
        )
    assert response.status_code == 422
    assert [p["name"] for p in response.json()["invalid_parameters"]] == ["application_id"]


CLI_INBOUND = {
    "text": (["--text", "hi"], "/account/inbound", "text", {"text": "hi"}),
    "location": (
        ["--location", "51.5,-0.1"],
        "/account/inbound",
        "location",
        {"location": {"lat": 51.5, "long": -0.1}},
    ),
    "image-to-app": (
        ["--image-url", "https://example.com/cat.jpg", "--app", "APP"],
        "/app/inbound",
        "image",
        {"image": {"url": "https://example.com/cat.jpg"}},
    ),
    "bad-location": (["--location", "north"], None, None, None),
}


@pytest.fixture(scope="module")
def cli_inbound(hub: Hub) -> dict[str, tuple[str, subprocess.CompletedProcess[str]]]:
    """Every `missive sandbox inbound` of CLI_INBOUND, run at once (each CLI start takes a second)."""
    server = hub.server

    def run(case: str) -> tuple[str, subprocess.CompletedProcess[str]]:
        args = [server.app_id if a == "APP" else a for a in CLI_INBOUND[case][0]]
        sender = f"cli-{case}"
        return sender, missive(
            server.data_dir,
            "sandbox",
            "inbound",
            "--channel",
            "messenger",
            "--from",
            sender,
            "--api-key",
            server.api_key,
            "--json",
            *args,
        )

    with ThreadPoolExecutor(len(CLI_INBOUND)) as pool:
        return dict(zip(CLI_INBOUND, pool.map(run, CLI_INBOUND), strict=False))


@pytest.mark.parametrize("case", [c for c in CLI_INBOUND if c != "bad-location"])
def test_sandbox_inbound_from_the_cli(hub: Hub, cli_inbound: dict, case: str) -> None:
    _args, path, message_type, content = CLI_INBOUND[case]
    sender, result = cli_inbound[case]
    assert result.returncode == 0, result.stderr
    message_uuid = json.loads(result.stdout)["message_uuid"]
    hooks = wait_statuses(hub.receiver, message_uuid, 1)
    assert [h.path for h in hooks] == [path]
    check_inbound(
        hooks[0].json,
        message_uuid=message_uuid,
        channel="messenger",
        to="sandbox",
        sender=sender,
        message_type=message_type,
        content=content,
    )
    claims = verify_signature(hooks[0], hub.server.signature_secret)
    assert claims.get("application_id") == (hub.server.app_id if path == "/app/inbound" else None)


def test_sandbox_inbound_cli_refuses_bad_input(hub: Hub, cli_inbound: dict) -> None:
    sender, result = cli_inbound["bad-location"]
    assert result.returncode != 0 and "LAT,LONG" in result.stderr
    assert not [h for h in hub.receiver.snapshot() if h.json.get("from") == sender]


# -- 5 and 6: out-of-order receipts, and a slow receiver, on a second server ---------------------


@dataclass
class Second:
    server: Server
    receiver: WebhookReceiver
    responder: Responder
    fast_app: tuple[str, str] = ("", "")
    messenger_link: str = ""  # the account's default Messenger link: a sandbox link


SLOW_DELAY = 3.0


@pytest.fixture(scope="module")
def second(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Second]:
    receiver, responder = receiver_with_responder()
    # Slow for its first four requests (two rounds of two), then quick again: by the end of
    # the module nothing is left hanging in the receiver.
    responder.rules["/slow"] = lambda n: (200, SLOW_DELAY) if n <= 4 else 200
    data_dir = tmp_path_factory.mktemp("ordering")
    with receiver:
        # A short shutdown timeout: the slow receiver's requests still in flight at the end
        # are not waited for. Two tries at most per message.
        env = {
            **FAST,
            "MISSIVE_WEBHOOK_PER_TARGET": "2",
            "MISSIVE_SHUTDOWN_TIMEOUT": "0.5",
            "MISSIVE_DISPATCH_MAX_ATTEMPTS": "2",
            "MISSIVE_SANDBOX_LOG": str(data_dir / "sandbox-sends.log"),
        }
        server = provisioned_server(data_dir, env=env)
        try:
            # The account's default Messenger link reports `read` before `delivered`.
            link = missive_json(
                data_dir,
                "channel",
                "add",
                "sandbox",
                "--channel",
                "messenger",
                "--delivered-after",
                "0.6",
                "--read-after",
                "0.2",
                "--default",
                "--api-key",
                server.api_key,
            )
            assert (
                link["config"] == {"delivered_after": 0.6, "read_after": 0.2}
                and link["default"] is True
            )
            set_app_urls(server, server.app_id, app_body("slow", receiver.url("/slow")))
            fast_app = new_app(server, app_body("fast", receiver.url("/fast")))
            yield Second(server, receiver, responder, fast_app, link["id"])
        finally:
            server.stop()


def test_statuses_never_go_backwards_when_read_comes_before_delivered(second: Second) -> None:
    server = second.server
    message_uuid = send(
        server, messenger("psid-ooo", client_ref="ooo", webhook_url=second.receiver.url("/ooo"))
    )
    wait_statuses(second.receiver, message_uuid, 2)
    # The late `delivered` (at +0.6 s) is recorded in the history...
    stored = wait_read(
        server, message_uuid, lambda m: [e["status"] for e in m["history"]][-1] == "delivered"
    )
    time.sleep(0.3)
    stored = read(server, message_uuid)
    assert [e["status"] for e in stored["history"]] == [
        "accepted",
        "submitted",
        "read",
        "delivered",
    ]
    # ...but the message stays `read`, and no `delivered` webhook is sent.
    assert stored["status"] == "read"
    hooks = hooks_for(second.receiver.snapshot(), message_uuid)
    assert statuses(hooks) == ["submitted", "read"]
    for hook in hooks:
        check_v1(
            hook.json,
            message_uuid=message_uuid,
            to="psid-ooo",
            sender="page-42",
            channel="messenger",
            status=hook.json["status"],
            link={"id": second.messenger_link, "kind": "sandbox"},
            client_ref="ooo",
        )
    assert [(w["status"], w["state"]) for w in stored["webhooks"]] == [
        ("submitted", "delivered"),
        ("read", "delivered"),
    ]
    submitted, read_at, delivered = (epoch(e["timestamp"]) for e in stored["history"][1:])
    assert read_at - submitted == pytest.approx(0.2, abs=0.005)
    assert delivered - submitted == pytest.approx(0.6, abs=0.005)
    # Viber has no link on this account: the server's sandbox defaults, in order.
    viber_uuid = send(server, viber("vuser-inorder", webhook_url=second.receiver.url("/ooo")))
    assert statuses(wait_statuses(second.receiver, viber_uuid, 3)) == [
        "submitted",
        "delivered",
        "read",
    ]


def test_retryable_failures_up_to_the_limit_make_the_message_undeliverable(second: Second) -> None:
    # ...0004 fails retryably on its first two tries; this server gives up after two.
    path = "/limit"
    message_uuid = send(
        second.server,
        sms("447700900004", client_ref="limit", webhook_url=second.receiver.url(path)),
    )
    hooks = wait_statuses(second.receiver, message_uuid, 1)
    time.sleep(0.3)
    hooks = hooks_for(second.receiver.snapshot(), message_uuid)
    assert statuses(hooks) == ["undeliverable"]
    check_v1(
        hooks[0].json,
        message_uuid=message_uuid,
        to="447700900004",
        sender="Acme",
        channel="sms",
        status="undeliverable",
        link=built_in("sms"),  # the link whose last try failed
        client_ref="limit",
        error_code=1331,
    )
    stored = read(second.server, message_uuid)
    assert stored["status"] == "undeliverable"
    assert [(e["status"], e.get("error", {}).get("code")) for e in stored["history"]] == [
        ("accepted", None),
        ("undeliverable", 1331),
    ]
    log = second.server.data_dir / "sandbox-sends.log"
    assert sandbox_attempts(log, message_uuid) == [1, 2]


def test_a_slow_receiver_does_not_hold_up_other_applications(second: Second) -> None:
    server, responder = second.server, second.responder
    fast_id, fast_key = second.fast_app
    # Tokens made up front: loading an RSA key takes tens of milliseconds.
    slow_tokens = [server.jwt() for _ in range(10)]
    fast_tokens = [server.jwt(private_key=fast_key, application_id=fast_id) for _ in range(3)]
    with server.client() as client:

        def post(token: str) -> str:
            response = client.post(
                "/v1/messages", json=sms(), headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status_code == 202, response.text
            return response.json()["message_uuid"]

        for token in slow_tokens:
            post(token)
        started = time.time()
        fast = [post(token) for token in fast_tokens]

    def fast_done(hooks: list[Hook]) -> bool:
        return all(len(hooks_for([h for h in hooks if h.path == "/fast"], u)) >= 2 for u in fast)

    second.receiver.wait_for(fast_done, timeout=10)
    fast_elapsed = time.time() - started
    slow_started = responder.count("/slow")
    slow_finished = [h for h in second.receiver.snapshot() if h.path == "/slow"]
    assert fast_elapsed < SLOW_DELAY - 0.5, fast_elapsed
    # The slow application has at most MISSIVE_WEBHOOK_PER_TARGET (2) requests in flight,
    # and none has finished yet: the fast one did not wait for them.
    assert 1 <= slow_started <= 2
    assert slow_finished == []
    for message_uuid in fast:
        assert statuses(hooks_for(second.receiver.snapshot(), message_uuid)) == [
            "submitted",
            "delivered",
        ]
    # And the bound holds while the fast ones flow.
    time.sleep(0.3)
    assert responder.count("/slow") <= 2


# -- 8. SIGTERM drains; a restart finishes the rest ---------------------------------------------


SHUTDOWN_TIMEOUT = 3.0
DRAIN_DELIVERED_AFTER = 1.0
DRAIN_MESSAGES = 150


@dataclass
class Drained:
    data_dir: Path
    receiver: WebhookReceiver
    uuids: list[str]
    returncode: int | None
    elapsed: float
    before_restart: list[Hook]
    restarted: Server


@pytest.fixture(scope="module")
def drained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drained]:
    receiver, _ = receiver_with_responder()
    data_dir = tmp_path_factory.mktemp("drain")
    env = {
        **FAST,
        "MISSIVE_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
        "MISSIVE_SANDBOX_DELIVERED_AFTER": str(DRAIN_DELIVERED_AFTER),
    }
    with receiver:
        server = provisioned_server(data_dir, env=env)
        restarted = None
        try:
            # Eight clients keep sending; SIGTERM lands while messages are being accepted
            # and dispatched. Only what got a 202 counts.
            uuids: list[str] = []
            lock, stop = threading.Lock(), threading.Event()

            def body(worker: int, i: int) -> dict:
                return sms(client_ref=f"drain-{worker}-{i}", webhook_url=receiver.url("/status"))

            def client_loop(worker: int) -> None:
                with httpx.Client(base_url=server.url, timeout=5) as client:
                    for i in range(100):
                        if stop.is_set():
                            return
                        try:
                            response = client.post(
                                "/v1/messages", json=body(worker, i), auth=server.basic
                            )
                        except httpx.HTTPError:
                            return
                        if response.status_code == 202:
                            with lock:
                                uuids.append(response.json()["message_uuid"])

            clients = [threading.Thread(target=client_loop, args=(n,)) for n in range(8)]
            for thread in clients:
                thread.start()
            deadline = time.monotonic() + 20
            while len(uuids) < DRAIN_MESSAGES and time.monotonic() < deadline:
                time.sleep(0.005)
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            try:
                returncode: int | None = server.process.wait(timeout=SHUTDOWN_TIMEOUT + 5)
            except subprocess.TimeoutExpired:
                returncode = None
            elapsed = time.monotonic() - started
            stop.set()
            for thread in clients:
                thread.join()
            server.stop()
            before = receiver.snapshot()
            restarted = start_server(data_dir, env=env)
            restarted.api_key, restarted.api_secret = server.api_key, server.api_secret
            yield Drained(data_dir, receiver, uuids, returncode, elapsed, before, restarted)
        finally:
            server.stop()
            if restarted is not None:
                restarted.stop()


def test_sigterm_stops_within_the_shutdown_timeout_and_a_restart_loses_nothing(
    drained: Drained,
) -> None:
    assert drained.returncode is not None, "still running after SIGTERM"
    assert drained.elapsed < SHUTDOWN_TIMEOUT + 1, drained.elapsed
    # SIGTERM came well before any `delivered` was due: those are durable timers.
    delivered_before = {
        h.json["message_uuid"] for h in drained.before_restart if h.json["status"] == "delivered"
    }
    assert len(delivered_before) < len(drained.uuids)
    wanted = {(u, s) for u in drained.uuids for s in ("submitted", "delivered")}

    def complete(hooks: list[Hook]) -> bool:
        return wanted <= {
            (h.json["message_uuid"], h.json["status"]) for h in hooks if 200 <= h.answered < 300
        }

    drained.receiver.wait_for(complete, timeout=40)
    time.sleep(0.3)
    hooks = drained.receiver.snapshot(accepted_only=True)
    seen = [(h.json["message_uuid"], h.json["status"]) for h in hooks]
    assert set(seen) == wanted
    duplicates = len(seen) - len(set(seen))
    print(
        f"drain: {len(drained.uuids)} accepted; exit {drained.returncode} after {drained.elapsed:.2f}s; "
        f"{len(drained.before_restart)} webhooks before restart; "
        f"{duplicates} duplicate webhooks of {len(seen)}"
    )
    assert duplicates <= len(wanted) // 100 + 1
    with drained.restarted.client() as client:
        final = {
            u: client.get(f"/v1/messages/{u}", auth=drained.restarted.basic).json()["status"]
            for u in drained.uuids
        }
    assert final == {u: "delivered" for u in drained.uuids}


def test_sigterm_exit_status_is_zero(drained: Drained) -> None:
    assert drained.returncode == 0

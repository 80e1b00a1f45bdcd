"""Failover workflows end to end: the Workflows API and the v1 `failover` array.

Real servers with the sandbox channel's magic recipients (…0001 rejected at once, …0002
undeliverable after submitted, …0003 submitted and nothing more) and a real webhook
receiver; the expiry tests run the app in this process with a clock the test moves.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from missive.api.app import create_app
from tests.fakes.webhook_receiver import Hook, WebhookReceiver
from tests.harness import (
    Server,
    free_port,
    missive,
    missive_json,
    provisioned_server,
    settings_for,
    start_server,
)

FAST = {
    "MISSIVE_SANDBOX_DELIVERED_AFTER": "0.2",
    "MISSIVE_SANDBOX_READ_AFTER": "0.4",
    "MISSIVE_DISPATCH_BACKOFF_BASE": "0.05",
    "MISSIVE_WEBHOOK_BACKOFF_BASE": "0.05",
    "MISSIVE_POLL_INTERVAL": "0.05",
}
OK, REJECTED, UNDELIVERABLE, SILENT = "447700900100", "447700900001", "447700900002", "447700900003"


def sms(to: str, text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"channel": "sms", "message_type": "text", "to": to, "from": "Acme", "text": text, **extra}


def beta_sms(to: str, failover: dict | None = None, text: str = "hello") -> dict[str, Any]:
    step: dict[str, Any] = {
        "from": {"type": "sms", "number": "Acme"},
        "to": {"type": "sms", "number": to},
        "message": {"content": {"type": "text", "text": text}},
    }
    if failover is not None:
        step["failover"] = failover
    return step


def rule(expiry: int = 600, condition: str = "delivered") -> dict[str, Any]:
    return {"expiry_time": expiry, "condition_status": condition}


def dispatch(base_url: str, auth: tuple[str, str], *steps: dict, path: str = "/v0.1/dispatch") -> str:
    response = httpx.post(base_url + path, json={"template": "failover", "workflow": list(steps)}, auth=auth)
    assert response.status_code == 202, response.text
    assert set(response.json()) == {"dispatch_uuid"}
    return response.json()["dispatch_uuid"]


def workflow(base_url: str, auth: tuple[str, str], workflow_id: str) -> dict[str, Any]:
    response = httpx.get(f"{base_url}/v1/workflows/{workflow_id}", auth=auth)
    assert response.status_code == 200, response.text
    return response.json()


def reports(receiver: WebhookReceiver, workflow_id: str) -> list[Hook]:
    return [h for h in receiver.snapshot(accepted_only=True) if h.json.get("dispatch_uuid") == workflow_id and "template" in h.json]


def wait_report(receiver: WebhookReceiver, workflow_id: str, timeout: float = 20.0) -> dict[str, Any]:
    receiver.wait_for(lambda _: bool(reports(receiver, workflow_id)), timeout)
    return reports(receiver, workflow_id)[0].json


def step_hooks(receiver: WebhookReceiver, message_uuid: str) -> list[dict[str, Any]]:
    hooks = [h.json for h in receiver.snapshot(accepted_only=True) if h.json.get("message_uuid") == message_uuid]
    return sorted(hooks, key=lambda h: h["timestamp"])


# -- validation ----------------------------------------------------------------------------


def invalid(server: Server, body: Any, path: str = "/v0.1/dispatch") -> set[str]:
    with server.client() as client:
        response = client.post(path, json=body, auth=server.basic)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return {p["name"] for p in response.json()["invalid_parameters"]}


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({"template": "failover", "workflow": [beta_sms(OK), beta_sms(OK)]}, {"workflow[0].failover"}),
        ({"template": "failover", "workflow": [beta_sms(OK, rule(14)), beta_sms(OK)]}, {"workflow[0].failover.expiry_time"}),
        ({"template": "failover", "workflow": [beta_sms(OK, rule(86401)), beta_sms(OK)]}, {"workflow[0].failover.expiry_time"}),
        ({"template": "failover", "workflow": [beta_sms(OK, rule(60, "seen")), beta_sms(OK)]}, {"workflow[0].failover.condition_status"}),
        ({"template": "failover", "workflow": [beta_sms(OK, {"expiry_time": "60", "condition_status": "read"}), beta_sms(OK)]}, {"workflow[0].failover.expiry_time"}),
        ({"template": "failover", "workflow": [beta_sms(OK, {"condition_status": "read"}), beta_sms(OK)]}, {"workflow[0].failover.expiry_time"}),
        ({"template": "failover", "workflow": [beta_sms(OK, rule()), beta_sms(OK, rule())]}, {"workflow[1].failover"}),
        ({"template": "failover", "workflow": [beta_sms(OK, rule()), beta_sms(OK, text="")]}, {"workflow[1].message.content.text"}),
        ({"template": "failover", "workflow": [beta_sms(OK, rule()), "sms"]}, {"workflow[1]"}),
        ({"template": "failover", "workflow": [beta_sms(OK)]}, {"workflow"}),
        ({"template": "failover", "workflow": {}}, {"workflow"}),
        ({"template": "fallback", "workflow": [beta_sms(OK, rule()), beta_sms(OK)]}, {"template"}),
        ({"template": "failover", "workflow": [beta_sms(OK, rule())] * 10 + [beta_sms(OK)]}, {"workflow"}),
        ([], {"body"}),
    ],
    ids=["no-failover", "expiry-low", "expiry-high", "condition", "expiry-string", "expiry-missing",
         "failover-on-last", "bad-step", "step-not-object", "one-step", "not-a-list", "template", "too-many", "array"],
)
def test_dispatch_validation(server: Server, body: Any, names: set[str]) -> None:
    assert invalid(server, body) == names


@pytest.mark.parametrize(
    ("body", "names"),
    [
        (sms(OK, failover=[sms("not-a-number")]), {"failover[0].to"}),
        (sms(OK, failover=[]), {"failover"}),
        (sms(OK, failover=[sms(OK, failover=[sms(OK)])]), {"failover[0].failover"}),
        (sms(OK, text="", failover=[sms(OK), {"channel": "fax"}]), {"text", "failover[1].channel"}),
    ],
    ids=["bad-fallback", "empty", "nested", "both-sides"],
)
def test_v1_failover_validation(server: Server, body: dict, names: set[str]) -> None:
    assert invalid(server, body, "/v1/messages") == names


def test_accepted_workflows_read_back(server: Server) -> None:
    """With dispatch off: the workflow and its first message are stored at 202."""
    with server.client() as client:
        response = client.post("/v1/messages", json=sms(OK, failover=[sms(REJECTED)]), auth=server.basic)
        assert response.status_code == 202, response.text
        accepted = response.json()
        assert set(accepted) == {"message_uuid", "workflow_id"}
        message = client.get(f"/v1/messages/{accepted['message_uuid']}", auth=server.basic).json()
        assert message["workflow_id"] == accepted["workflow_id"]
        found = client.get(f"/v1/workflows/{accepted['workflow_id']}", auth=server.basic).json()
        assert found["status"] == "running" and found["current_step"] == 0
        assert [s["status"] for s in found["steps"]] == ["accepted", "not_sent"]
        assert found["steps"][0]["message_uuid"] == accepted["message_uuid"]
        dispatch_id = dispatch(server.url, server.basic, beta_sms(OK, rule()), beta_sms(OK), path="/beta/workflows")
        assert client.get(f"/v1/workflows/{dispatch_id}", auth=server.basic).json()["steps"][0]["failover"] == rule()
        assert client.get(f"/v1/workflows/{dispatch_id}", headers={"authorization": "Bearer nope"}).status_code == 401
        unknown = client.get("/v1/workflows/00000000-0000-0000-0000-000000000000", auth=server.basic)
        assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/problem+json"


# -- the engine, through a real server --------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, WebhookReceiver]]:
    data_dir = tmp_path_factory.mktemp("workflows")
    with WebhookReceiver() as receiver:
        server = provisioned_server(data_dir, env=FAST)
        missive(data_dir, "account", "update", "--api-key", server.api_key, "--status-url", receiver.url("/status"))
        try:
            yield server, receiver
        finally:
            server.stop()


def test_rejected_fails_over_at_once(live: tuple[Server, WebhookReceiver]) -> None:
    server, receiver = live
    workflow_id = dispatch(server.url, server.basic, beta_sms(REJECTED, rule(86400)), beta_sms(OK))
    report = wait_report(receiver, workflow_id)
    found = workflow(server.url, server.basic, workflow_id)
    first, second = found["steps"]
    assert found["status"] == "completed" == report["status"]
    assert first["status"] == "rejected" and first["left"]["reason"] == "rejected"
    assert second["status"] in ("delivered", "read") and second["completed_by"] == "delivered"
    assert report["template"] == "failover"
    assert [(m["message_uuid"], m["channel"]) for m in report["_links"]["messages"]] == [
        (first["message_uuid"], "sms"), (second["message_uuid"], "sms")]
    # Each step's status webhooks carry the workflow (beta shape: _links.workflow).
    for step in (first, second):
        hooks = step_hooks(receiver, step["message_uuid"])
        assert hooks and all(h["_links"]["workflow"]["dispatch_uuid"] == workflow_id for h in hooks)
    assert [h["status"] for h in step_hooks(receiver, first["message_uuid"])] == ["rejected"]


def test_success_on_the_first_step_sends_nothing_more(live: tuple[Server, WebhookReceiver]) -> None:
    server, receiver = live
    viber = {"from": {"type": "viber_service_msg", "id": "svc-1"}, "to": {"type": "viber_service_msg", "number": OK},
             "message": {"content": {"type": "text", "text": "hello"}}, "failover": rule(600, "read")}
    workflow_id = dispatch(server.url, server.basic, viber, beta_sms("447700900101"))
    report = wait_report(receiver, workflow_id)
    time.sleep(0.5)
    found = workflow(server.url, server.basic, workflow_id)
    assert report["status"] == found["status"] == "completed"
    assert found["steps"][0]["completed_by"] == "read"
    assert found["steps"][1]["status"] == "not_sent" and "message_uuid" not in found["steps"][1]
    assert len(report["_links"]["messages"]) == 1
    listed = httpx.get(f"{server.url}/v1/messages", params={"to": "447700900101"}, auth=server.basic).json()
    assert listed["_embedded"]["messages"] == []
    assert len(reports(receiver, workflow_id)) == 1


def test_three_steps_ending_in_error(live: tuple[Server, WebhookReceiver]) -> None:
    server, receiver = live
    workflow_id = dispatch(
        server.url, server.basic, beta_sms(REJECTED, rule()), beta_sms(UNDELIVERABLE, rule()), beta_sms(REJECTED)
    )
    report = wait_report(receiver, workflow_id)
    found = workflow(server.url, server.basic, workflow_id)
    assert report["status"] == found["status"] == "error"
    assert [s["left"]["reason"] for s in found["steps"]] == ["rejected", "undeliverable", "rejected"]
    assert [m["status"] for m in report["_links"]["messages"]] == ["rejected", "undeliverable", "rejected"]


def test_v1_failover_array(live: tuple[Server, WebhookReceiver]) -> None:
    """v1 all the way: each step's v1 status webhooks carry the workflow, and no Dispatch
    API report follows (issue 21.3)."""
    server, receiver = live
    response = httpx.post(f"{server.url}/v1/messages", auth=server.basic,
                          json=sms(UNDELIVERABLE, client_ref="wf", failover=[sms(OK, text="second")]))
    assert response.status_code == 202, response.text
    accepted = response.json()
    workflow_id = accepted["workflow_id"]

    def ended(_: object) -> bool:
        steps = workflow(server.url, server.basic, workflow_id)["steps"]
        return bool(steps[1].get("message_uuid")) and "delivered" in [h["status"] for h in step_hooks(receiver, steps[1]["message_uuid"])]

    receiver.wait_for(ended, 20)
    found = workflow(server.url, server.basic, workflow_id)
    assert found["status"] == "completed"
    first, second = found["steps"]
    assert first["message_uuid"] == accepted["message_uuid"]
    assert first["left"]["reason"] == "undeliverable"
    hooks = step_hooks(receiver, first["message_uuid"])
    assert [h["status"] for h in hooks] == ["submitted", "undeliverable"]
    assert all(h["workflow"] == {"workflow_id": workflow_id} and h["channel"] == "sms" for h in hooks)
    assert set(hooks[1]["error"]) == {"type", "title", "detail", "instance"}
    second_hooks = step_hooks(receiver, second["message_uuid"])
    assert [h["status"] for h in second_hooks] == ["submitted", "delivered"]
    assert all(h["workflow"] == {"workflow_id": workflow_id} and h["to"] == OK for h in second_hooks)
    time.sleep(0.5)  # a report would have been written with the move that completed it
    assert reports(receiver, workflow_id) == []


def test_a_killed_server_keeps_a_pending_expiry(tmp_path: Path) -> None:
    """SIGKILL while step 0 waits for its 15 s expiry; after a restart step 1 is sent once."""
    with WebhookReceiver() as receiver:
        server = provisioned_server(tmp_path, env=FAST)
        missive(tmp_path, "account", "update", "--api-key", server.api_key, "--status-url", receiver.url("/status"))
        try:
            accepted_at = time.monotonic()
            workflow_id = dispatch(server.url, server.basic, beta_sms(SILENT, rule(15)), beta_sms("447700900102"))
            first = workflow(server.url, server.basic, workflow_id)["steps"][0]["message_uuid"]
            receiver.wait_for(lambda _: [h["status"] for h in step_hooks(receiver, first)] == ["submitted"], 10)
            server.process.send_signal(signal.SIGKILL)
            server.process.wait()
            auth = server.basic
            server = start_server(tmp_path, env=FAST)
            report = wait_report(receiver, workflow_id, timeout=40)
            assert time.monotonic() - accepted_at >= 15
            time.sleep(0.5)
            found = workflow(server.url, auth, workflow_id)
            assert found["steps"][0]["left"]["reason"] == "expired"
            assert report["status"] == "completed"
            listed = httpx.get(f"{server.url}/v1/messages", params={"to": "447700900102"}, auth=auth).json()
            assert len(listed["_embedded"]["messages"]) == 1
            assert len(reports(receiver, workflow_id)) == 1
        finally:
            server.stop()


# -- expiry with an injected clock ------------------------------------------------------------


class MovableClock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class InProcess:
    """The app served in this process (uvicorn in a thread, lifespan on) with a clock the test moves."""

    def __init__(self, data_dir: Path, clock: Callable[[], float], **settings: Any) -> None:
        self.account = missive_json(data_dir, "account", "create")
        self.auth = (self.account["api_key"], self.account["api_secret"])
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = settings_for(data_dir, poll_interval=0.05, webhook_backoff_base=0.05, **settings)
        self._server = uvicorn.Server(uvicorn.Config(create_app(config, clock), host="127.0.0.1", port=port,
                                                     log_level="warning", lifespan="on"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> InProcess:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            assert time.monotonic() < deadline, "the in-process server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)


def test_expiry_fails_over_with_an_injected_clock(tmp_path: Path) -> None:
    clock = MovableClock()
    with WebhookReceiver() as receiver, InProcess(tmp_path, clock, sandbox_delivered_after=0.2, sandbox_read_after=0.4) as app:
        missive(tmp_path, "account", "update", "--api-key", app.account["api_key"], "--status-url", receiver.url("/status"))
        workflow_id = dispatch(app.url, app.auth, beta_sms(SILENT, rule(600)), beta_sms(OK))
        first = workflow(app.url, app.auth, workflow_id)["steps"][0]["message_uuid"]
        receiver.wait_for(lambda _: [h["status"] for h in step_hooks(receiver, first)] == ["submitted"], 10)
        time.sleep(0.5)
        assert workflow(app.url, app.auth, workflow_id)["current_step"] == 0  # 600 s have not passed
        clock.offset = 601
        report = wait_report(receiver, workflow_id)
        found = workflow(app.url, app.auth, workflow_id)
        assert found["steps"][0]["left"]["reason"] == "expired"
        assert report["status"] == "completed" and found["steps"][1]["completed_by"] == "delivered"


def test_a_condition_met_as_the_step_expires_is_decided_once(tmp_path: Path) -> None:
    """Delivered and expiry due in the same instant: one outcome, one final report."""
    clock = MovableClock()
    with WebhookReceiver() as receiver, InProcess(tmp_path, clock, sandbox_delivered_after=15.0, sandbox_read_after=10_000) as app:
        missive(tmp_path, "account", "update", "--api-key", app.account["api_key"], "--status-url", receiver.url("/status"))
        ids = [dispatch(app.url, app.auth, beta_sms(OK, rule(15)), beta_sms("447700900103")) for _ in range(5)]
        firsts = [workflow(app.url, app.auth, w)["steps"][0]["message_uuid"] for w in ids]
        receiver.wait_for(lambda _: all(step_hooks(receiver, m) for m in firsts), 10)
        clock.offset = 30
        time.sleep(0.5)
        # Steps started by an expiry are delivered 15 (moved) seconds later.
        deadline = time.monotonic() + 20
        while not all(reports(receiver, w) for w in ids):
            assert time.monotonic() < deadline, "not every workflow reported"
            clock.offset += 20
            time.sleep(0.3)
        time.sleep(0.5)
        for workflow_id in ids:
            found = workflow(app.url, app.auth, workflow_id)
            assert len(reports(receiver, workflow_id)) == 1
            first, second = found["steps"]
            if "left" in first:
                assert first["left"]["reason"] == "expired" and second["status"] != "not_sent"
            else:
                assert first["completed_by"] == "delivered" and second["status"] == "not_sent"

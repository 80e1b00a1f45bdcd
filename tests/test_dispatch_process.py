"""`missive dispatch` alone beside an API-only `missive serve`, sharing one database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.webhook_receiver import WebhookReceiver
from tests.harness import (
    PRIVATE_URLS_ALLOWED,
    database_env,
    free_port,
    missive,
    missive_json,
    start_server,
)

METRICS_TOKEN = "dispatch-scrape-1b2c"
FAST = {
    "MISSIVE_SANDBOX_DELIVERED_AFTER": "0.1",
    "MISSIVE_POLL_INTERVAL": "0.05",
    "MISSIVE_WEBHOOK_BACKOFF_BASE": "0.05",
}


def test_a_separate_dispatcher_delivers_and_stops_cleanly(tmp_path: Path) -> None:
    account = missive_json(tmp_path, "account", "create")
    with WebhookReceiver() as receiver:
        assert missive(tmp_path, "account", "update", "--api-key", account["api_key"],
                       "--status-url", receiver.url("/status")).returncode == 0
        api = start_server(tmp_path, env={**FAST, "MISSIVE_DISPATCH_IN_SERVE": "false"})
        ops_port = free_port()
        dispatcher = subprocess.Popen(
            [sys.executable, "-m", "missive", "dispatch", "--metrics-port", str(ops_port)],
            env={**os.environ, "MISSIVE_DATA_DIR": str(tmp_path), **database_env(tmp_path), **PRIVATE_URLS_ALLOWED, **FAST,
                 "MISSIVE_METRICS_TOKEN": METRICS_TOKEN},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            uuids = []
            for i in range(20):
                body = {"channel": "sms", "message_type": "text", "to": "447700900000", "from": "Acme", "text": f"m{i}"}
                response = httpx.post(f"{api.url}/v1/messages", json=body, auth=(account["api_key"], account["api_secret"]))
                assert response.status_code == 202
                uuids.append(response.json()["message_uuid"])
            hooks = receiver.wait_for(
                lambda hs: {(h.json["message_uuid"], h.json["status"]) for h in hs}
                >= {(u, s) for u in uuids for s in ("submitted", "delivered")}
            )
            assert all(h.path == "/status" for h in hooks)
            # The dispatcher's own counters, which no API process has, on its own port.
            ops = f"http://127.0.0.1:{ops_port}"
            assert httpx.get(f"{ops}/health").json()["status"] == "ok"
            assert httpx.get(f"{ops}/ready").json()["status"] == "ready"
            assert httpx.get(f"{ops}/metrics").status_code == 401
            scraped = httpx.get(f"{ops}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
            assert scraped.status_code == 200, scraped.text
            found = {(s.name, tuple(sorted(s.labels.items()))): s.value
                     for family in text_string_to_metric_families(scraped.text) for s in family.samples}
            assert found[("missive_messages_sent_total", (("channel", "sms"), ("result", "submitted")))] == 20
            assert found[("missive_send_latency_seconds_count", (("channel", "sms"),))] == 20
            assert found[("missive_webhook_attempts_total", (("kind", "status"),))] >= 40
            assert found[("missive_queue_depth", (("queue", "outbox"),))] == 0
            dispatcher.send_signal(signal.SIGTERM)
            output, _ = dispatcher.communicate(timeout=30)
            assert dispatcher.returncode == 0, output
            # The API process never dispatched: it has no dispatcher to stop.
            statuses = {httpx.get(f"{api.url}/v1/messages/{u}", auth=(account["api_key"], account["api_secret"])).json()["status"] for u in uuids}
            assert statuses == {"delivered"}
        finally:
            if dispatcher.poll() is None:
                dispatcher.kill()
            api.stop()


def test_a_full_dispatcher_claims_again_as_soon_as_it_has_room(tmp_path: Path) -> None:
    """A dispatcher holding as many messages as it may (here 4) claims more once half of
    them are recorded, not at its next poll (here every 3 s): 40 queued messages are all
    sent within seconds, where waiting for the poll would take ten polls, 30 s."""
    account = missive_json(tmp_path, "account", "create")
    slow_poll = {**FAST, "MISSIVE_POLL_INTERVAL": "3", "MISSIVE_DISPATCH_MAX_IN_FLIGHT": "4", "MISSIVE_CLAIM_LINGER": "0",
                 "MISSIVE_SANDBOX_DELIVERED_AFTER": "0"}
    api = start_server(tmp_path, env={**slow_poll, "MISSIVE_DISPATCH_IN_SERVE": "false"})
    auth = (account["api_key"], account["api_secret"])
    dispatcher = None
    try:
        uuids = []
        for i in range(40):
            body = {"channel": "sms", "message_type": "text", "to": "447700900000", "from": "Acme", "text": f"m{i}"}
            response = httpx.post(f"{api.url}/v1/messages", json=body, auth=auth)
            assert response.status_code == 202
            uuids.append(response.json()["message_uuid"])
        dispatcher = subprocess.Popen(
            [sys.executable, "-m", "missive", "dispatch"],
            env={**os.environ, "MISSIVE_DATA_DIR": str(tmp_path), **database_env(tmp_path), **slow_poll},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        waiting = set(uuids)
        while waiting and time.monotonic() < deadline:
            waiting = {u for u in waiting
                       if httpx.get(f"{api.url}/v1/messages/{u}", auth=auth).json()["status"] == "accepted"}
            time.sleep(0.2)
        assert not waiting, f"{len(waiting)} of 40 still accepted after 20 s"
    finally:
        if dispatcher is not None:
            dispatcher.terminate()
            dispatcher.wait(timeout=30)
        api.stop()


def _children(pid: int) -> list[int]:
    """The processes `pid` started that run `missive dispatch`."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except FileNotFoundError:
                continue
            if b"dispatch" in command:
                found.append(int(child))
    return found


def _one_child(pid: int, other_than: int | None = None) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        children = [c for c in _children(pid) if c != other_than]
        if children:
            assert len(children) == 1, children
            return children[0]
        time.sleep(0.1)
    raise AssertionError("no dispatcher process")


def test_serve_with_a_dispatch_process_wakes_it_restarts_it_and_stops_it(tmp_path: Path) -> None:
    """`serve --dispatch-process`: the dispatcher is a child of the API process, woken by
    each accept (here with a 5 s poll, every message goes out within a second or two),
    started again when it dies, and stopped with the API."""
    account = missive_json(tmp_path, "account", "create")
    auth = (account["api_key"], account["api_secret"])
    with WebhookReceiver() as receiver:
        assert missive(tmp_path, "account", "update", "--api-key", account["api_key"],
                       "--status-url", receiver.url("/status")).returncode == 0
        api = start_server(tmp_path, "--dispatch-process", env={**FAST, "MISSIVE_POLL_INTERVAL": "5"})
        try:
            first = _one_child(api.process.pid)

            def send_and_see_submitted(i: int) -> None:
                body = {"channel": "sms", "message_type": "text", "to": "447700900000", "from": "Acme", "text": f"m{i}"}
                response = httpx.post(f"{api.url}/v1/messages", json=body, auth=auth)
                assert response.status_code == 202
                uuid = response.json()["message_uuid"]
                sent = time.monotonic()
                receiver.wait_for(lambda hs: any(h.json["message_uuid"] == uuid and h.json["status"] == "submitted"
                                                 for h in hs), timeout=10)
                assert time.monotonic() - sent < 2.0, "not woken: it waited for its poll"

            time.sleep(1.5)  # its first claim done: the next ones are woken
            for i in range(3):
                send_and_see_submitted(i)
                time.sleep(0.7)
            os.kill(first, signal.SIGKILL)
            second = _one_child(api.process.pid, other_than=first)
            time.sleep(2.5)
            send_and_see_submitted(3)
        finally:
            api.stop()
        assert api.process.returncode == 0
        assert not Path(f"/proc/{second}").exists(), "the dispatcher process outlived the API's"


def test_dispatch_process_with_several_workers_is_refused_with_what_to_do(tmp_path: Path) -> None:
    done = missive(tmp_path, "serve", "--dispatch-process", "--workers", "2")
    assert done.returncode == 2
    assert "run `missive dispatch` beside --workers" in done.stderr
    done = missive(tmp_path, "serve", "--workers", "2", env={"MISSIVE_DISPATCH_PROCESS": "true"})
    assert done.returncode == 2

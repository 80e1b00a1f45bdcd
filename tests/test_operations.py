"""Operations: /health, /ready, /metrics, JSON logs with trace ids and no secrets, and
`missive serve --workers N`. Real servers as subprocesses; the only fakes are the webhook
receiver and the SMSC at the network edge.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
from prometheus_client.parser import text_string_to_metric_families

from missive.observability import context
from missive.observability.logs import make_handler
from tests.fakes.fake_smsc import FakeSMSC
from tests.fakes.webhook_receiver import Hook, WebhookReceiver
from tests.harness import (
    Server,
    missive_json,
    query,
    start_server,
    sync_engine,
)

FAST = {
    "MISSIVE_SANDBOX_DELIVERED_AFTER": "0.1",
    "MISSIVE_SANDBOX_READ_AFTER": "0.2",
    "MISSIVE_DISPATCH_BACKOFF_BASE": "0.05",
    "MISSIVE_WEBHOOK_BACKOFF_BASE": "0.05",
    "MISSIVE_POLL_INTERVAL": "0.05",
    "MISSIVE_SESSIONS_INTERVAL": "0.3",
}
METRICS_TOKEN = "scrape-me-7f3a"
SMPP_PASSWORD = "Zq7pw0rd"
PROBLEM_KEYS = {"type", "title", "detail", "instance"}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """`check()` once it returns something true (AssertionError after the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check}")
        time.sleep(0.05)


def log_lines(server: Server) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]


def execute(data_dir: Path, sql: str) -> None:
    engine = sync_engine(data_dir)
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(sql))
    finally:
        engine.dispose()


# -- the shared server (dispatch off) ----------------------------------------------------------


def test_health_and_ready_answer_without_credentials(server: Server) -> None:
    health = httpx.get(f"{server.url}/health")
    assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["pid"] == server.process.pid
    ready = httpx.get(f"{server.url}/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    documented = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert {"/health", "/ready", "/metrics"} <= set(documented)
    assert documented["/ready"]["get"]["security"] == []


def test_queue_gauges_count_due_rows_from_the_database(server: Server) -> None:
    body = {"channel": "sms", "message_type": "text", "to": "447700900777", "from": "Acme", "text": "waits"}
    assert httpx.post(f"{server.url}/v1/messages", json=body, auth=server.basic).status_code == 202
    time.sleep(0.05)
    found = samples(httpx.get(f"{server.url}/metrics").text)
    # Nothing dispatches on this server: the message stays due in the outbox.
    assert value(found, "missive_queue_depth", queue="outbox") >= 1
    assert value(found, "missive_queue_oldest_age_seconds", queue="outbox") > 0
    assert ("missive_queue_depth", (("queue", "webhooks"),)) in found
    assert ("missive_queue_depth", (("queue", "timers"),)) in found


# -- a dispatching server with a sandbox link, an SMPP link and a webhook receiver ---------------


@dataclass
class Live:
    server: Server
    receiver: WebhookReceiver
    sandbox_link: str
    sms_link: str

    def metrics(self) -> Samples:
        response = httpx.get(f"{self.server.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain")
        return samples(response.text)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data_dir = tmp_path_factory.mktemp("operations")
    with FakeSMSC() as smsc, WebhookReceiver() as receiver:
        # The first status webhook fails once: a webhook failure to count.
        calls: list[Hook] = []
        receiver.respond = lambda hook: (calls.append(hook), 503 if len(calls) == 1 else 200)[1]
        account = missive_json(data_dir, "account", "create")
        sms = missive_json(data_dir, "channel", "add", "sms", "--host", "127.0.0.1", "--port", str(smsc.port),
                           "--system-id", "missive", "--password", SMPP_PASSWORD, "--binds", "2")
        server = start_server(data_dir, env={**FAST, "MISSIVE_METRICS_TOKEN": METRICS_TOKEN})
        server.api_key, server.api_secret = account["api_key"], account["api_secret"]
        server.signature_secret = account["signature_secret"]
        try:
            sandbox = httpx.post(f"{server.url}/v1/channels", auth=server.basic, json={
                "kind": "sandbox", "channel": "messenger", "name": "limited", "tps": 3, "default": True,
                "config": {"delivered_after": 0.1, "read_after": 0.2}})
            assert sandbox.status_code == 201, sandbox.text
            yield Live(server, receiver, sandbox.json()["id"], sms["id"])
        finally:
            server.stop()


def test_metrics_want_the_token_when_one_is_set(live: Live) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {METRICS_TOKEN}"}):
        refused = httpx.get(f"{live.server.url}/metrics", headers=headers)
        assert refused.status_code == 401 and set(refused.json()) >= PROBLEM_KEYS
        assert refused.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{live.server.url}/health").status_code == 200  # probes need no token


def test_metrics_count_a_sandbox_run(live: Live) -> None:
    recipients = ["100200300" + str(i) for i in range(5, 10)] + ["1002000001"]  # the last is rejected

    def send(to: str) -> str:
        body = {"channel": "messenger", "message_type": "text", "to": to, "from": "PAGE", "text": "hi",
                "webhook_url": live.receiver.url("/status")}
        response = httpx.post(f"{live.server.url}/v1/messages", json=body, auth=live.server.basic)
        assert response.status_code == 202, response.text
        return str(response.json()["message_uuid"])

    # Together, so that they reach the link faster than its 3 a second.
    with ThreadPoolExecutor(len(recipients)) as pool:
        uuids = list(pool.map(send, recipients))

    def statuses() -> set[tuple[str, str]]:
        return {(h.json["message_uuid"], h.json["status"]) for h in live.receiver.snapshot(accepted_only=True)}

    expected = {(u, "delivered") for u in uuids[:-1]} | {(uuids[-1], "rejected")}
    eventually(lambda: expected <= statuses())

    def counted() -> Samples | None:
        found = live.metrics()
        return found if value(found, "missive_webhook_attempts_total", kind="status") >= 1 + len(expected) + 5 else None

    found = eventually(counted)
    assert value(found, "missive_messages_accepted_total", channel="messenger") == 6
    assert value(found, "missive_messages_sent_total", channel="messenger", result="submitted") == 5
    assert value(found, "missive_messages_sent_total", channel="messenger", result="rejected") == 1
    assert value(found, "missive_message_statuses_total", channel="messenger", status="delivered") == 5
    assert value(found, "missive_message_statuses_total", channel="messenger", status="rejected") == 1
    assert value(found, "missive_send_latency_seconds_count", channel="messenger") == 6
    assert value(found, "missive_webhook_failures_total", kind="status") >= 1
    # Six sends at once on a link of 3 a second: some waited for it.
    assert value(found, "missive_rate_limit_waits_total", link=live.sandbox_link) >= 1
    assert value(found, "missive_server_processes") == 1
    assert value(found, "missive_queue_depth", queue="outbox") == 0
    # No address or content ever becomes a label value.
    labels = " ".join(v for (_, pairs) in found for _, v in pairs)
    assert not any(to in labels for to in recipients) and "PAGE" not in labels


def test_smpp_binds_up_by_link(live: Live) -> None:
    def binds() -> bool:
        up = [v for (name, labels), v in live.metrics().items()
              if name == "missive_smpp_binds_up" and dict(labels)["link"].startswith(f"sms-{live.sms_link[:8]}")]
        return sum(up) == 2

    eventually(binds)


def test_a_500_is_logged_under_its_trace_id(live: Live) -> None:
    """A request that fails inside: its error body's `instance` is the trace id of the JSON
    log lines that tell what happened (the table it reads is renamed away meanwhile)."""
    execute(live.server.data_dir, "ALTER TABLE numbers RENAME TO numbers_away")
    try:
        response = httpx.get(f"{live.server.url}/v1/numbers", auth=live.server.basic)
    finally:
        execute(live.server.data_dir, "ALTER TABLE numbers_away RENAME TO numbers")
    assert response.status_code == 500 and set(response.json()) >= PROBLEM_KEYS
    instance = response.json()["instance"]
    assert response.headers["x-request-id"] == instance
    lines = eventually(lambda: [line for line in log_lines(live.server) if line.get("trace_id") == instance])
    assert any(line["level"] == "ERROR" and line["logger"] == "missive.api" and "numbers" in line["exc"] for line in lines)
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    # Other requests have trace ids of their own.
    assert all(line.get("trace_id") != instance for line in log_lines(live.server) if line not in lines)


def test_ready_is_503_when_the_schema_is_not_current(live: Live) -> None:
    [(head,)] = query(live.server.data_dir, "SELECT version_num FROM alembic_version")
    execute(live.server.data_dir, "UPDATE alembic_version SET version_num = '0004'")
    try:
        response = httpx.get(f"{live.server.url}/ready")
    finally:
        execute(live.server.data_dir, f"UPDATE alembic_version SET version_num = '{head}'")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert set(problem) >= PROBLEM_KEYS and "0004" in problem["detail"] and head in problem["detail"]
    assert httpx.get(f"{live.server.url}/ready").status_code == 200


def test_no_secret_reaches_the_log(live: Live) -> None:
    """After the run above (sends, webhooks, SMPP binds, a 500 with its traceback)."""
    httpx.get(f"{live.server.url}/v1/messages", params={"api_key": live.server.api_key, "api_secret": live.server.api_secret})
    log = live.server.log()
    assert log_lines(live.server), log
    for secret in (live.server.api_secret, live.server.signature_secret, SMPP_PASSWORD, METRICS_TOKEN):
        assert secret not in log


# -- logs, in process ----------------------------------------------------------------------


def _logged(log_format: str, emit: Callable[[logging.Logger], None]) -> str:
    stream = io.StringIO()
    logger = logging.getLogger(f"tests.operations.{log_format}")
    logger.propagate, logger.level = False, logging.INFO
    logger.handlers = [make_handler(log_format, stream)]
    emit(logger)
    return stream.getvalue()


def test_log_lines_carry_the_trace_id_and_message_uuid_of_their_task() -> None:
    async def request(logger: logging.Logger) -> None:
        context.start_request()
        context.message_uuid.set("0b7d9c1e-message")
        logger.info("accepted")

    def emit(logger: logging.Logger) -> None:
        asyncio.run(request(logger))
        logger.info("outside")

    inside, outside = (json.loads(line) for line in _logged("json", emit).splitlines())
    assert inside["message"] == "accepted" and inside["message_uuid"] == "0b7d9c1e-message"
    assert len(inside["trace_id"]) == 32 and int(inside["trace_id"], 16) >= 0
    assert "trace_id" not in outside and "message_uuid" not in outside


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_secrets_are_masked_in_messages_extra_fields_and_tracebacks(log_format: str) -> None:
    key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
    secrets = ["hunter22", "s3cr3tValue", "Zm9vOmJhcg==", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", "pgpass99",
               "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "tok-abc-123"]

    def emit(logger: logging.Logger) -> None:
        logger.warning("bind failed: password=%s, api_secret: %s", "hunter22", "s3cr3tValue")
        logger.warning("headers %s", {"Authorization": "Basic Zm9vOmJhcg=="},
                       extra={"auth_token": "tok-abc-123", "url": "postgresql://missive:pgpass99@db/missive"})
        logger.warning("got Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln back")
        try:
            raise ValueError(f"cannot load {key}")
        except ValueError:
            logger.exception("loading the key failed for system_id missive")

    out = _logged(log_format, emit)
    for secret in secrets:
        assert secret not in out, (secret, out)
    assert "bind failed: password=***" in out and "system_id missive" in out and "ValueError" in out
    if log_format == "json":
        second = json.loads(out.splitlines()[1])
        assert second["auth_token"] == "***" and second["url"] == "postgresql://missive:***@db/missive"


# -- several workers ---------------------------------------------------------------------------


def test_serve_with_workers_shares_the_port_and_sums_the_metrics(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--workers", "2", env=FAST)
    try:
        # The first account is made once, by the parent, before the workers start.
        printed = dict(line.split(": ", 1) for line in server.log().splitlines() if line.startswith(("api_key: ", "api_secret: ")))
        auth = (printed["api_key"], printed["api_secret"])
        pids: set[int] = set()

        def both_answered() -> bool:
            with httpx.Client(timeout=30) as client:  # a new connection each time
                pids.add(client.get(f"{server.url}/health").json()["pid"])
            return len(pids) == 2

        eventually(both_answered, timeout=40)
        assert server.process.pid not in pids
        body = {"channel": "sms", "message_type": "text", "to": "447700900000", "from": "Acme", "text": "hi"}
        for _ in range(6):
            with httpx.Client(timeout=30) as client:
                assert client.post(f"{server.url}/v1/messages", json=body, auth=auth).status_code == 202
        for _ in range(4):  # whichever worker answers, it counts for all
            with httpx.Client(timeout=30) as client:
                found = samples(client.get(f"{server.url}/metrics").text)
            assert value(found, "missive_server_processes") == 2
            assert value(found, "missive_messages_accepted_total", channel="sms") == 6
        assert any((tmp_path / "metrics").glob("*.db"))
        # A worker killed outright is replaced; its live gauges are not counted any more.
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        pids.discard(victim)
        eventually(both_answered, timeout=40)
        with httpx.Client(timeout=30) as client:
            found = samples(client.get(f"{server.url}/metrics").text)
        assert value(found, "missive_server_processes") == 2
        assert value(found, "missive_messages_accepted_total", channel="sms") == 6  # counters outlive their process
    finally:
        server.stop()
    assert server.process.returncode == 0, server.log()
    assert server.log().count("api_secret: ") == 1
    assert query(tmp_path, "SELECT count(*) FROM accounts") == [(1,)]

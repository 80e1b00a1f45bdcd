"""Provider logs (issue 23.4) end to end: a real server sending through the fake Graph
API, the fake Viber API and the fake SMSC, its exchanges read back at
`GET /v1/messages/{uuid}/logs`, secrets masked; another account's 404; pruning; `off`.
And the log format a person at a terminal gets (issue 23.9).
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from missive.observability.exchanges import Policy
from tests.fakes.fake_graph import FakeGraph
from tests.fakes.fake_smsc import FakeSMSC
from tests.fakes.fake_viber import FakeViber
from tests.harness import (
    PRIVATE_URLS_ALLOWED,
    Server,
    database_env,
    free_port,
    missive,
    missive_json,
    provisioned_server,
    query,
)

PAGE, PAGE_TOKEN, APP_SECRET = "1122334455", "EAAGpagetoken-s3cr3t-9f8e7d", "app-secret-0f9e8d7c"
VIBER_TOKEN = "445da6az1s345z78-dazcczb2542zv51a-e0vc5fva17480im9"
SERVICE, VIBER_USER = "acme-bot", "01234567890A="
SMPP_PASSWORD = "pw-s3cr"
FAST = {
    "MISSIVE_SANDBOX_DELIVERED_AFTER": "0.1",
    "MISSIVE_DISPATCH_BACKOFF_BASE": "0.05",
    "MISSIVE_POLL_INTERVAL": "0.05",
    "MISSIVE_SESSIONS_INTERVAL": "0.3",
    "MISSIVE_PROVIDER_TIMEOUT": "2",
}
SECRETS = (PAGE_TOKEN, APP_SECRET, VIBER_TOKEN, SMPP_PASSWORD)
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@dataclass
class Live:
    server: Server
    smsc: FakeSMSC
    other: tuple[str, str]  # another account's api_key and api_secret

    def send(self, body: dict[str, Any], **auth: Any) -> str:
        auth = auth or {"auth": self.server.basic}
        response = httpx.post(f"{self.server.url}/v1/messages", json=body, **auth)
        assert response.status_code == 202, response.text
        return str(response.json()["message_uuid"])

    def logs(self, message_uuid: str, **auth: Any) -> httpx.Response:
        return httpx.get(f"{self.server.url}/v1/messages/{message_uuid}/logs", **(auth or {"auth": self.server.basic}))

    def wait_logs(self, message_uuid: str, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            response = self.logs(message_uuid)
            assert response.status_code == 200, response.text
            logs = response.json()["_embedded"]["logs"]
            if len(logs) >= count or time.monotonic() > deadline:
                return logs
            time.sleep(0.1)


def _wait(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _no_secret_in(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data_dir = tmp_path_factory.mktemp("provider-logs")
    with FakeGraph() as graph, FakeViber(auth_token=VIBER_TOKEN) as viber, FakeSMSC() as smsc:
        env = {**FAST, "MISSIVE_GRAPH_API_URL": graph.url, "MISSIVE_VIBER_API_URL": viber.url()}
        server = provisioned_server(data_dir, env=env)
        try:
            missive_json(data_dir, "channel", "add", "messenger", "--page-id", PAGE, "--page-token", PAGE_TOKEN,
                         "--app-secret", APP_SECRET, "--verify-token", "verify-me", "--app", server.app_id)
            added = missive(data_dir, "channel", "add", "viber", "--service-id", SERVICE, "--auth-token", VIBER_TOKEN,
                            "--default", "--api-key", server.api_key, "--json",
                            env={"MISSIVE_VIBER_API_URL": viber.url(), "MISSIVE_PUBLIC_URL": server.url})
            assert added.returncode == 0, added.stderr
            missive_json(data_dir, "channel", "add", "sms", "--host", "127.0.0.1", "--port", str(smsc.port),
                         "--system-id", "missive", "--password", SMPP_PASSWORD, "--default")
            smsc.wait_for(lambda s: s["bound"] >= 1, timeout=15)
            other = missive_json(data_dir, "account", "create")
            yield Live(server, smsc, (other["api_key"], other["api_secret"]))
        finally:
            server.stop()


def test_a_messenger_send_logs_its_graph_request_and_answer_with_the_token_masked(live: Live) -> None:
    body = {"channel": "messenger", "message_type": "text", "to": "psid-logs", "from": PAGE, "text": "Hello logs"}
    uuid = live.send(body, headers=live.server.bearer())
    logs = live.wait_logs(uuid, 2)
    assert [(e["direction"], e["protocol"]) for e in logs] == [("out", "http"), ("in", "http")]
    request, answer = logs
    assert request["summary"].startswith("POST ") and request["summary"].endswith("/me/messages")
    assert request["detail"]["url"].endswith("access_token=***")
    assert '"text":"Hello logs"' in request["detail"]["body"] and '"id":"psid-logs"' in request["detail"]["body"]
    assert answer["detail"]["status"] == 200 and "message_id" in answer["detail"]["body"]
    assert answer["summary"].startswith("HTTP 200")
    assert all(ISO_MS.match(e["at"]) for e in logs) and logs[0]["id"] < logs[1]["id"]
    # The application's JWT reads them as the account does.
    by_jwt = live.logs(uuid, headers=live.server.bearer())
    assert by_jwt.status_code == 200 and by_jwt.json()["_embedded"]["logs"] == logs
    _no_secret_in(by_jwt.text)
    rows = query(live.server.data_dir, "SELECT summary, detail, account_id, link_id FROM provider_logs "
                                       "WHERE message_uuid = :u", u=uuid)
    assert len(rows) == 2 and all(r[2] and r[3] for r in rows)
    _no_secret_in(repr(rows))


def test_a_viber_send_logs_its_request_with_the_auth_token_header_masked(live: Live) -> None:
    body = {"channel": "viber_service", "message_type": "text", "to": VIBER_USER, "from": SERVICE, "text": "Hi"}
    uuid = live.send(body)
    logs = live.wait_logs(uuid, 2)
    assert [e["direction"] for e in logs] == ["out", "in"]
    assert logs[0]["detail"]["headers"]["x-viber-auth-token"] == "***"
    assert f'"tracking_data":"{uuid}"' in logs[0]["detail"]["body"]
    assert '"message_token"' in logs[1]["detail"]["body"] and '"status":0' in logs[1]["detail"]["body"]
    response = live.logs(uuid)
    _no_secret_in(response.text)
    _no_secret_in(repr(query(live.server.data_dir, "SELECT * FROM provider_logs WHERE message_uuid = :u", u=uuid)))


def test_an_sms_logs_submit_sm_its_resp_and_the_deliver_sm_receipt(live: Live) -> None:
    uuid = live.send({"channel": "sms", "message_type": "text", "to": "447700900311", "from": "Acme", "text": "Hi SMPP"})
    logs = live.wait_logs(uuid, 3)
    assert [(e["direction"], e["protocol"], e["summary"].split()[0]) for e in logs] == [
        ("out", "smpp", "submit_sm"), ("in", "smpp", "submit_sm_resp"), ("in", "smpp", "deliver_sm")]
    submit, resp, receipt = logs
    assert submit["summary"] == 'submit_sm Acme -> 447700900311: "Hi SMPP"'
    assert submit["detail"]["text"] == "Hi SMPP" and submit["detail"]["destination_addr"] == "447700900311"
    message_id = resp["detail"]["message_id"]
    assert resp["summary"] == f"submit_sm_resp message_id={message_id}"
    assert "stat:DELIVRD" in receipt["summary"] and receipt["detail"]["receipted_message_id"] in (
        message_id, format(int(message_id), "x") if message_id.isdigit() else message_id)
    _no_secret_in(live.logs(uuid).text)


def test_another_account_and_an_unknown_message_get_404(live: Live) -> None:
    uuid = live.send({"channel": "sms", "message_type": "text", "to": "447700900312", "from": "Acme", "text": "mine"})
    assert live.wait_logs(uuid, 1)
    assert live.logs(uuid, auth=live.other).status_code == 404
    assert live.logs("01890000-0000-7000-8000-000000000000").status_code == 404
    assert live.logs(uuid, auth=(live.server.api_key, "wrong")).status_code == 401


def test_sampling_keeps_every_exchange_of_one_message_in_n() -> None:
    policy = Policy("sample:4")
    chosen = [u for u in (f"01890000-0000-7000-8000-0000000000{i:02x}" for i in range(64)) if policy.wants(u)]
    assert len(chosen) == 16 and all(policy.wants(u) for u in chosen)
    assert not Policy("off").on and Policy("all").wants("anything")
    with pytest.raises(ValueError):
        Policy("sample:0")


def _sandbox_server(data_dir: Path, **env: str) -> Server:
    return provisioned_server(data_dir, env={**FAST, **env})


def test_a_sandbox_send_is_logged_and_pruned_after_the_retention(tmp_path: Path) -> None:
    # 0.00004 days: 3.5 s, pruned every 0.5 s.
    server = _sandbox_server(tmp_path, MISSIVE_PROVIDER_LOG_DAYS="0.00004")
    try:
        live = Live(server, None, ("", ""))  # type: ignore[arg-type]
        uuid = live.send({"channel": "sms", "message_type": "text", "to": "447700900313", "from": "Acme", "text": "x"})
        logs = live.wait_logs(uuid, 1)
        # On a fresh install the sandbox carries it: its own line says what it did.
        assert [(e["direction"], e["protocol"]) for e in logs] == [("out", "sandbox")]
        assert logs[0]["summary"].startswith("sandbox accepted it as sandbox-") and "delivered in" in logs[0]["summary"]
        _wait(lambda: not query(tmp_path, "SELECT id FROM provider_logs"), timeout=15)
        assert live.logs(uuid).json()["_embedded"]["logs"] == []
    finally:
        server.stop()


def test_off_records_nothing(tmp_path: Path) -> None:
    server = _sandbox_server(tmp_path, MISSIVE_PROVIDER_LOGS="off")
    try:
        live = Live(server, None, ("", ""))  # type: ignore[arg-type]
        uuid = live.send({"channel": "sms", "message_type": "text", "to": "447700900314", "from": "Acme", "text": "x"})
        _wait(lambda: query(tmp_path, "SELECT status FROM messages WHERE uuid = :u", u=uuid)[0][0] == "delivered")
        assert query(tmp_path, "SELECT count(*) FROM provider_logs") == [(0,)]
        assert live.logs(uuid).json()["_embedded"]["logs"] == []
    finally:
        server.stop()


# -- the terminal ---------------------------------------------------------------------------


def _read_until(fd: int, wanted: str, timeout: float = 30.0) -> str:
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted.encode() not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
    return seen.decode(errors="replace")


def test_at_a_terminal_serve_logs_plain_lines_and_prints_the_console_url(tmp_path: Path) -> None:
    port = free_port()
    parent, child = pty.openpty()
    env = {**os.environ, "MISSIVE_DATA_DIR": str(tmp_path), **database_env(tmp_path), **PRIVATE_URLS_ALLOWED}
    env.pop("MISSIVE_LOG_FORMAT", None)
    process = subprocess.Popen([sys.executable, "-m", "missive", "serve", "--port", str(port)],
                               stdin=subprocess.DEVNULL, stdout=child, stderr=child, env=env)
    os.close(child)
    try:
        out = _read_until(parent, "Uvicorn running")
    finally:
        process.terminate()
        process.wait(timeout=15)
        os.close(parent)
    assert f"Console: http://127.0.0.1:{port}/console" in out
    assert "api_secret" in out
    lines = [line for line in out.splitlines() if " INFO " in line]
    assert lines, out
    assert all(not line.lstrip().startswith("{") for line in lines)
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO ", lines[0]), lines[0]


def test_json_is_kept_when_asked_for_at_a_terminal(tmp_path: Path) -> None:
    parent, child = pty.openpty()
    env = {**os.environ, "MISSIVE_DATA_DIR": str(tmp_path), **database_env(tmp_path), **PRIVATE_URLS_ALLOWED,
           "MISSIVE_LOG_FORMAT": "json"}
    process = subprocess.Popen([sys.executable, "-m", "missive", "serve", "--port", str(free_port())],
                               stdin=subprocess.DEVNULL, stdout=child, stderr=child, env=env)
    os.close(child)
    try:
        out = _read_until(parent, "Uvicorn running")
    finally:
        process.terminate()
        process.wait(timeout=15)
        os.close(parent)
    assert any(line.startswith('{"time"') and '"level":"INFO"' in line for line in out.splitlines()), out

"""Several `missive dispatch` processes on one database: a link's rate limit and its SMPP
binds hold across them (run on SQLite and, in make test's second pass, on PostgreSQL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tests.fakes.fake_smsc import FakeSMSC
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.harness import (
    PRIVATE_URLS_ALLOWED,
    Server,
    database_env,
    missive,
    missive_json,
    provisioned_server,
    query,
)

FAST = {
    "MISSIVE_POLL_INTERVAL": "0.05",
    "MISSIVE_WEBHOOK_BACKOFF_BASE": "0.05",
    "MISSIVE_SESSIONS_INTERVAL": "0.5",
    # Bind slots held 4 s rather than 10 past a dispatcher's last round: a dead holder's
    # binds move sooner (still well over the rounds' 1.5 s).
    "MISSIVE_BIND_LEASE_MIN": "4",
}


@dataclass
class Dispatcher:
    process: subprocess.Popen[bytes]
    log: Path
    sandbox_log: Path

    def sends(self) -> list[str]:
        """The message_uuid of each send (the first word of each line of the sandbox log)."""
        lines = self.sandbox_log.read_text().splitlines() if self.sandbox_log.exists() else []
        return [line.split(" ", 1)[0] for line in lines if line]

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def dispatchers(data_dir: Path, count: int, env: dict[str, str]) -> Iterator[list[Dispatcher]]:
    """`count` dispatcher processes on data_dir's database, each with its own sandbox log."""
    started: list[Dispatcher] = []
    try:
        for i in range(count):
            log, sandbox_log = data_dir / f"dispatch-{i}.log", data_dir / f"sandbox-{i}.log"
            process = subprocess.Popen(
                [sys.executable, "-m", "missive", "dispatch"],
                env={**os.environ, "MISSIVE_DATA_DIR": str(data_dir), **database_env(data_dir), **PRIVATE_URLS_ALLOWED, **FAST, **env,
                     "MISSIVE_SANDBOX_LOG": str(sandbox_log)},
                stdout=log.open("wb"), stderr=subprocess.STDOUT,
            )
            started.append(Dispatcher(process, log, sandbox_log))
        yield started
    finally:
        for dispatcher in started:
            if dispatcher.process.poll() is None:
                dispatcher.process.send_signal(signal.SIGTERM)
        for dispatcher in started:
            try:
                dispatcher.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                dispatcher.process.kill()


def holding(data_dir: Path, running: list[Dispatcher]) -> list[Dispatcher]:
    """The dispatchers that hold a bind slot now (each logs its id when it starts)."""
    holders = {row[0] for row in query(data_dir, "SELECT holder FROM bind_slots WHERE holder IS NOT NULL")}
    return [d for d in running if any(f"dispatcher {h} running" in d.output() for h in holders)]


@contextmanager
def api_only(data_dir: Path, receiver: WebhookReceiver) -> Iterator[Server]:
    server = provisioned_server(data_dir, env={**FAST, "MISSIVE_DISPATCH_IN_SERVE": "false"})
    try:
        result = missive(data_dir, "account", "update", "--api-key", server.api_key, "--status-url", receiver.url("/status"))
        assert result.returncode == 0, result.stderr
        yield server
    finally:
        server.stop()


def post(server: Server, count: int, prefix: str) -> list[str]:
    uuids = []
    with server.client() as client:
        for i in range(count):
            body = {"channel": "sms", "message_type": "text", "to": f"4477009003{i % 100:02d}", "from": "Acme",
                    "text": f"{prefix} {i}"}
            response = client.post("/v1/messages", json=body, auth=server.basic)
            assert response.status_code == 202, response.text
            uuids.append(response.json()["message_uuid"])
    return uuids


def wait_statuses(receiver: WebhookReceiver, uuids: list[str], status: str, timeout: float = 60) -> dict[str, dict]:
    """The `status` webhook of each message, once all have arrived."""
    wanted = set(uuids)

    def arrived(hooks: list) -> bool:
        return wanted <= {h.json["message_uuid"] for h in hooks if h.json.get("status") == status}

    hooks = receiver.wait_for(arrived, timeout)
    return {h.json["message_uuid"]: h.json for h in hooks if h.json.get("status") == status}


def stamp(hook: dict) -> float:
    return datetime.fromisoformat(hook["timestamp"].replace("Z", "+00:00")).timestamp()


def test_a_links_rate_holds_across_dispatchers(tmp_path: Path) -> None:
    with WebhookReceiver() as receiver, api_only(tmp_path, receiver) as server:
        link = missive_json(tmp_path, "channel", "add", "sandbox", "--channel", "sms", "--tps", "5", "--default",
                            "--delivered-after", "0", "--api-key", server.api_key)
        assert link["tps"] == 5
        # A few messages in flight per process, so that both claim a share of the queue.
        with dispatchers(tmp_path, 2, {"MISSIVE_DISPATCH_MAX_IN_FLIGHT": "3"}) as running:
            uuids = post(server, 20, "rated")
            submitted = wait_statuses(receiver, uuids, "submitted")
            sends = [d.sends() for d in running]
    assert all(sends), f"one dispatcher sent nothing: {[len(s) for s in sends]}"
    assert sorted(u for s in sends for u in s) == sorted(uuids)
    times = sorted(stamp(hook) for hook in submitted.values())
    # One bucket of 5/s (a second of burst, then 5 per second): the 20th about 3 s after
    # the first. Two buckets of 5/s each, one per process, would take about 1 s.
    assert times[-1] - times[0] >= 2.4, times[-1] - times[0]


def test_a_long_wait_for_the_rate_keeps_the_claim(tmp_path: Path) -> None:
    # Leases of 2 s, and messages that wait up to 3 s for their turn: without extending
    # its claim, the waiting dispatcher would see the other one send them too.
    env = {"MISSIVE_LEASE_SECONDS": "2"}
    with WebhookReceiver() as receiver, api_only(tmp_path, receiver) as server:
        missive_json(tmp_path, "channel", "add", "sandbox", "--channel", "sms", "--tps", "5", "--default",
                     "--delivered-after", "0", "--api-key", server.api_key)
        uuids = post(server, 20, "patient")
        with dispatchers(tmp_path, 2, env) as running:
            wait_statuses(receiver, uuids, "submitted")
            time.sleep(2.5)  # past the leases of the last claims
            sends = [u for d in running for u in d.sends()]
    assert sorted(sends) == sorted(uuids)


def test_smpp_binds_are_shared_out_and_never_exceed_the_links_count(tmp_path: Path) -> None:
    with FakeSMSC() as smsc, WebhookReceiver() as receiver, api_only(tmp_path, receiver) as server:
        missive_json(tmp_path, "channel", "add", "sms", "--host", "127.0.0.1", "--port", str(smsc.port),
                     "--system-id", "missive", "--password", "secret", "--binds", "2", "--default", "--json")
        bound: list[int] = []

        def sample(seconds: float) -> None:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                bound.append(smsc.state()["bound"])
                time.sleep(0.05)

        with dispatchers(tmp_path, 3, {}) as running:
            smsc.wait_for(lambda s: s["bound"] == 2, timeout=20)
            sample(3)
            first = post(server, 30, "shared")
            assert set(first) <= set(wait_statuses(receiver, first, "delivered"))
            holders = holding(tmp_path, running)
            assert len(holders) == 2, query(tmp_path, "SELECT * FROM bind_slots")

            # A dispatcher holding a bind dies: after its lease, the idle one binds instead.
            holders[0].process.kill()
            holders[0].process.wait()
            idle = next(d for d in running if d not in holders)
            deadline = time.monotonic() + 40
            while idle not in holding(tmp_path, running):
                assert time.monotonic() < deadline, idle.output()[-2000:]
                bound.append(smsc.state()["bound"])
                time.sleep(0.1)
            smsc.wait_for(lambda s: s["bound"] == 2, timeout=20)
            sample(2)
            second = post(server, 10, "after the kill")
            assert set(second) <= set(wait_statuses(receiver, second, "delivered"))
        assert max(bound) <= 2, bound
        # Every bind ever made belonged to one of the two slots' holders at the time.
        assert len(smsc.state()["submits"]) >= 40

"""A process killed while sending resumes within seconds of its restart (issue 26).

An SMSC that holds every submit unanswered keeps messages in flight; the process is
SIGKILLed, the SMSC made prompt, and the process started again on the same data
directory with the default 60-s lease. Its previous life's leases carry its node
identity (missive/node.py): it hands them back before claiming, so every message is sent
within seconds of the process answering /health rather than when the leases run out.
The only sends made twice are those the SMSC had taken but not answered at the kill.

Runs on SQLite and, in make test's second pass, on PostgreSQL. That a dead process's
leases pass to the other live ones when they run out is tests/test_many_processes.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.fakes.fake_smsc import FakeSMSC
from tests.harness import (
    PRIVATE_URLS_ALLOWED,
    Server,
    database_env,
    free_port,
    missive_json,
    provisioned_server,
    query,
    start_server,
)

COUNT = 24
# Sent within this long of the restarted process answering /health.
RESUMED_WITHIN = 5.0
# Lease left at its default (60 s): the point is not to wait for it.
ENV = {"MISSIVE_POLL_INTERVAL": "0.05", "MISSIVE_SESSIONS_INTERVAL": "0.5"}


def recipient(i: int) -> str:
    return f"4477009100{i:02d}"


def post(server: Server, count: int) -> list[str]:
    uuids = []
    with server.client() as client:
        for i in range(count):
            body = {"channel": "sms", "message_type": "text", "to": recipient(i), "from": "Acme", "text": f"restart {i}"}
            response = client.post("/v1/messages", json=body, auth=server.basic)
            assert response.status_code == 202, response.text
            uuids.append(response.json()["message_uuid"])
    return uuids


def add_link(data_dir: Path, smsc: FakeSMSC, api_key: str) -> None:
    # A window of 8: 8 messages at the SMSC unanswered at the kill, the others waiting in
    # the process for the window (leased to it as well).
    missive_json(data_dir, "channel", "add", "sms", "--host", "127.0.0.1", "--port", str(smsc.port),
                 "--system-id", "missive", "--password", "secret", "--window", "8", "--default",
                 "--api-key", api_key)


def wait_until(what: str, done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def healthy_at(url: str) -> float:
    """When `url`/health first answers 200 (time.monotonic())."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return time.monotonic()
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"{url} never answered /health")


def leased(data_dir: Path) -> int:
    return int(query(data_dir, "SELECT COUNT(*) FROM outbox WHERE claimed_until IS NOT NULL")[0][0])


def sent(data_dir: Path) -> int:
    """Messages whose send is recorded (the SMSC answered it)."""
    rows = query(data_dir, "SELECT COUNT(*) FROM messages WHERE status IN ('submitted', 'delivered')")
    return int(rows[0][0])


def resume_and_measure(data_dir: Path, smsc: FakeSMSC, restart: Callable[[], float], unanswered: int) -> float:
    """Make the SMSC prompt, restart, and return the seconds from ready to all sent."""
    smsc.configure(submit_delay_ms=0)
    ready = restart()
    wait_until(f"the {COUNT} messages are sent (lease: 60 s)", lambda: sent(data_dir) == COUNT, 70)
    resumed_in = time.monotonic() - ready
    submits = Counter(s["destination_addr"] for s in smsc.submits())
    assert set(submits) == {recipient(i) for i in range(COUNT)}
    # Sent again: only what the SMSC held unanswered at the kill.
    extra = sum(submits.values()) - COUNT
    print(f"\n{unanswered} unanswered at the kill; all {COUNT} sent {resumed_in:.2f} s after /health; "
          f"{extra} sent twice")
    assert extra <= unanswered, submits
    return resumed_in


def holding_a_window(smsc: FakeSMSC) -> None:
    """Wait until the SMSC holds a full window of submits (all unanswered)."""
    smsc.wait_for(lambda s: len(s["submits"]) >= 8, timeout=20)


def test_a_server_killed_while_sending_resumes_within_seconds(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with FakeSMSC() as smsc:
        server = provisioned_server(data_dir, env=ENV)
        try:
            add_link(data_dir, smsc, server.api_key)
            smsc.wait_for(lambda s: s["bound"] == 1, timeout=20)
            smsc.configure(submit_delay_ms=600_000)
            # Accepted by the process that sends them: leased to it at once, no claim.
            post(server, COUNT)
            holding_a_window(smsc)
            wait_until("every message is leased", lambda: leased(data_dir) == COUNT, 10)
            server.process.send_signal(signal.SIGKILL)
            server.process.wait(timeout=10)
            unanswered = len(smsc.submits())
        finally:
            server.stop()
        restarted: list[Server] = []

        def restart() -> float:
            restarted.append(start_server(data_dir, env=ENV))
            return healthy_at(restarted[0].url)

        try:
            resumed_in = resume_and_measure(data_dir, smsc, restart, unanswered)
        finally:
            for again in restarted:
                again.stop()
    assert resumed_in <= RESUMED_WITHIN


@contextmanager
def dispatcher(data_dir: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "missive", "dispatch", "--metrics-port", str(port)],
        env={**os.environ, "MISSIVE_DATA_DIR": str(data_dir), **database_env(data_dir), **PRIVATE_URLS_ALLOWED, **ENV},
        stdout=(data_dir / f"dispatch-{port}.log").open("wb"), stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=20)


def test_a_dispatcher_killed_while_sending_resumes_within_seconds(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with FakeSMSC() as smsc:
        api = provisioned_server(data_dir, env={**ENV, "MISSIVE_DISPATCH_IN_SERVE": "false"})
        try:
            add_link(data_dir, smsc, api.api_key)
            smsc.configure(submit_delay_ms=600_000)
            # Accepted by an API-only server: the dispatcher claims them.
            post(api, COUNT)
            port = free_port()
            with dispatcher(data_dir, port) as first:
                holding_a_window(smsc)
                wait_until("every message is claimed", lambda: leased(data_dir) == COUNT, 10)
                first.send_signal(signal.SIGKILL)
                first.wait(timeout=10)
            unanswered = len(smsc.submits())

            smsc.configure(submit_delay_ms=0)
            with dispatcher(data_dir, port):
                resumed_in = resume_and_measure(data_dir, smsc, lambda: healthy_at(f"http://127.0.0.1:{port}"),
                                                unanswered)
        finally:
            api.stop()
    assert resumed_in <= RESUMED_WITHIN

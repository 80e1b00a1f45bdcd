"""A process frozen past its bind leases (SIGSTOP: as a long event-loop stall, a long
SQLite lock or a VM pause would) gets its SMPP binds back by itself once it runs again,
or, when another process took them meanwhile, closes its own and leaves them to it.

Real `missive serve` / `missive dispatch` subprocesses, the SMSC simulator on 127.0.0.1,
sessions rounds of 0.3 s and a bind lease floor of 4 s (MISSIVE_BIND_LEASE_MIN; 10 s by
default): the bind lease is then that floor.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from missive.dispatch.sessions import LEASE_ROUNDS
from tests.fakes.fake_smsc import FakeSMSC
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.harness import Server, missive, missive_json, provisioned_server, query
from tests.test_shared_dispatch import api_only, dispatchers, holding, post, wait_statuses

INTERVAL = 0.3
LEASE_MIN = 4.0
LEASE = max(LEASE_MIN, LEASE_ROUNDS * INTERVAL)
FAST = {
    "MISSIVE_BIND_LEASE_MIN": str(LEASE_MIN),
    "MISSIVE_DISPATCH_BACKOFF_BASE": "0.05",
    "MISSIVE_WEBHOOK_BACKOFF_BASE": "0.05",
    "MISSIVE_POLL_INTERVAL": "0.05",
    "MISSIVE_SESSIONS_INTERVAL": str(INTERVAL),
    "MISSIVE_PROVIDER_TIMEOUT": "2",
}


@contextmanager
def frozen(server: Server) -> Iterator[None]:
    """The server stopped (SIGSTOP) for the block, and continued after it, even if it fails."""
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


def statuses(receiver: WebhookReceiver, message_uuid: str) -> list[str]:
    hooks = [h.json for h in receiver.snapshot(accepted_only=True) if h.json.get("message_uuid") == message_uuid]
    return [h["status"] for h in sorted(hooks, key=lambda h: h["timestamp"])]


def test_a_process_frozen_past_its_leases_binds_again_and_sends(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with FakeSMSC() as smsc, WebhookReceiver() as receiver:
        server = provisioned_server(tmp_path, env=FAST)
        try:
            missive(tmp_path, "account", "update", "--api-key", server.api_key, "--status-url", receiver.url("/status"))
            missive_json(tmp_path, "channel", "add", "sms", "--host", "127.0.0.1", "--port", str(smsc.port),
                         "--system-id", "missive", "--password", "secret", "--binds", "2", "--default", "--json")
            smsc.wait_for(lambda s: s["bound"] == 2, timeout=15)
            [(holder,)] = query(tmp_path, "SELECT DISTINCT holder FROM bind_slots")

            with frozen(server):
                time.sleep(LEASE + 2)
                expired = query(tmp_path, "SELECT slot FROM bind_slots WHERE holder = :h AND until < :now",
                                h=holder, now=time.time())
                assert len(expired) == 2  # the process still holds both slots, past their leases

            body = {"channel": "sms", "message_type": "text", "to": "447700900301", "from": "Acme", "text": "after the stall"}
            response = httpx.post(f"{server.url}/v1/messages", json=body, auth=server.basic, timeout=30)
            assert response.status_code == 202, response.text
            message_uuid = response.json()["message_uuid"]
            receiver.wait_for(lambda _: "delivered" in statuses(receiver, message_uuid), 20)
            assert statuses(receiver, message_uuid) == ["submitted", "delivered"]
            assert [s["destination_addr"] for s in smsc.submits()] == ["447700900301"]

            # Both slots held again by the same process, under leases that run on.
            rows = query(tmp_path, "SELECT holder, until FROM bind_slots")
            assert len(rows) == 2 and all(h == holder and until > time.time() for h, until in rows), rows
            assert smsc.state()["bound"] == 2
            assert "bind slot leases ran out" in server.log()
        finally:
            server.stop()


def test_a_frozen_holder_whose_slot_was_taken_closes_its_bind(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # One bind, two dispatchers: while the holder is frozen the other takes the slot and
    # binds it too. Running again, the first must give its bind up rather than take the
    # slot back as its own (the SMSC would keep seeing two binds of a one-bind link).
    with FakeSMSC() as smsc, WebhookReceiver() as receiver, api_only(tmp_path, receiver) as server:
        missive_json(tmp_path, "channel", "add", "sms", "--host", "127.0.0.1", "--port", str(smsc.port),
                     "--system-id", "missive", "--password", "secret", "--binds", "1", "--default", "--json")
        with dispatchers(tmp_path, 2, {"MISSIVE_SESSIONS_INTERVAL": str(INTERVAL),
                                       "MISSIVE_BIND_LEASE_MIN": str(LEASE_MIN)}) as running:
            smsc.wait_for(lambda s: s["bound"] == 1, timeout=20)
            [first] = holding(tmp_path, running)
            [second] = [d for d in running if d is not first]
            os.kill(first.process.pid, signal.SIGSTOP)
            try:
                deadline = time.monotonic() + LEASE + 15
                while holding(tmp_path, running) != [second]:
                    assert time.monotonic() < deadline, second.output()[-2000:]
                    time.sleep(0.2)
                smsc.wait_for(lambda s: s["bound"] == 2, timeout=15)  # the frozen bind, and the new one
            finally:
                os.kill(first.process.pid, signal.SIGCONT)
            smsc.wait_for(lambda s: s["bound"] == 1, timeout=10)
            uuids = post(server, 3, "after the takeover")
            assert set(uuids) <= set(wait_statuses(receiver, uuids, "delivered"))
            assert holding(tmp_path, running) == [second]
            assert smsc.state()["bound"] == 1

"""A crash between Meta's answer to a WhatsApp send and its record (issue 22, point 7).

A real server sends to the fake Cloud API, which takes the request and holds its answer.
The test then locks the message's row (so the result cannot be committed), lets the
answer go, and SIGKILLs the server while it waits on the lock: Meta has the message,
Missive has no record of it. Restarted on the same data directory, the server sends it
once more (at least once: it cannot know Meta took it), with the same message uuid in
`biz_opaque_callback_data`, records it `submitted` and posts that status webhook once.

Runs on SQLite (the lock is the database's write lock) and PostgreSQL (a row lock).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy

from tests.fakes.fake_whatsapp import Answer, FakeWhatsapp
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.harness import missive_json, provisioned_server, query, start_server, sync_engine

NUMBER_ID, WABA, TOKEN, SECRET, VERIFY = "106540352242922", "102290129340398", "EAAGwa-cr4sh", "wa-app-secret-c", "wa-verify-c"
BUSINESS, USER = "447700900100", "447700900241"
# The default lease (60 s): the restarted process takes back its previous life's leases at once.
ENV = {"MISSIVE_POLL_INTERVAL": "0.05", "MISSIVE_WEBHOOK_BACKOFF_BASE": "0.05", "MISSIVE_PROVIDER_TIMEOUT": "5"}
TEMPLATE = {"channel": "whatsapp", "message_type": "template", "to": USER, "from": BUSINESS,
            "template": {"name": "order_update", "parameters": ["42"]},
            "whatsapp": {"policy": "deterministic", "locale": "en-GB"}}


def wait_until(what: str, done: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def test_sigkill_after_meta_answered_and_before_the_record_sends_once_more(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    release = threading.Event()
    with FakeWhatsapp(token=TOKEN) as cloud, WebhookReceiver() as receiver:
        env = {**ENV, "MISSIVE_GRAPH_API_URL": cloud.url}
        server = provisioned_server(data_dir, env=env)
        try:
            missive_json(data_dir, "channel", "add", "whatsapp", "--phone-number-id", NUMBER_ID, "--waba-id", WABA,
                         "--access-token", TOKEN, "--app-secret", SECRET, "--verify-token", VERIFY,
                         "--phone-number", BUSINESS, "--json")
            cloud.script(Answer(hold=release), to=USER)
            with server.client() as client:
                response = client.post("/v1/messages", auth=server.basic,
                                       json={**TEMPLATE, "webhook_url": receiver.url("/status")})
            assert response.status_code == 202, response.text
            message_uuid = response.json()["message_uuid"]
            cloud.wait_for(lambda requests: len(requests) == 1)

            engine = sync_engine(data_dir)
            try:
                with engine.connect() as conn, conn.begin() as locked:
                    # The result's write must update this row: it waits for the lock.
                    conn.execute(sqlalchemy.text("UPDATE messages SET updated_at = updated_at WHERE uuid = :u"),
                                 {"u": message_uuid})
                    release.set()
                    wait_until("Meta's answer is out", lambda: cloud.answered == 1)
                    time.sleep(0.5)  # read by the server, whose record now waits on the lock
                    server.process.kill()
                    server.process.wait(timeout=10)
                    locked.rollback()
            finally:
                engine.dispose()
        finally:
            server.stop()
        assert query(data_dir, "SELECT status FROM messages WHERE uuid = :u", u=message_uuid) == [("accepted",)]
        assert receiver.snapshot() == []

        restarted = start_server(data_dir, env=env)
        try:
            wait_until("the submitted webhook is accepted", lambda: bool(receiver.snapshot(accepted_only=True)))
            time.sleep(1.0)  # room for a third send or a second webhook, which must not come
            sends = cloud.snapshot(USER)
            assert len(sends) == 2, [r.body for r in sends]
            assert [r.body["biz_opaque_callback_data"] for r in sends] == [message_uuid, message_uuid]
            assert sends[0].body == sends[1].body
            with restarted.client() as client:
                seen = client.get(f"/v1/messages/{message_uuid}", auth=server.basic).json()
            assert seen["status"] == "submitted"
            assert [e["status"] for e in seen["history"]] == ["accepted", "submitted"]
            assert seen["history"][-1]["provider_ref"] == "wamid.FAKE0000000002"  # the second send's
            hooks = receiver.snapshot(accepted_only=True)
            assert [(h.json["message_uuid"], h.json["status"]) for h in hooks] == [(message_uuid, "submitted")]
        finally:
            restarted.stop()

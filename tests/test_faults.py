"""Faults: the database briefly unavailable, its storage full, a provider that hangs, and
a webhook receiver that is slow.

Real servers (`missive serve` subprocesses); the faults are made at the edges: another
connection holding SQLite's lock, PostgreSQL refusing connections to the test database,
SQLite's own page cap, a fake Graph API that never answers or dribbles, a webhook
receiver that answers late. docs/security.md#faults says what each shows.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import sqlalchemy
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi

from missive.store.faults import FULL, UNAVAILABLE, classify, describe
from tests.fakes.fake_graph import Answer, FakeGraph, ok
from tests.fakes.webhook_receiver import Hook, WebhookReceiver
from tests.harness import (
    POSTGRES_URL,
    Server,
    database_url,
    missive_json,
    on_postgres,
    provisioned_server,
    query,
    start_server,
)

FAST = {
    "MISSIVE_SANDBOX_DELIVERED_AFTER": "0.2",
    "MISSIVE_DISPATCH_BACKOFF_BASE": "0.05",
    "MISSIVE_WEBHOOK_BACKOFF_BASE": "0.05",
    "MISSIVE_POLL_INTERVAL": "0.05",
}
PROBLEM_KEYS = {"type", "title", "detail", "instance"}


def sms(receiver: WebhookReceiver, to: str = "447700900000", **extra: Any) -> dict:
    return {"channel": "sms", "message_type": "text", "to": to, "from": "Acme", "text": "hello",
            "webhook_url": receiver.url("/status"), **extra}


def post(server: Server, body: dict, headers: dict | None = None) -> httpx.Response:
    with server.client() as client:
        if headers is None:
            return client.post("/v1/messages", json=body, auth=server.basic)
        return client.post("/v1/messages", json=body, headers=headers)


def accepted(server: Server, body: dict, headers: dict | None = None) -> str:
    response = post(server, body, headers)
    assert response.status_code == 202, response.text
    return str(response.json()["message_uuid"])


def wait_status(receiver: WebhookReceiver, message_uuid: str, status: str, timeout: float = 15.0) -> Hook:
    def found(hooks: list[Hook]) -> list[Hook]:
        return [h for h in hooks if 200 <= h.answered < 300 and h.json.get("message_uuid") == message_uuid
                and h.json.get("status") == status]

    receiver.wait_for(lambda hooks: bool(found(hooks)), timeout)
    return found(receiver.snapshot())[0]


def read_message(server: Server, message_uuid: str) -> dict:
    with server.client() as client:
        response = client.get(f"/v1/messages/{message_uuid}", auth=server.basic)
    assert response.status_code == 200, response.text
    return dict(response.json())


def assert_problem(response: httpx.Response, status: int, title: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert set(body) == PROBLEM_KEYS, body
    assert body["title"] == title
    assert body["instance"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text and "SQL" not in response.text
    return dict(body)


# -- 1. the database briefly unavailable -----------------------------------------------------


def _admin_url() -> str:
    return "postgresql+psycopg://" + POSTGRES_URL.split("://", 1)[1]


@contextlib.contextmanager
def database_outage(data_dir: Path) -> Iterator[None]:
    """The server's database refuses it until the block ends.

    SQLite: another process's connection holds the write lock (BEGIN EXCLUSIVE), longer
    than the server's busy timeout. PostgreSQL: the test database stops accepting
    connections and the server's are terminated."""
    if on_postgres():
        name = database_url(data_dir).rsplit("/", 1)[1]
        admin = sqlalchemy.create_engine(_admin_url(), isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.pool.NullPool)
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(sqlalchemy.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name AND pid <> pg_backend_pid()"),
                {"name": name})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()
        return
    lock = sqlite3.connect(data_dir / "missive.db", isolation_level=None, timeout=10)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        lock.execute("ROLLBACK")
        lock.close()


def test_database_briefly_unavailable_gives_503_and_dispatch_resumes(tmp_path: Path) -> None:
    with WebhookReceiver() as receiver:
        server = provisioned_server(tmp_path, env={**FAST, "MISSIVE_SQLITE_BUSY_TIMEOUT": "1"})
        try:
            before = accepted(server, sms(receiver))
            wait_status(receiver, before, "delivered")
            token = {"Authorization": f"Bearer {server.jwt()}"}  # made before: signing takes a while
            problems: list[dict] = []
            started = time.monotonic()
            with database_outage(tmp_path):
                # A group commit of several requests fails as one: every request gets its 503.
                with ThreadPoolExecutor(4) as pool:
                    answers = list(pool.map(lambda n: post(server, sms(receiver, client_ref=f"out-{n}")), range(4)))
                answers.append(post(server, sms(receiver), token))
                for answer in answers:
                    problems.append(assert_problem(answer, 503, "Service Unavailable"))
                    assert int(answer.headers["retry-after"]) >= 1
                with server.client() as client:
                    problems.append(assert_problem(client.get(f"/v1/messages/{before}", auth=server.basic), 503, "Service Unavailable"))
                    assert_problem(client.get("/ready"), 503, "Service Unavailable")
                    assert client.get("/health").status_code == 200
                # "Briefly": at least three seconds, three times SQLite's busy timeout here.
                time.sleep(max(0.0, 3.0 - (time.monotonic() - started)))
            assert any("nothing was accepted" in p["detail"] for p in problems)
            after = accepted(server, sms(receiver))
            wait_status(receiver, after, "delivered")
            # The dispatcher's loops survived: a second message goes the whole way too.
            again = accepted(server, sms(receiver), {"Authorization": f"Bearer {server.jwt()}"})
            wait_status(receiver, again, "delivered")
            assert server.process.poll() is None
        finally:
            server.stop()
    # Nothing of the refused requests was written; everything accepted went out.
    assert query(tmp_path, "SELECT count(*) FROM messages") == [(3,)]
    assert query(tmp_path, "SELECT count(*) FROM messages WHERE client_ref LIKE 'out-%'") == [(0,)]
    log = server.log()
    for problem in problems:
        assert "the database is unavailable" in log and problem["instance"] in log
    assert "Traceback" not in log
    # Each dispatcher loop says when it fails and when it works again, not at every try.
    for loop in ("claiming the outbox", "firing timers", "claiming webhooks"):
        assert 1 <= log.count(f"{loop} failed") <= 3 and f"{loop} works again" in log, loop


# -- 2. storage full ---------------------------------------------------------------------------


def test_database_errors_are_classified() -> None:
    """The mapping behind 503 and 507, on the drivers' own exceptions: SQLite's are made
    for real (a page cap, a held lock), PostgreSQL's as the asyncpg dialect wraps them."""
    cap = sqlite3.connect(":memory:", isolation_level=None)
    cap.execute("CREATE TABLE t (x TEXT)")
    cap.execute(f"PRAGMA max_page_count={cap.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(sqlite3.OperationalError) as full:
        cap.executemany("INSERT INTO t VALUES (?)", [("x" * 1000,)] * 100)
    wrapped = sqlalchemy.exc.OperationalError("INSERT INTO t VALUES (?)", ("secret",), full.value)
    assert classify(wrapped) == FULL
    assert describe(wrapped) == "OperationalError: database or disk is full"  # no SQL, no parameters

    def postgres(error: Exception) -> sqlalchemy.exc.DBAPIError:
        adapted = AsyncAdapt_asyncpg_dbapi.Error(str(error), error)
        adapted.__cause__ = error
        return sqlalchemy.exc.DBAPIError("INSERT ...", None, adapted)

    assert classify(postgres(asyncpg.exceptions.DiskFullError("could not extend file"))) == FULL
    assert classify(postgres(asyncpg.exceptions.ObjectNotInPrerequisiteStateError(
        'database "t" is not currently accepting connections'))) == UNAVAILABLE
    assert classify(postgres(asyncpg.exceptions.AdminShutdownError("terminating connection"))) == UNAVAILABLE
    assert classify(postgres(asyncpg.exceptions.UniqueViolationError("duplicate key"))) is None
    assert classify(sqlalchemy.exc.TimeoutError("QueuePool limit reached")) == UNAVAILABLE
    assert classify(ConnectionRefusedError(111, "refused")) == UNAVAILABLE
    no_table = sqlite3.connect(":memory:")
    with pytest.raises(sqlite3.OperationalError) as missing:
        no_table.execute("SELECT * FROM nowhere")
    assert classify(sqlalchemy.exc.OperationalError("SELECT", (), missing.value)) is None  # a bug: 500


@pytest.mark.skipif(on_postgres(), reason=(
    "a full PostgreSQL tablespace needs a small filesystem mounted for it, which needs root here; "
    "its SQLSTATE 53100 maps to the same 507 (test_database_errors_are_classified)"))
def test_full_storage_gives_507_writes_nothing_and_recovers(tmp_path: Path) -> None:
    # Provisioning creates the database; the cap leaves it a few pages to grow.
    account = missive_json(tmp_path, "account", "create")
    with contextlib.closing(sqlite3.connect(tmp_path / "missive.db")) as db:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    env = {**FAST, "MISSIVE_SQLITE_MAX_PAGES": str(pages + 12), "MISSIVE_DISPATCH_IN_SERVE": "false"}
    with WebhookReceiver() as receiver:
        server = start_server(tmp_path, env=env)
        server.api_key, server.api_secret = account["api_key"], account["api_secret"]
        long_text = "x" * 1000
        statuses: list[int] = []
        refused: list[httpx.Response] = []
        try:
            with ThreadPoolExecutor(4) as pool:
                for _ in range(60):
                    answers = list(pool.map(lambda n: post(server, sms(receiver, text=long_text)), range(4)))
                    statuses += [a.status_code for a in answers]
                    refused += [a for a in answers if a.status_code != 202]
                    if refused:
                        break
            assert statuses.count(202) >= 4 and refused, statuses
            for answer in refused:
                body = assert_problem(answer, 507, "Insufficient Storage")
                assert "storage is full" in body["detail"] and "Nothing was accepted" in body["detail"]
            # Reading needs no space.
            with server.client() as client:
                assert client.get("/v1/messages", auth=server.basic).status_code == 200
                assert client.get("/ready").status_code == 200
        finally:
            server.stop()
        log = server.log()
        assert "the database is full" in log and refused[0].json()["instance"] in log
        # Every 202 has its message and its outbox row; no refused request left either.
        stored = statuses.count(202)
        assert query(tmp_path, "SELECT count(*) FROM messages") == [(stored,)]
        assert query(tmp_path, "SELECT count(*) FROM outbox") == [(stored,)]
        # Space given back (the cap lifted), the same database accepts and delivers again.
        server = start_server(tmp_path, env={**FAST, "MISSIVE_SQLITE_MAX_PAGES": "0"})
        server.api_key, server.api_secret = account["api_key"], account["api_secret"]
        try:
            later = accepted(server, sms(receiver))
            wait_status(receiver, later, "delivered")
            uuids = [r[0] for r in query(tmp_path, "SELECT uuid FROM messages")]
            receiver.wait_for(lambda hooks: {h.json["message_uuid"] for h in hooks if h.json.get("status") == "delivered"}
                              >= set(uuids), timeout=20)
        finally:
            server.stop()


# -- 3. a provider that hangs -----------------------------------------------------------------

PAGE = "1122334455"
PROVIDER_TIMEOUT = 1.5


def test_a_hanging_provider_is_cut_off_at_the_timeout_and_retried(tmp_path: Path) -> None:
    with FakeGraph() as graph, WebhookReceiver() as receiver:
        # The first request of each never gets an answer: silence, or a byte at a time
        # (which a per-read timeout alone would never cut off). The second is answered.
        graph.script(Answer(hang=True), ok(), recipient="psid-hang")
        graph.script(Answer(dribble=0.2), ok(), recipient="psid-dribble")
        env = {**FAST, "MISSIVE_GRAPH_API_URL": graph.url, "MISSIVE_PROVIDER_TIMEOUT": str(PROVIDER_TIMEOUT)}
        server = provisioned_server(tmp_path, env=env)
        try:
            missive_json(tmp_path, "channel", "add", "messenger", "--page-id", PAGE, "--page-token", "token",
                         "--app-secret", "secret", "--verify-token", "verify", "--app", server.app_id)
            bearer = {"Authorization": f"Bearer {server.jwt()}"}

            def messenger(to: str) -> dict:
                return {"channel": "messenger", "message_type": "text", "to": to, "from": PAGE, "text": "hi",
                        "webhook_url": receiver.url("/status")}

            hung = {to: accepted(server, messenger(to), bearer) for to in ("psid-hang", "psid-dribble")}
            graph.wait_for(lambda requests: len(requests) >= 2)
            stalled_at = time.time()
            # Meanwhile another recipient on the link, and SMS on another link, go out at once.
            fine = accepted(server, messenger("psid-fine"), bearer)
            text = accepted(server, sms(receiver), bearer)
            for message_uuid in (fine, text):
                assert wait_status(receiver, message_uuid, "submitted", timeout=10).at < stalled_at + PROVIDER_TIMEOUT
            for to, message_uuid in hung.items():
                hook = wait_status(receiver, message_uuid, "submitted", timeout=10)
                first, second = graph.snapshot(to)
                # Cut off at the timeout (not before, and not much after), then tried again.
                assert PROVIDER_TIMEOUT - 0.1 <= second.at - first.at <= PROVIDER_TIMEOUT + 1.5, (to, second.at - first.at)
                assert hook.at >= second.at
                seen = read_message(server, message_uuid)
                assert [h["status"] for h in seen["history"]] == ["accepted", "submitted"]
            assert len(graph.abandoned) == 2  # Missive hung up on both
            assert graph.unused() == []
        finally:
            server.stop()


# -- 4. a slow webhook receiver -----------------------------------------------------------------

WEBHOOK_TIMEOUT = 2.0


def wait_webhooks(server: Server, uuids: list[str], done: Any, timeout: float = 15.0) -> list[dict]:
    """The status webhook of each message as GET /v1/messages shows it, once `done(all)`."""
    deadline = time.monotonic() + timeout
    while True:
        seen = [read_message(server, u)["webhooks"][0] for u in uuids]
        if done(seen):
            return seen
        assert time.monotonic() < deadline, seen
        time.sleep(0.1)


def test_a_slow_receiver_times_out_is_retried_and_holds_up_no_one(tmp_path: Path) -> None:
    slow = threading.Event()
    slow.set()
    slow_arrivals: list[float] = []

    def respond(hook: Hook) -> int | tuple[int, float]:
        if hook.path != "/slow":
            return 200
        slow_arrivals.append(time.monotonic())
        return (200, 2 * WEBHOOK_TIMEOUT) if slow.is_set() else 200  # past the timeout while `slow`

    with WebhookReceiver() as receiver:
        receiver.respond = respond
        # Four webhooks in flight in all, two per application: without the per-target bound
        # the slow application's four would take every slot until they time out.
        env = {**FAST, "MISSIVE_WEBHOOK_TIMEOUT": str(WEBHOOK_TIMEOUT), "MISSIVE_WEBHOOK_PER_TARGET": "2",
               "MISSIVE_WEBHOOK_MAX_IN_FLIGHT": "4", "MISSIVE_SHUTDOWN_TIMEOUT": "0.5"}
        server = provisioned_server(tmp_path, env=env)
        try:
            with server.client() as client:
                apps = {}
                for name in ("slow", "fast"):
                    body = {"name": name, "capabilities": {"messages": {"webhooks": {
                        "status_url": {"address": receiver.url(f"/{name}"), "http_method": "POST"}}}}}
                    response = client.post("/v2/applications", json=body, auth=server.basic)
                    assert response.status_code == 201, response.text
                    apps[name] = response.json()
            tokens = {name: [server.jwt(private_key=app["keys"]["private_key"], application_id=app["id"]) for _ in range(4)]
                      for name, app in apps.items()}
            # "0003": submitted and nothing more, one webhook per message.
            body = {"channel": "sms", "message_type": "text", "to": "447700900003", "from": "Acme", "text": "hi"}
            slow_sent = [accepted(server, body, {"Authorization": f"Bearer {t}"}) for t in tokens["slow"]]
            receiver.wait_for(lambda _: len(slow_arrivals) >= 2, timeout=10)
            started = time.monotonic()
            fast_sent = [accepted(server, body, {"Authorization": f"Bearer {t}"}) for t in tokens["fast"]]
            receiver.wait_for(lambda hooks: {h.json["message_uuid"] for h in hooks if h.path == "/fast"} == set(fast_sent),
                              timeout=10)
            fast_elapsed = time.monotonic() - started
            # The fast application got all of its webhooks while the slow one's first
            # attempts hung, and the slow one never had more than its two.
            assert fast_elapsed < WEBHOOK_TIMEOUT / 2, fast_elapsed
            assert len([t for t in slow_arrivals if t < slow_arrivals[0] + WEBHOOK_TIMEOUT]) == 2, slow_arrivals
            # Each slow attempt is cut off at the timeout, a failed attempt to retry.
            seen = wait_webhooks(server, slow_sent, lambda seen: all(h["attempts"] >= 1 for h in seen))
            assert all(h["state"] == "pending" and "Timeout" in h["last_error"] for h in seen), seen
            slow.clear()
            seen = wait_webhooks(server, slow_sent, lambda seen: all(h["state"] == "delivered" for h in seen))
            assert all(h["attempts"] >= 2 for h in seen), seen
            assert all(h["attempts"] == 1 for h in wait_webhooks(server, fast_sent, lambda seen: True))
        finally:
            server.stop()

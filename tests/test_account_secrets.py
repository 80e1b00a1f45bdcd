"""Secret rotation as the hosted Account API has it, and the account commands.

The official SDK (`vonage_account`) calls `/accounts/{api_key}/secrets` on its `api_host`
(`rest_host` is left at the vendor's here, so a call going there would fail), over
HTTPS with the server's self-signed certificate, as in tests/test_vonage_sdk.py.
"""

from __future__ import annotations

import asyncio
import gc
import re
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from vonage import Auth, HttpClientOptions, Vonage
from vonage_http_client.errors import AuthenticationError, ForbiddenError, NotFoundError

from missive import credentials
from missive.store import accounts as account_store
from missive.store.db import make_engine, migrate
from tests.harness import (
    Server,
    missive,
    missive_json,
    provisioned_server,
    query,
    settings_for,
    start_server,
)

ISO_SECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
SECRET_ERRORS = "https://developer.nexmo.com/api-errors/account/secret-management"
SMS = {"channel": "sms", "message_type": "text", "to": "447700900123", "from": "Acme", "text": "hi"}


def new_account(data_dir: Path) -> tuple[str, str]:
    """A fresh account (api_key, api_secret) on a data directory's database."""

    async def work() -> account_store.NewAccount:
        engine = make_engine(settings_for(data_dir))
        try:
            await migrate(engine)
            return await account_store.create_account(engine)
        finally:
            await engine.dispose()

    made = asyncio.run(work())
    return made.api_key, made.api_secret


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("missive-accounts")
    running = start_server(data_dir, "--tls-self-signed", scheme="https", env={"MISSIVE_DISPATCH_IN_SERVE": "false"})
    try:
        running.extra["cert"] = data_dir / "tls" / "missive-selfsigned.crt"
        running.extra["api_host"] = running.url.removeprefix("https://")
        yield running
    finally:
        gc.collect()
        running.stop()


@pytest.fixture
def http(tls_server: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[httpx.Client]:
    """An httpx client trusting the server's certificate; `requests` (the SDK) too."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_server.extra["cert"]))
    verify = ssl.create_default_context(cafile=str(tls_server.extra["cert"]))
    with httpx.Client(base_url=tls_server.url, verify=verify, timeout=30) as client:
        yield client


def sdk(server: Server, api_key: str, api_secret: str) -> Vonage:
    return Vonage(Auth(api_key=api_key, api_secret=api_secret), HttpClientOptions(api_host=server.extra["api_host"]))


def test_rotation_with_the_official_sdk(tls_server: Server, http: httpx.Client) -> None:
    api_key, first_secret = new_account(tls_server.data_dir)
    old = sdk(tls_server, api_key, first_secret).account
    [first] = old.list_secrets()
    assert ISO_SECONDS.match(first.created_at)

    created = old.create_secret("Rotated2Secret")
    assert old.http_client.last_response.status_code == 201
    assert ISO_SECONDS.match(created.created_at)
    assert {s.id for s in old.list_secrets()} == {first.id, created.id}
    assert old.get_secret(created.id) == created

    # The new secret works at once, beside the old one, then the old one is revoked.
    new = sdk(tls_server, api_key, "Rotated2Secret").account
    assert [s.id for s in new.list_secrets()] == [first.id, created.id]
    new.revoke_secret(first.id)
    assert new.http_client.last_response.status_code == 204
    with pytest.raises(AuthenticationError):
        old.list_secrets()
    assert http.post("/v1/messages", json=SMS, auth=(api_key, first_secret)).status_code == 401
    assert http.post("/v1/messages", json=SMS, auth=(api_key, "Rotated2Secret")).status_code == 202

    with pytest.raises(ForbiddenError) as last:
        new.revoke_secret(created.id)
    assert last.value.response.json()["type"] == f"{SECRET_ERRORS}#delete-last-secret"
    with pytest.raises(NotFoundError):
        new.get_secret(first.id)


def test_bodies_and_rules_over_http(tls_server: Server, http: httpx.Client) -> None:
    api_key, secret = new_account(tls_server.data_dir)
    auth = (api_key, secret)
    path = f"/accounts/{api_key}/secrets"

    listed = http.get(path, auth=auth)
    assert listed.status_code == 200
    [only] = listed.json()["_embedded"]["secrets"]
    assert listed.json()["_links"] == {"self": {"href": path}}
    assert only == {"_links": {"self": {"href": f"{path}/{only['id']}"}}, "id": only["id"], "created_at": only["created_at"]}

    for bad, why in (("Short1a", "8 to 25"), ("nodigitsHere", "a digit"), ("NOLOWER123", "lower-case"),
                     ("noupper123", "upper-case"), ("A1" + "a" * 24, "8 to 25")):
        refused = http.post(path, json={"secret": bad}, auth=auth)
        assert refused.status_code == 400, bad
        body = refused.json()
        assert body["type"] == f"{SECRET_ERRORS}#validation"
        assert body["title"] == "Bad Request"
        [param] = body["invalid_parameters"]
        assert param["name"] == "secret" and why in param["reason"], (bad, param)
    assert http.post(path, json={}, auth=auth).status_code == 400
    assert http.post(path, json={"secret": 12345678}, auth=auth).status_code == 400

    second = http.post(path, json={"secret": "Second2Secret"}, auth=auth)
    assert second.status_code == 201
    assert second.json()["_links"]["self"]["href"] == f"{path}/{second.json()['id']}"
    third = http.post(path, json={"secret": "Third3Secret"}, auth=auth)
    assert third.status_code == 403
    assert third.json()["type"] == f"{SECRET_ERRORS}#add-excess-secret"
    assert third.json()["detail"] == "Account reached maximum number [2] of allowed secrets"
    assert len(http.get(path, auth=auth).json()["_embedded"]["secrets"]) == 2

    unknown = http.get(f"{path}/no-such-id", auth=auth)
    assert unknown.status_code == 404
    assert unknown.json()["type"] == "https://developer.nexmo.com/api-errors#invalid-id"
    assert http.delete(f"{path}/no-such-id", auth=auth).status_code == 404

    assert http.delete(f"{path}/{only['id']}", auth=auth).status_code == 204
    assert http.get(path, auth=auth).status_code == 401  # the revoked secret, at once
    last = http.delete(f"{path}/{second.json()['id']}", auth=(api_key, "Second2Secret"))
    assert last.status_code == 403
    assert last.json()["title"] == "Secret Deletion Forbidden"


def test_another_accounts_key_is_the_same_401_as_an_unknown_one(tls_server: Server, http: httpx.Client) -> None:
    mine = new_account(tls_server.data_dir)
    theirs_key, theirs_secret = new_account(tls_server.data_dir)
    [theirs] = http.get(f"/accounts/{theirs_key}/secrets", auth=(theirs_key, theirs_secret)).json()["_embedded"]["secrets"]

    answers = [
        http.get(f"/accounts/{theirs_key}/secrets", auth=mine),
        http.get("/accounts/ffffffff/secrets", auth=mine),
        http.post(f"/accounts/{theirs_key}/secrets", json={"secret": "Stolen1Secret"}, auth=mine),
        http.get(f"/accounts/{theirs_key}/secrets/{theirs['id']}", auth=mine),
        http.delete(f"/accounts/{theirs_key}/secrets/{theirs['id']}", auth=mine),
        http.get(f"/accounts/{mine[0]}/secrets", auth=(mine[0], theirs_secret)),
    ]
    assert [a.status_code for a in answers] == [401] * len(answers)
    bodies = [{k: v for k, v in a.json().items() if k != "instance"} for a in answers]
    assert all(body == bodies[0] for body in bodies)
    # Their secret's id under my own key is simply not found.
    assert http.get(f"/accounts/{mine[0]}/secrets/{theirs['id']}", auth=mine).status_code == 404
    assert len(http.get(f"/accounts/{theirs_key}/secrets", auth=(theirs_key, theirs_secret))
               .json()["_embedded"]["secrets"]) == 1


def test_secret_commands(tmp_path: Path) -> None:
    api_key, first_secret = new_account(tmp_path)
    other_key, _ = new_account(tmp_path)
    listed = missive_json(tmp_path, "account", "list")
    assert [a["api_key"] for a in listed] == [api_key, other_key]
    assert all(set(a) == {"api_key", "created_at", "disabled"} and not a["disabled"] for a in listed)

    [first] = missive_json(tmp_path, "account", "secret", "list", "--api-key", api_key)
    created = missive_json(tmp_path, "account", "secret", "create", "--api-key", api_key)
    generated = created["api_secret"]
    assert 8 <= len(generated) <= 25 and re.search("[a-z]", generated) and re.search("[A-Z]", generated)
    assert re.search("[0-9]", generated)
    refused = missive(tmp_path, "account", "secret", "create", "--api-key", api_key, "--secret", "Another1Secret")
    assert refused.returncode == 1 and "revoke one first" in refused.stderr
    weak = missive(tmp_path, "account", "secret", "create", "--api-key", api_key, "--secret", "weak")
    assert weak.returncode == 1 and "a digit" in weak.stderr

    assert missive_json(tmp_path, "account", "secret", "revoke", first["id"], "--api-key", api_key)["revoked"]
    last = missive(tmp_path, "account", "secret", "revoke", created["id"], "--api-key", api_key)
    assert last.returncode == 1 and "last secret" in last.stderr
    assert [s["id"] for s in missive_json(tmp_path, "account", "secret", "list", "--api-key", api_key)] == [created["id"]]

    # Neither the secret nor the revoked one's hash is kept; the account's own columns
    # (what older versions read) hold the remaining secret, not the revoked one.
    [(salt, digest)] = query(tmp_path, "SELECT secret_salt, secret_hash FROM accounts WHERE api_key = :k", k=api_key)
    assert credentials.secret_matches(salt, generated, digest)
    assert not credentials.secret_matches(salt, first_secret, digest)
    server = start_server(tmp_path, env={"MISSIVE_DISPATCH_IN_SERVE": "false"})
    try:
        with server.client() as client:
            assert client.get(f"/accounts/{api_key}/secrets", auth=(api_key, generated)).status_code == 200
            assert client.get(f"/accounts/{api_key}/secrets", auth=(api_key, first_secret)).status_code == 401
    finally:
        server.stop()


def _message_state(data_dir: Path, uuid: str) -> tuple:
    [(status,)] = query(data_dir, "SELECT status FROM messages WHERE uuid = :u", u=uuid)
    codes = query(data_dir, "SELECT error_code, error_reason FROM message_events WHERE message_uuid = :u AND status = :s",
                  u=uuid, s=status)
    return status, codes


def test_disabled_account_gets_401_and_its_queued_message_is_rejected(tmp_path: Path) -> None:
    server = provisioned_server(tmp_path, env={"MISSIVE_DISPATCH_IN_SERVE": "false"})
    try:
        with server.client() as client:
            sent = client.post("/v1/messages", json=SMS, auth=server.basic)
            assert sent.status_code == 202
    finally:
        server.stop()
    uuid = sent.json()["message_uuid"]
    assert missive_json(tmp_path, "account", "disable", "--api-key", server.api_key)["disabled"] is True
    assert missive_json(tmp_path, "account", "list")[0]["disabled"] is True

    again = start_server(tmp_path)
    again.api_key, again.api_secret, again.app_id, again.private_key = (
        server.api_key, server.api_secret, server.app_id, server.private_key)
    try:
        with again.client() as client:
            for answer in (client.post("/v1/messages", json=SMS, auth=again.basic),
                           client.post("/v1/messages", json=SMS, headers=again.bearer()),
                           client.get(f"/accounts/{again.api_key}/secrets", auth=again.basic)):
                assert answer.status_code == 401
                assert answer.json()["detail"] == "You did not provide correct credentials."
            deadline = time.monotonic() + 20
            while _message_state(tmp_path, uuid)[0] == "accepted" and time.monotonic() < deadline:
                time.sleep(0.1)
            status, events = _message_state(tmp_path, uuid)
            assert status == "rejected"
            [(code, reason)] = events
            assert code == 1060 and "disabled" in reason
            assert not query(tmp_path, "SELECT 1 FROM outbox")
    finally:
        again.stop()

    assert missive_json(tmp_path, "account", "enable", "--api-key", server.api_key)["disabled"] is False
    third = start_server(tmp_path, env={"MISSIVE_DISPATCH_IN_SERVE": "false"})
    try:
        with third.client() as client:
            assert client.post("/v1/messages", json=SMS, auth=server.basic).status_code == 202
    finally:
        third.stop()


def test_delete_is_refused_while_messages_wait_unless_forced(tmp_path: Path) -> None:
    server = provisioned_server(tmp_path, env={"MISSIVE_DISPATCH_IN_SERVE": "false"})
    other_key, other_secret = new_account(tmp_path)
    try:
        with server.client() as client:
            assert client.post("/v1/messages", json=SMS, auth=server.basic).status_code == 202
            assert client.post("/v1/messages", json=SMS, auth=(other_key, other_secret)).status_code == 202
    finally:
        server.stop()
    missive_json(tmp_path, "number", "add", "447700900555", "--api-key", server.api_key)

    refused = missive(tmp_path, "account", "delete", "--api-key", server.api_key)
    assert refused.returncode == 1 and "1 message(s) waiting" in refused.stderr
    assert len(missive_json(tmp_path, "account", "list")) == 2

    assert missive_json(tmp_path, "account", "delete", "--api-key", server.api_key, "--force")["deleted"] is True
    assert [a["api_key"] for a in missive_json(tmp_path, "account", "list")] == [other_key]
    [(account_id,)] = query(tmp_path, "SELECT id FROM accounts")
    for table in ("account_secrets", "applications", "numbers", "messages"):
        assert {row[0] for row in query(tmp_path, f"SELECT account_id FROM {table}")} <= {account_id}, table
    assert len(query(tmp_path, "SELECT 1 FROM outbox")) == 1  # the other account's message
    assert missive(tmp_path, "account", "delete", "--api-key", server.api_key).returncode == 1

    # Nothing waiting: deleted without --force.
    emptied_key, _ = new_account(tmp_path)
    assert missive_json(tmp_path, "account", "delete", "--api-key", emptied_key)["deleted"] is True

"""Changing a channel link: `PATCH /v1/channels/{link_id}`.

A real server on 127.0.0.1. What is stored is read back from the database too: secrets
never come back over HTTP, yet the dispatcher must still find them after an update.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid as uuidlib
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from missive.channels.registry import secret_keys
from missive.secrets_box import is_sealed, keyring_of, open_config
from missive.store.db import make_engine
from missive.store.tables import channel_links
from tests.harness import Server, missive_json, provisioned_server, settings_for

MESSENGER = {"page_id": "1234", "page_token": "token-1", "app_secret": "secret-1", "verify_token": "verify-1"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = provisioned_server(tmp_path_factory.mktemp("channel-update"), env={"MISSIVE_DISPATCH_IN_SERVE": "false"})
    yield running
    running.stop()


@pytest.fixture(scope="module")
def other(server: Server) -> Server:
    """The same server seen as a second account, with its own application."""
    account = missive_json(server.data_dir, "account", "create")
    auth = (account["api_key"], account["api_secret"])
    with server.client() as client:
        app = client.post("/v2/applications", json={"name": "other"}, auth=auth)
    assert app.status_code == 201, app.text
    return dataclasses.replace(server, api_key=auth[0], api_secret=auth[1], app_id=app.json()["id"])


def create(server: Server, channel: str = "sms", kind: str = "sandbox", **extra: Any) -> dict:
    body = {"kind": kind, "channel": channel, "name": f"link-{uuidlib.uuid4().hex[:6]}", **extra}
    with server.client() as client:
        response = client.post("/v1/channels", json=body, auth=server.basic)
    assert response.status_code == 201, response.text
    return dict(response.json())


def patch(server: Server, link_id: str, body: Any, auth: tuple[str, str] | None = None) -> Any:
    with server.client() as client:
        return client.patch(f"/v1/channels/{link_id}", json=body, auth=auth or server.basic)


def read(server: Server, link_id: str) -> dict:
    with server.client() as client:
        response = client.get(f"/v1/channels/{link_id}", auth=server.basic)
    assert response.status_code == 200, response.text
    return dict(response.json())


def stored_config(server: Server, link_id: str) -> dict:
    """The config as stored, its secrets decrypted with the server's key (and checked to
    be stored encrypted: see tests/test_secrets_at_rest.py)."""
    async def query() -> dict:
        engine = make_engine(settings_for(server.data_dir))
        try:
            async with engine.connect() as conn:
                row = (await conn.execute(select(channel_links).where(channel_links.c.id == link_id))).one()
            for name in secret_keys(row.kind):
                assert name not in row.config or is_sealed(row.config[name]), name
            return open_config(keyring_of(engine), link_id, row.config, secret_keys(row.kind))
        finally:
            await engine.dispose()

    return asyncio.run(query())


def test_patch_changes_only_what_is_given(server: Server) -> None:
    link = create(server, tps=5, config={"delivered_after": 0.5, "read_after": 1.5})
    renamed = patch(server, link["id"], {"name": "renamed"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json() == {**link, "name": "renamed"}
    changed = patch(server, link["id"], {"tps": 20.5, "default": True, "application_id": server.app_id})
    assert changed.status_code == 200, changed.text
    expected = {**link, "name": "renamed", "tps": 20.5, "default": True, "application_id": server.app_id}
    assert changed.json() == expected == read(server, link["id"])
    # null clears tps and the application (account-wide again); default goes back off.
    cleared = patch(server, link["id"], {"tps": None, "application_id": None, "default": False})
    assert cleared.status_code == 200
    assert cleared.json() == {**expected, "tps": None, "application_id": None, "default": False}
    unchanged = patch(server, link["id"], {})
    assert unchanged.status_code == 200 and unchanged.json() == cleared.json() == read(server, link["id"])
    # A trailing slash is the same path.
    assert patch(server, link["id"] + "/", {"name": "slash"}).json()["name"] == "slash"


def test_config_is_merged_key_by_key(server: Server) -> None:
    link = create(server, "messenger", config={"delivered_after": 0.5, "read_after": 1.5})
    merged = patch(server, link["id"], {"config": {"read_after": 3}})
    assert merged.status_code == 200, merged.text
    assert merged.json()["config"] == {"delivered_after": 0.5, "read_after": 3}
    # A key set to null is removed (the kind's default applies again).
    dropped = patch(server, link["id"], {"config": {"delivered_after": None}})
    assert dropped.status_code == 200 and dropped.json()["config"] == {"read_after": 3}
    assert read(server, link["id"])["config"] == {"read_after": 3} == stored_config(server, link["id"])


def test_secrets_are_kept_unless_given_and_never_returned(server: Server) -> None:
    link = create(server, "messenger", kind="messenger", config=MESSENGER)
    assert link["config"] == {"page_id": "1234", "verify_token": "verify-1"}
    changed = patch(server, link["id"], {"config": {"verify_token": "verify-2"}, "name": "page"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["config"] == {"page_id": "1234", "verify_token": "verify-2"}
    assert stored_config(server, link["id"]) == {**MESSENGER, "verify_token": "verify-2"}
    # The view sent back as is (no secrets in it) keeps the secrets too.
    assert patch(server, link["id"], {"config": changed.json()["config"]}).status_code == 200
    assert stored_config(server, link["id"]) == {**MESSENGER, "verify_token": "verify-2"}
    rotated = patch(server, link["id"], {"config": {"page_token": "token-2"}})
    assert rotated.status_code == 200 and "page_token" not in rotated.json()["config"]
    assert "token-2" not in rotated.text
    assert stored_config(server, link["id"]) == {**MESSENGER, "verify_token": "verify-2", "page_token": "token-2"}


@pytest.mark.parametrize(
    ("kind", "body", "names"),
    [
        ("sandbox", {"config": {"delivered_after": -1}}, ["config.delivered_after"]),
        ("sandbox", {"config": {"delivered_after": "1"}}, ["config.delivered_after"]),
        ("sandbox", {"config": {"colour": "blue"}}, ["config.colour"]),
        ("sandbox", {"config": None}, ["config"]),
        ("sandbox", {"config": [1]}, ["config"]),
        ("messenger", {"config": {"page_token": None}}, ["config.page_token"]),
        ("messenger", {"config": {"page_id": ""}}, ["config.page_id"]),
        ("sandbox", {"name": ""}, ["name"]),
        ("sandbox", {"name": None}, ["name"]),
        ("sandbox", {"default": None}, ["default"]),
        ("sandbox", {"default": "yes"}, ["default"]),
        ("sandbox", {"tps": 0}, ["tps"]),
        ("sandbox", {"tps": "fast"}, ["tps"]),
        ("sandbox", {"application_id": "no-such-app"}, ["application_id"]),
        ("sandbox", {"kind": "messenger"}, ["kind"]),
        ("sandbox", {"channel": "messenger", "tps": -1}, ["channel", "tps"]),
        ("sandbox", {"surprise": 1}, ["surprise"]),
        ("sandbox", [{"name": "x"}], ["body"]),
    ],
    ids=["negative-delay", "string-delay", "unknown-config", "null-config", "config-not-object",
         "required-secret-removed", "empty-page-id", "empty-name", "null-name", "null-default",
         "default-not-bool", "zero-tps", "string-tps", "unknown-app", "kind", "channel-and-tps",
         "unknown-field", "not-an-object"],
)
def test_bad_updates_name_every_bad_field_and_change_nothing(server: Server, kind: str, body: Any, names: list[str]) -> None:
    config = MESSENGER if kind == "messenger" else {"delivered_after": 0.5}
    link = create(server, "messenger" if kind == "messenger" else "sms", kind=kind, config=config)
    response = patch(server, link["id"], body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert [p["name"] for p in response.json()["invalid_parameters"]] == names
    assert read(server, link["id"]) == link
    assert stored_config(server, link["id"]) == config


def test_unknown_or_other_accounts_link_is_not_found(server: Server, other: Server) -> None:
    link = create(server)
    for link_id, auth in ((str(uuidlib.uuid4()), server.basic), (link["id"], other.basic)):
        response = patch(server, link_id, {"name": "taken"}, auth)
        assert response.status_code == 404, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
    # Nor may a link point at another account's application.
    response = patch(server, link["id"], {"application_id": other.app_id})
    assert response.status_code == 422 and response.json()["invalid_parameters"][0]["name"] == "application_id"
    assert read(server, link["id"]) == link


def test_patch_wants_account_basic_auth(server: Server) -> None:
    link = create(server)
    with server.client() as client:
        for attempt in ({"headers": server.bearer()}, {"auth": (server.api_key, "wrong-secret")}, {}):
            response = client.patch(f"/v1/channels/{link['id']}", json={"name": "nope"}, **attempt)
            assert response.status_code == 401, (attempt, response.text)
            assert response.json()["title"] == "Unauthorized"
    assert read(server, link["id"]) == link

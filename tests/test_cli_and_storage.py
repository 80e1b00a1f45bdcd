"""The CLI, first-start bootstrap, migrations and what is (not) stored."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest
import sqlalchemy
from alembic import command

import missive as missive_pkg
from missive import credentials
from missive.store.db import alembic_config
from tests.harness import missive, missive_json, on_postgres, query, start_server, sync_engine

SMS = {"channel": "sms", "message_type": "text", "to": "447700900000", "from": "Acme", "text": "hi"}

# Migrations and first starts: each data directory starts with no database.
pytestmark = pytest.mark.empty_database


def _printed_credentials(log: str) -> tuple[str, str]:
    values = dict(line.split(": ", 1) for line in log.splitlines() if line.startswith(("api_key: ", "api_secret: ")))
    return values["api_key"], values["api_secret"]


def test_first_start_creates_and_prints_one_account_once(tmp_path: Path) -> None:
    first = start_server(tmp_path)
    try:
        api_key, api_secret = _printed_credentials(first.log())
        response = httpx.post(f"{first.url}/v1/messages", json=SMS, auth=(api_key, api_secret))
        assert response.status_code == 202
    finally:
        first.stop()
    second = start_server(tmp_path)
    try:
        assert "api_secret" not in second.log()
    finally:
        second.stop()
    assert query(tmp_path, "SELECT count(*) FROM accounts") == [(1,)]


def test_secrets_are_hashed_and_private_keys_never_stored(tmp_path: Path) -> None:
    account = missive_json(tmp_path, "account", "create")
    assert set(account) == {"api_key", "api_secret", "signature_secret"}
    app = missive_json(tmp_path, "app", "create", "--name", "shop", "--status-url", "https://example.com/s")
    assert set(app) == {"id", "name", "private_key"}
    if on_postgres():
        raw = repr(query(tmp_path, "SELECT * FROM accounts") + query(tmp_path, "SELECT * FROM applications")).encode()
    else:
        raw = b"".join(p.read_bytes() for p in tmp_path.glob("missive.db*"))
    assert account["api_secret"].encode() not in raw
    private_body = "".join(app["private_key"].splitlines()[1:-1])[:64]
    assert private_body.encode() not in raw
    [(salt, digest)] = query(tmp_path, "SELECT secret_salt, secret_hash FROM accounts")
    assert credentials.secret_matches(salt, account["api_secret"], digest)


def test_app_create_with_a_public_key_file(tmp_path: Path) -> None:
    missive_json(tmp_path, "account", "create")
    pair = credentials.new_rsa_keypair()
    key_file = tmp_path / "public.pem"
    key_file.write_text(pair.public_pem)
    app = missive_json(tmp_path, "app", "create", "--name", "own-key", "--public-key-file", str(key_file))
    assert "private_key" not in app
    [(stored,)] = query(tmp_path, "SELECT public_key FROM applications WHERE id = :id", id=app["id"])
    assert stored == pair.public_pem

    key_file.write_text("not a key")
    refused = missive(tmp_path, "app", "create", "--name", "bad", "--public-key-file", str(key_file), "--json")
    assert refused.returncode != 0
    assert "public key" in refused.stderr


def test_app_create_needs_an_account_choice_when_there_are_several(tmp_path: Path) -> None:
    missive_json(tmp_path, "account", "create")
    second = missive_json(tmp_path, "account", "create")
    ambiguous = missive(tmp_path, "app", "create", "--name", "x", "--json")
    assert ambiguous.returncode != 0 and "--api-key" in ambiguous.stderr
    chosen = missive_json(tmp_path, "app", "create", "--name", "x", "--api-key", second["api_key"])
    assert chosen["name"] == "x"


def test_account_update_sets_webhook_urls(tmp_path: Path) -> None:
    account = missive_json(tmp_path, "account", "create")
    missive_json(tmp_path, "account", "update", "--api-key", account["api_key"], "--status-url", "https://example.com/st")
    assert query(tmp_path, "SELECT status_url FROM accounts") == [("https://example.com/st",)]
    assert missive(tmp_path, "account", "update", "--api-key", "nope", "--status-url", "https://x.io").returncode == 1


@pytest.mark.skipif(on_postgres(), reason="an SQLite URL and its WAL mode")
def test_migrations_run_at_start_on_the_configured_url(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.db"
    result = missive(tmp_path, "migrate", env={"MISSIVE_DATABASE_URL": f"sqlite:///{elsewhere}"})
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(elsewhere) as db:
        newest = max(p.name[:4] for p in Path(missive_pkg.__file__).parent.glob("store/migrations/versions/0*.py"))
        assert db.execute("SELECT version_num FROM alembic_version").fetchone()[0] == newest
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"accounts", "applications", "messages", "message_events", "outbox", "channel_links", "timers", "webhook_outbox", "webhook_attempts", "inbound_messages", "provider_refs", "seen_events", "provider_users", "workflows", "numbers", "part_receipts", "unmatched_receipts", "inbound_parts"} <= tables
    assert not (tmp_path / "missive.db").exists()


@pytest.mark.skipif(not on_postgres(), reason="a PostgreSQL storage parameter")
def test_messages_pages_keep_room_for_status_updates(tmp_path: Path) -> None:
    # Fill factor 80: a status update can stay in its page without touching the indexes
    # (a HOT update; migration 0008).
    assert missive(tmp_path, "migrate").returncode == 0
    options = query(tmp_path, "SELECT reloptions FROM pg_class WHERE relname = 'messages'")
    assert options and "fillfactor=80" in (options[0][0] or []), options


def test_an_accept_writes_no_client_ref_index_entry_nor_outbox_rowid(tmp_path: Path) -> None:
    # Migration 0009, from a database at 0008 holding a queued message: the client_ref
    # index covers only messages that have one; on SQLite the outbox keeps its rows in
    # its primary key (WITHOUT ROWID), the queued one copied over.
    engine = sync_engine(tmp_path)
    try:
        with engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "0008")
            conn.execute(sqlalchemy.text(
                "INSERT INTO outbox (message_uuid, due_at, attempts, claimed_until, last_error) "
                "VALUES ('m-1', 12.5, 2, NULL, 'timeout')"))
    finally:
        engine.dispose()
    assert missive(tmp_path, "migrate").returncode == 0
    assert query(tmp_path, "SELECT message_uuid, due_at, attempts, last_error FROM outbox") == [("m-1", 12.5, 2, "timeout")]
    if on_postgres():
        (indexdef,) = query(tmp_path, "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_messages_client_ref'")[0]
        assert indexdef.endswith("WHERE (client_ref IS NOT NULL)"), indexdef
        return
    schema = dict(query(tmp_path, "SELECT name, sql FROM sqlite_master WHERE name IN ('outbox', 'ix_messages_client_ref', 'ix_outbox_due')"))
    assert schema["outbox"].rstrip().endswith("WITHOUT ROWID"), schema["outbox"]
    assert "WHERE client_ref IS NOT NULL" in schema["ix_messages_client_ref"]
    assert "ix_outbox_due" in schema
    # A lookup by client_ref still finds its index (`=` implies NOT NULL).
    plan = query(tmp_path, "EXPLAIN QUERY PLAN SELECT uuid FROM messages WHERE account_id = 'a' AND client_ref = 'r'")
    assert any("ix_messages_client_ref" in row[-1] for row in plan), plan


def test_the_newest_revision_read_from_file_names_is_alembic_s_one_head() -> None:
    # `migrate` skips Alembic (and its import) when the database is at newest_revision():
    # the files must name their revisions and follow each other in one line.
    from alembic.script import ScriptDirectory

    from missive.store.db import newest_revision

    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [newest_revision()]
    for revision in script.walk_revisions():
        assert Path(revision.path).name.startswith(f"{revision.revision}_")

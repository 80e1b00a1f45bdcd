"""Servers starting together on an empty database make one first account, not one each.

`missive serve` creates an account when there is none; the check and the insert are one
transaction under a lock (store/accounts.py). On PostgreSQL the servers share the
database; on SQLite they are processes on one file.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from missive.store.accounts import create_first_account
from missive.store.db import make_engine, migrate
from tests.harness import (
    PRIVATE_URLS_ALLOWED,
    Server,
    database_env,
    free_port,
    missive,
    query,
    settings_for,
)

SERVERS = 4
CREATED = "Created the first account"

# Servers and migrations on a database that starts with nothing.
pytestmark = pytest.mark.empty_database


def test_servers_starting_together_on_an_empty_database_make_one_account(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    # Migrated first (as an operator's `missive migrate` does): the servers then race
    # only on the account, not on the migration lock that would space them out.
    assert missive(data_dir, "migrate").returncode == 0
    servers: list[Server] = []
    try:
        for _ in range(SERVERS):
            port = free_port()
            log_path = data_dir / f"server-{port}.log"
            process = subprocess.Popen(
                [sys.executable, "-m", "missive", "serve", "--port", str(port)],
                env={**os.environ, "MISSIVE_DATA_DIR": str(data_dir), **database_env(data_dir), **PRIVATE_URLS_ALLOWED,
                     "MISSIVE_DISPATCH_IN_SERVE": "false"},
                stdout=log_path.open("w"), stderr=subprocess.STDOUT, text=True,
            )
            servers.append(Server(f"http://127.0.0.1:{port}", data_dir, process, log_path))
        for server in servers:
            # The account is made before the server listens.
            deadline = time.monotonic() + 60
            while server.process.poll() is None and time.monotonic() < deadline and not _listening(server):
                time.sleep(0.1)
            assert server.process.poll() is None, server.log()
    finally:
        for server in servers:
            server.stop()
    logs = [server.log() for server in servers]
    assert query(data_dir, "SELECT COUNT(*) FROM accounts") == [(1,)], logs
    assert sum(CREATED in log for log in logs) == 1, logs


def test_concurrent_first_account_calls_make_one(tmp_path: Path) -> None:
    # The same race in one process, on separate engines (separate connections), where
    # the check of each call runs before any insert: deterministic on both databases.
    async def run() -> list[object]:
        engines = [make_engine(settings_for(tmp_path)) for _ in range(SERVERS)]
        await migrate(engines[0])
        try:
            return await asyncio.gather(*(create_first_account(engine) for engine in engines))
        finally:
            for engine in engines:
                await engine.dispose()

    made = [account for account in asyncio.run(run()) if account is not None]
    assert len(made) == 1
    assert query(tmp_path, "SELECT COUNT(*) FROM accounts") == [(1,)]


def _listening(server: Server) -> bool:
    host, port = server.url.removeprefix("http://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False

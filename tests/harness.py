"""Start the real `missive` server as a subprocess on 127.0.0.1 and talk to it."""

from __future__ import annotations

import asyncio
import atexit
import functools
import hashlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import jwt
import sqlalchemy

from missive import credentials
from missive.config import Settings
from missive.store import accounts as account_store
from missive.store import applications as app_store
from missive.store.db import make_engine, migrate
from tests import cli_zygote

if TYPE_CHECKING:
    from tests.fakes.webhook_receiver import WebhookReceiver

# Set by `python -m tests.postgres run -- ...` (make test's second pass): every data
# directory then gets its own database on that cluster instead of an SQLite file.
POSTGRES_URL = os.environ.get("MISSIVE_TEST_POSTGRES_URL", "")
_databases: dict[Path, str] = {}


def on_postgres() -> bool:
    return bool(POSTGRES_URL)


# A test's data directory starts with its database already at the newest schema, copied
# from one that `missive migrate` made once per test process (SQLite: the file, into a
# data directory that exists and holds none yet; PostgreSQL: CREATE DATABASE ... TEMPLATE).
# Migrating each of ~200 directories a pass cost ~0.5-1.4 s apiece. The directories under
# `leave_empty` (tests of migrations and of first starts, marked `empty_database`) start
# with nothing, and Missive migrates them as it would any new database.
_empty: list[Path] = []
_seeded: set[Path] = set()


def leave_empty(directory: Path) -> None:
    """Data directories at or under `directory` start with no database."""
    _empty.append(Path(directory).resolve())


def _is_empty(key: Path) -> bool:
    return any(key.is_relative_to(root) for root in _empty)


@functools.cache
def _template() -> str:
    """A database file (SQLite) or database name (PostgreSQL) at the newest schema."""
    directory = Path(tempfile.mkdtemp(prefix="missive-template-"))
    leave_empty(directory)
    migrated = missive(directory, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    if POSTGRES_URL:
        return database_url(directory).rsplit("/", 1)[1]
    with sqlite3.connect(directory / "missive.db") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return str(directory / "missive.db")


def database_url(data_dir: Path) -> str:
    """The database a test's data directory uses: "" (SQLite in it) or a fresh PostgreSQL
    one; either at the newest schema unless under `leave_empty`."""
    key = Path(data_dir).resolve()
    if not POSTGRES_URL:
        if key not in _seeded:
            _seeded.add(key)
            if not _is_empty(key) and key.is_dir() and not (key / "missive.db").exists():
                shutil.copyfile(_template(), key / "missive.db")
        return ""
    if key not in _databases:
        template = "" if _is_empty(key) else f' TEMPLATE "{_template()}"'
        name = "t_" + hashlib.sha1(str(key).encode()).hexdigest()[:20]
        with sqlalchemy.create_engine(_sync(POSTGRES_URL), isolation_level="AUTOCOMMIT").connect() as conn:
            exists = conn.execute(sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
            if not exists:
                conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"{template}'))
        _databases[key] = POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    return _databases[key]


# The suite's webhook receivers and fakes listen on 127.0.0.1, which Missive refuses to send
# to by default: every server, CLI command and in-process Settings of the tests allows
# private URLs unless the test says otherwise (env={"MISSIVE_ALLOW_PRIVATE_URLS": "false"}).
PRIVATE_URLS_ALLOWED = {"MISSIVE_ALLOW_PRIVATE_URLS": "true"}


def database_env(data_dir: Path) -> dict[str, str]:
    url = database_url(data_dir)
    return {"MISSIVE_DATABASE_URL": url} if url else {}


def _sync(url: str) -> str:
    return "postgresql+psycopg://" + url.split("://", 1)[1]


def sync_engine(data_dir: Path) -> sqlalchemy.Engine:
    """A plain (blocking) engine on a data directory's database, for tests that look inside."""
    url = database_url(data_dir)
    if url:
        return sqlalchemy.create_engine(_sync(url), poolclass=sqlalchemy.pool.NullPool)
    return sqlalchemy.create_engine(f"sqlite:///{Path(data_dir) / 'missive.db'}", poolclass=sqlalchemy.pool.NullPool)


def settings_for(data_dir: Path, **overrides: object) -> Settings:
    """Settings of an in-process Missive on a data directory's database."""
    overrides.setdefault("allow_private_urls", True)
    return Settings(data_dir=data_dir, database_url=database_url(data_dir), **overrides)  # type: ignore[arg-type]


def query(data_dir: Path, sql: str, **params: object) -> list[tuple]:
    """Rows of one SQL statement on a data directory's database."""
    engine = sync_engine(data_dir)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sqlalchemy.text(sql), params)]
    finally:
        engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def missive(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run one `missive` CLI command against data_dir, in a process of its own, and
    return its result (forked from tests/cli_zygote.py: the same command, without paying
    for the imports again)."""
    full_env = {**os.environ, "MISSIVE_DATA_DIR": str(data_dir), **database_env(data_dir), **PRIVATE_URLS_ALLOWED,
                **(env or {})}
    return _ZYGOTE.run(list(args), full_env)


class _Zygote:
    """The process tests/cli_zygote.py, started at the first command, stopped at exit."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self._path = ""
        self._lock = threading.Lock()

    def _socket_path(self) -> str:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                directory = tempfile.mkdtemp(prefix="missive-cli-")
                self._path = os.path.join(directory, "cli.sock")
                self._process = subprocess.Popen([sys.executable, "-m", "tests.cli_zygote", self._path],
                                                 stdout=subprocess.PIPE, text=True)
                assert self._process.stdout is not None and self._process.stdout.readline() == "ready\n"
                atexit.register(self._process.kill)
            return self._path

    def run(self, args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(self._socket_path())
            conn.sendall(json.dumps({"args": args, "env": env}).encode())
            conn.shutdown(socket.SHUT_WR)
            try:
                answer = json.loads(cli_zygote.receive_all(conn))
            except TimeoutError:
                raise subprocess.TimeoutExpired(["missive", *args], timeout) from None
        return subprocess.CompletedProcess(["missive", *args], answer["returncode"], answer["stdout"], answer["stderr"])


_ZYGOTE = _Zygote()


def missive_json(data_dir: Path, *args: str) -> dict:
    result = missive(data_dir, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@dataclass
class Server:
    url: str
    data_dir: Path
    process: subprocess.Popen[str]
    log_path: Path
    api_key: str = ""
    api_secret: str = ""
    signature_secret: str = ""
    app_id: str = ""
    private_key: str = ""
    extra: dict = field(default_factory=dict)

    def client(self, **kwargs) -> httpx.Client:  # type: ignore[no-untyped-def]
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    @property
    def basic(self) -> tuple[str, str]:
        return (self.api_key, self.api_secret)

    def jwt(self, private_key: str | None = None, **claims: object) -> str:
        payload: dict[str, object] = {"application_id": self.app_id, "iat": int(time.time()), "jti": str(uuid.uuid4())}
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, private_key or self.private_key, algorithm="RS256")

    def bearer(self, **claims: object) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.jwt(**claims)}"}

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(
    data_dir: Path, *args: str, env: dict[str, str] | None = None, scheme: str = "http"
) -> Server:
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = data_dir / f"server-{port}.log"
    log_file = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "missive", "serve", "--port", str(port), *args],
        env={**os.environ, "MISSIVE_DATA_DIR": str(data_dir), **database_env(data_dir), **PRIVATE_URLS_ALLOWED, **(env or {})},
        stdout=log_file,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = Server(f"{scheme}://127.0.0.1:{port}", data_dir, process, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {server.log()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server did not start: {server.log()}")


def provision(data_dir: Path) -> tuple[dict, dict]:
    """One account and one application (with its private key), made in this process
    through the same store functions as `missive account create` / `missive app create`
    (the CLI's own tests run the CLI; a subprocess per fixture only cost the suite time)."""

    async def work() -> tuple[dict, dict]:
        engine = make_engine(settings_for(data_dir))
        try:
            await migrate(engine)
            account = await account_store.create_account(engine)
            pair = credentials.new_rsa_keypair()
            fields = app_store.ApplicationFields(name="tests", public_key=pair.public_pem, status_url=None, inbound_url=None)
            app = await app_store.create_application(engine, account.id, fields)
        finally:
            await engine.dispose()
        return ({"api_key": account.api_key, "api_secret": account.api_secret,
                 "signature_secret": account.signature_secret},
                {"id": app["id"], "private_key": pair.private_pem})

    Path(data_dir).mkdir(parents=True, exist_ok=True)
    return asyncio.run(work())


def provisioned_server(data_dir: Path, *args: str, env: dict[str, str] | None = None, scheme: str = "http") -> Server:
    """A server with one account and one application (with its private key) ready."""
    account, app = provision(data_dir)
    server = start_server(data_dir, *args, env=env, scheme=scheme)
    server.api_key, server.api_secret = account["api_key"], account["api_secret"]
    server.signature_secret = account["signature_secret"]
    server.app_id, server.private_key = app["id"], app["private_key"]
    return server


def send_webhooks_to(server: Server, receiver: WebhookReceiver) -> None:
    """Points the server's application's status and inbound webhooks at `receiver`'s
    /status and /inbound."""
    body = {"name": "tests", "capabilities": {"messages": {"webhooks": {
        "status_url": {"address": receiver.url("/status"), "http_method": "POST"},
        "inbound_url": {"address": receiver.url("/inbound"), "http_method": "POST"}}}}}
    with server.client() as client:
        assert client.put(f"/v2/applications/{server.app_id}", json=body, auth=server.basic).status_code == 200

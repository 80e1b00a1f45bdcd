"""Start the real `missive` server as a subprocess on 127.0.0.1 and talk to it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jwt


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def missive(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run one `missive` CLI command against data_dir and return its result."""
    return subprocess.run(
        [sys.executable, "-m", "missive", *args],
        env={**os.environ, "MISSIVE_DATA_DIR": str(data_dir), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


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
        env={**os.environ, "MISSIVE_DATA_DIR": str(data_dir), **(env or {})},
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


def provisioned_server(data_dir: Path, *args: str, env: dict[str, str] | None = None, scheme: str = "http") -> Server:
    """A server with one account and one application (with its private key) ready."""
    account = missive_json(data_dir, "account", "create")
    app = missive_json(data_dir, "app", "create", "--name", "tests", "--api-key", account["api_key"])
    server = start_server(data_dir, *args, env=env, scheme=scheme)
    server.api_key, server.api_secret = account["api_key"], account["api_secret"]
    server.signature_secret = account["signature_secret"]
    server.app_id, server.private_key = app["id"], app["private_key"]
    return server

"""Log safety: no secret in any log line at any level, and no log line that stops the server.

In process: the masking patterns take time linear in their input (a table of
100,000-character inputs built to make a backtracking pattern try the same characters
again and again), long values are cut with a marker and the rest of the line kept,
cutting never uncovers a secret, and libraries' lines below WARNING keep their template
but not their arguments.

Against a real `missive serve` at MISSIVE_LOG_LEVEL=debug with every library's debug lines
let through (MISSIVE_LOG_LIBRARY_LEVEL=debug): accounts, an application, links with
secrets, messages sent with Basic and with JWT, a signed webhook, wrong credentials,
then a request with a 60,000-character path and a 100,000-character header, during
which other requests are answered at once; and at the end no secret is in the server's
output.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from missive.observability.logs import make_handler
from missive.observability.redaction import VALUE_LIMIT, hide, mask
from tests.fakes.fake_graph import FakeGraph
from tests.harness import Server, leave_empty, missive_json, start_server

LONG = 100_000
BOUND = 0.5  # seconds; a quadratic pattern takes minutes on these inputs


# -- in process ----------------------------------------------------------------------------

HOSTILE = {
    "path segment": f"PATCH /v1/channels/{'a' * LONG}",
    "header value": "X-Api-Token: " + "b" * LONG,
    "bearer": "Authorization: Bearer " + "c" * LONG,
    "keys without values": "secret" * (LONG // 6),
    "quoted keys": '"secret"' * (LONG // 8),
    "key then spaces": "password" + " " * LONG,
    "jwt starts": "eyJ-" * (LONG // 4),
    "scheme starts": "a." * (LONG // 2),
    "url without host end": "postgres://" + "u" * LONG,
    "url without at": "postgres://user:" + "p" * LONG,
    "schemes": "bearer x=bearer " * (LONG // 16),
    "unclosed private key": "-----BEGIN PRIVATE KEY-----\n" + "M" * LONG,
    "private key ends": "-----BEGIN PRIVATE KEY-----" + "-----END AAAA" * (LONG // 13),
    "parameters": "[parameters: " * (LONG // 13),
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_the_patterns_take_time_linear_in_their_input(text: str) -> None:
    started = time.perf_counter()
    mask(text)  # uncut: the patterns themselves must not backtrack
    assert time.perf_counter() - started < BOUND


def _logged(emit: Callable[[logging.Logger], None], name: str = "missive.tests", log_format: str = "json",
            library_level: int = logging.NOTSET) -> list[str]:
    stream = io.StringIO()
    logger = logging.getLogger(name)
    # setLevel, not an assignment: it clears the loggers' cached answers to isEnabledFor,
    # which an earlier test's root level (caplog) may have left at "no" for DEBUG.
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.handlers = [make_handler(log_format, stream, library_level=library_level)]
    emit(logger)
    return stream.getvalue().splitlines()


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_long_value_is_cut_with_a_marker_and_the_rest_of_the_line_kept(log_format: str) -> None:
    path = "/v1/channels/" + "a" * LONG
    started = time.perf_counter()
    [line] = _logged(lambda log: log.info("unhandled error on %s %s [instance %s]", "PATCH", path, "f00d"),
                     log_format=log_format)
    assert time.perf_counter() - started < BOUND
    cut = len(path) - VALUE_LIMIT
    message = json.loads(line)["message"] if log_format == "json" else line.split(" missive.tests ", 1)[1]
    assert message.startswith("unhandled error on PATCH /v1/channels/aaa")
    assert message.endswith(f"aaa...[{cut} characters cut] [instance f00d]")
    assert len(line) < 2 * VALUE_LIMIT


def test_cutting_a_line_uncovers_no_secret() -> None:
    key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
    known = "Kn0wnSecretValue-4f2a"
    hide(known)
    cases = {
        # The value runs past the cut: its head is masked, its tail is gone.
        "value": ("password=" + "v" * LONG, "v" * 10),
        # A known value that starts before the cut and ends after it.
        "known value": ("x" * (VALUE_LIMIT - 5) + known, known[:5]),
        # A private key whose BEGIN line is cut: its lines that follow are still masked.
        "private key": ("y" * LONG + key, "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"),
        # SQLAlchemy's parameters, cut in the middle of the list.
        "parameters": ("[parameters: ('" + "z" * LONG + "', 'sig-secret-1')]", "sig-secret-1"),
    }
    for name, (text, secret) in cases.items():
        out = "\n".join(_logged(lambda log, text=text: log.info("%s", text)))
        assert len(out) < 2 * VALUE_LIMIT and secret not in out, name


def test_libraries_lines_below_warning_keep_their_template_not_their_arguments() -> None:
    row = ("1bb6d2a3", "d2d9e0f5", "rOOQRRVjh8anSyx2ItisxErrSzVpl9KbJlFL8WOACPI")

    def emit(log: logging.Logger) -> None:
        log.debug("operation %s completed", row)
        log.warning("pool: %s", "kept (masked), password=hunter22")

    debug, warning = (json.loads(line)["message"] for line in _logged(emit, "aiosqlite"))
    assert debug == "operation %s completed [arguments not logged]"
    assert warning == "pool: kept (masked), password=***"
    # And with their level set to INFO (the default), their debug lines are left out.
    [kept] = _logged(emit, "aiosqlite", library_level=logging.INFO)
    assert json.loads(kept)["level"] == "WARNING"
    # Missive's own debug lines keep their (masked) arguments, whatever the library level.
    [ours] = _logged(lambda log: log.debug("bound %s", "acme"), library_level=logging.INFO)
    assert json.loads(ours)["message"] == "bound acme"


# -- a whole server at debug ---------------------------------------------------------------

PAGE, PAGE_TOKEN, APP_SECRET, VERIFY_TOKEN = "5566778899", "EAAPageTok-log-7c6b5a", "AppSecr-log-2d1e0f", "Verify-log-9a8b7c"
METRICS_TOKEN = "metrics-log-3e4f5a6b"
DEBUG = {
    "MISSIVE_LOG_LEVEL": "debug",
    "MISSIVE_LOG_LIBRARY_LEVEL": "debug",
    "MISSIVE_METRICS_TOKEN": METRICS_TOKEN,
    "MISSIVE_POLL_INTERVAL": "0.05",
    "MISSIVE_SANDBOX_DELIVERED_AFTER": "0.05",
    "MISSIVE_SANDBOX_READ_AFTER": "0.1",
}


@dataclass
class Live:
    server: Server
    first: dict[str, str]  # the account `serve` made and printed once
    secrets: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data_dir = tmp_path_factory.mktemp("log_safety")
    # A real first start, its migrations logged at debug too: no database made beforehand.
    leave_empty(data_dir)
    with FakeGraph() as graph:
        server = start_server(data_dir, env={**DEBUG, "MISSIVE_GRAPH_API_URL": graph.url})
        try:
            yield _run(server, data_dir, graph)
        finally:
            server.stop()


def _run(server: Server, data_dir: Path, graph: FakeGraph) -> Live:
    printed = dict(line.split(": ", 1) for line in server.log().splitlines()
                   if line.startswith(("api_key: ", "api_secret: ", "signature_secret: ")))
    account = missive_json(data_dir, "account", "create")
    server.api_key, server.api_secret = account["api_key"], account["api_secret"]
    live = Live(server, printed, [account["api_secret"], account["signature_secret"], PAGE_TOKEN, APP_SECRET,
                                  VERIFY_TOKEN, METRICS_TOKEN])
    with server.client(auth=server.basic) as client:
        app = client.post("/v2/applications", json={"name": "logs"})
        assert app.status_code == 201, app.text
        server.app_id, server.private_key = app.json()["id"], app.json()["keys"]["private_key"]
        live.secrets += [line for line in server.private_key.splitlines()[1:-1] if len(line) > 20]
        for link in ({"kind": "sandbox", "channel": "sms", "name": "sandbox", "default": True, "config": {}},
                     {"kind": "messenger", "channel": "messenger", "name": "page", "default": True,
                      "config": {"page_id": PAGE, "page_token": PAGE_TOKEN, "app_secret": APP_SECRET,
                                 "verify_token": VERIFY_TOKEN}}):
            assert client.post("/v1/channels", json=link).status_code == 201
        sent = [client.post("/v1/messages", json=body).json()["message_uuid"] for body in (
            {"channel": "sms", "message_type": "text", "to": "447700900001", "from": "Acme", "text": "basic"},
            {"channel": "messenger", "message_type": "text", "to": "psid-1", "from": PAGE, "text": "page"})]
        by_jwt = client.post("/v1/messages", auth=None, headers=server.bearer(), json={
            "channel": "sms", "message_type": "text", "to": "447700900002", "from": "Acme", "text": "jwt"})
        assert by_jwt.status_code == 202, by_jwt.text
        graph.wait_for(lambda requests: len(requests) >= 1)
        for message_uuid in sent:
            assert client.get(f"/v1/messages/{message_uuid}").status_code == 200
        assert client.get("/v1/messages", auth=None, params={"api_key": server.api_key,
                                                             "api_secret": server.api_secret}).status_code == 200
        assert client.get("/v1/channels", auth=(server.api_key, server.api_secret + "x")).status_code == 401
        assert client.get("/metrics", auth=None, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).status_code == 200
        event = json.dumps({"object": "page", "entry": [{"id": PAGE, "time": 1700000000000, "messaging": [
            {"sender": {"id": "psid-1"}, "recipient": {"id": PAGE}, "timestamp": 1700000000000,
             "message": {"mid": "m_logs", "text": "hello"}}]}]}).encode()
        signature = hmac.new(APP_SECRET.encode(), event, hashlib.sha256).hexdigest()
        assert client.post("/inbound/messenger", auth=None, content=event, headers={
            "content-type": "application/json", "x-hub-signature-256": f"sha256={signature}"}).status_code == 200
        assert client.get("/inbound/messenger", auth=None, params={
            "hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "42"}).text == "42"
    return live


def _raw(server: Server, head: str, body: bytes = b"") -> bytes:
    """What the server answers to `head` and `body` (httpx refuses URLs this long); with
    a body shorter than its Content-Length, the connection is closed before any answer."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        if body:
            time.sleep(0.2)
            return b""
        return sock.recv(64)


def test_a_request_with_60000_characters_in_its_path_and_100000_in_a_header_does_not_stop_the_server(live: Live) -> None:
    server = live.server
    path = "/v1/channels/" + "a" * 60_000  # the longest uvicorn takes is under 64 KiB
    basic = "Basic " + base64.b64encode(f"{server.api_key}:{server.api_secret}".encode()).decode()
    head = f"{path} HTTP/1.1\r\nHost: x\r\nAuthorization: {basic}\r\nX-Filler: {'b' * LONG}\r\n"
    # Its body cut short: Missive logs the path of a request whose client hung up.
    _raw(server, f"PATCH {head}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n", b"{")
    with httpx.Client(base_url=server.url, timeout=5) as client:
        for _ in range(10):
            started = time.perf_counter()
            assert client.get("/health").status_code == 200
            assert time.perf_counter() - started < 1.0
            time.sleep(0.05)
    assert _raw(server, f"GET {head}Connection: close\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    [line] = [line for line in server.log().splitlines() if "client disconnected" in line]
    assert "on PATCH /v1/channels/aaa" in line and f"aaa...[{len(path) - VALUE_LIMIT} characters cut]" in line


def test_no_secret_in_any_line_at_debug(live: Live) -> None:
    """After everything above. `serve` prints the account it made, once, to its operator."""
    log = live.server.log()
    assert '"level":"DEBUG"' in log and '"logger":"httpcore.' in log and len(log) > 10_000
    for secret in live.secrets:
        assert secret not in log, secret
    for secret in (live.first["api_secret"], live.first["signature_secret"]):
        assert log.count(secret) == 1, secret

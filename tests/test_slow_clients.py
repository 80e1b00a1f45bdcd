"""Slow clients on the real server: a request head or body sent too slowly is cut off at
its deadline (MISSIVE_REQUEST_HEADER_TIMEOUT, MISSIVE_REQUEST_BODY_TIMEOUT), with a 408
problem when part of the request came, while other clients are served meanwhile."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.harness import Server, provisioned_server

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 2.0
# How late past its deadline a connection may be closed on a loaded machine.
SLACK = 3.0
SMS = {"channel": "sms", "message_type": "text", "to": "447700900000", "from": "Acme", "text": "hi"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = provisioned_server(
        tmp_path_factory.mktemp("slow"),
        env={
            "MISSIVE_DISPATCH_IN_SERVE": "false",
            "MISSIVE_REQUEST_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
            "MISSIVE_REQUEST_BODY_TIMEOUT": str(BODY_TIMEOUT),
        },
    )
    yield running
    running.stop()


def connect(server: Server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=BODY_TIMEOUT + SLACK + 5)


def head(server: Server, content_length: int) -> bytes:
    token = base64.b64encode(f"{server.api_key}:{server.api_secret}".encode()).decode()
    return (f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n").encode()


def read_until_closed(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a socket timeout,
    when it never does, fails the test)."""
    received = b""
    while chunk := conn.recv(65536):
        received += chunk
    return received


def assert_408(answer: bytes, detail: str) -> None:
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout", answer
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in headers.lower(), answer
    assert b"connection: close" in headers.lower(), answer
    problem = json.loads(body)
    assert set(problem) == {"type", "title", "detail", "instance"}, problem
    assert problem["title"] == "Request Timeout" and detail in problem["detail"], problem


def served_meanwhile(server: Server) -> None:
    with httpx.Client(timeout=10) as client:
        response = client.post(f"{server.url}/v1/messages", json=SMS, auth=server.basic)
    assert response.status_code == 202, response.text


def test_a_head_that_stalls_is_answered_408_and_closed(server: Server) -> None:
    with connect(server) as conn:
        started = time.monotonic()
        conn.sendall(head(server, 10)[:40])  # the request line and part of a header
        served_meanwhile(server)
        answer = read_until_closed(conn)
        waited = time.monotonic() - started
    assert HEADER_TIMEOUT - 0.1 <= waited <= HEADER_TIMEOUT + SLACK, waited
    assert_408(answer, "headers were not received within 1 seconds")


def test_a_head_sent_a_byte_at_a_time_is_cut_off_at_the_deadline(server: Server) -> None:
    """The deadline is for the whole head, not between two reads."""
    data = head(server, 10)
    with connect(server) as conn:
        started = time.monotonic()
        try:
            for byte in data:
                conn.sendall(bytes([byte]))
                time.sleep(0.1)
        except OSError:  # the server closed the connection under the sender
            pass
        answer = read_until_closed(conn)
        waited = time.monotonic() - started
    assert waited <= HEADER_TIMEOUT + SLACK < len(data) * 0.1, waited
    assert_408(answer, "headers were not received")


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(server: Server) -> None:
    with connect(server) as conn:
        started = time.monotonic()
        served_meanwhile(server)
        answer = read_until_closed(conn)
        waited = time.monotonic() - started
    assert answer == b""
    assert HEADER_TIMEOUT - 0.1 <= waited <= HEADER_TIMEOUT + SLACK, waited


def test_blank_lines_do_not_keep_an_idle_connection_open(server: Server) -> None:
    with connect(server) as conn:
        started = time.monotonic()
        try:
            for _ in range(int((HEADER_TIMEOUT + SLACK) / 0.2) + 5):
                conn.sendall(b"\r\n")
                time.sleep(0.2)
        except OSError:
            pass
        read_until_closed(conn)
        waited = time.monotonic() - started
    assert waited <= HEADER_TIMEOUT + SLACK, waited


def test_a_body_that_stalls_is_answered_408_and_closed(server: Server) -> None:
    body = json.dumps(SMS).encode()
    with connect(server) as conn:
        conn.sendall(head(server, len(body)) + body[:20])
        started = time.monotonic()
        served_meanwhile(server)
        answer = read_until_closed(conn)
        waited = time.monotonic() - started
    assert BODY_TIMEOUT - 0.2 <= waited <= BODY_TIMEOUT + SLACK, waited
    assert_408(answer, "body was not received within 2 seconds")


def test_a_body_sent_slowly_in_pieces_is_cut_off_at_the_deadline(server: Server) -> None:
    body = json.dumps(SMS).encode()
    with connect(server) as conn:
        conn.sendall(head(server, len(body)))
        started = time.monotonic()
        try:
            for byte in body:
                conn.sendall(bytes([byte]))
                time.sleep(0.1)
        except OSError:
            pass
        answer = read_until_closed(conn)
        waited = time.monotonic() - started
    assert waited <= BODY_TIMEOUT + SLACK < len(body) * 0.1, waited
    assert_408(answer, "body was not received")


def test_a_kept_alive_connection_gets_its_deadline_for_each_request(server: Server) -> None:
    """A body in a separate write, well within its deadline, is served; the next request
    on the same connection has a deadline of its own."""
    body = json.dumps(SMS).encode()
    with connect(server) as conn:
        conn.sendall(head(server, len(body)))
        time.sleep(0.3)
        conn.sendall(body)
        first = conn.recv(65536)
        assert first.startswith(b"HTTP/1.1 202 "), first
        time.sleep(0.2)
        conn.sendall(head(server, len(body))[:30])
        started = time.monotonic()
        answer = read_until_closed(conn)
        waited = time.monotonic() - started
    assert waited <= HEADER_TIMEOUT + SLACK, waited
    assert_408(answer, "headers were not received")


def test_the_server_logs_the_cut_off_at_info(server: Server) -> None:
    before = len(server.log())
    with connect(server) as conn:
        conn.sendall(head(server, 100) + b"{")
        read_until_closed(conn)
    time.sleep(0.2)
    written = server.log()[before:]
    assert "request body not received within 2s on POST /v1/messages" in written, written
    assert "Traceback" not in written and '"ERROR"' not in written, written


def test_pipelined_requests_are_all_answered(server: Server) -> None:
    """Requests sent before the answer to the previous one wait at the server's pace,
    and are not cut off for it."""
    body = json.dumps(SMS).encode()
    request = head(server, len(body)) + body
    with connect(server) as conn:
        conn.sendall(request * 3 + request[:30])
        received = b""
        while received.count(b"HTTP/1.1 ") < 4:
            chunk = conn.recv(65536)
            assert chunk, received
            received += chunk
        received += read_until_closed(conn)
    assert received.count(b"HTTP/1.1 202 ") == 3, received
    assert_408(received[received.index(b"HTTP/1.1 408 "):], "headers were not received")

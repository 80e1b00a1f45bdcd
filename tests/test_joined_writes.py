"""Answers leave in one write (missive/api/joined_writes.py), and none is held back."""

from __future__ import annotations

import asyncio
import json
import socket
from urllib.parse import urlsplit

from missive.api.joined_writes import _JoinedWrites
from tests.harness import Server


class _Recorder(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def test_a_head_waits_for_its_body_and_interim_answers_do_not_wait() -> None:
    recorder = _Recorder()
    joined = _JoinedWrites(recorder)
    joined.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert recorder.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    joined.write(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n")
    assert len(recorder.writes) == 1
    joined.write(b"{}")
    assert recorder.writes[1] == b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}"
    # A head without a body write goes at the end of the answer, or at the close.
    joined.write(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n")
    joined.flush()
    joined.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    joined.close()
    assert recorder.writes[2:] == [b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", b"HTTP/1.1 400 Bad Request\r\n\r\n"]
    assert joined.is_closing() is True  # the rest is the transport's own


def _exchange(sock: socket.socket, request: bytes) -> bytes:
    sock.sendall(request)
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
    if request.startswith(b"HEAD "):
        length = 0
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_head_then_send_on_one_keep_alive_connection(server: Server) -> None:
    url = urlsplit(server.url)
    body = json.dumps({"channel": "sms", "message_type": "text", "to": "447700900000", "from": "Acme", "text": "hi"}).encode()
    auth = server.bearer()["Authorization"].encode()
    post = (b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth
            + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        head = _exchange(sock, b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        sent = _exchange(sock, post)
        assert sent.startswith(b"HTTP/1.1 202 ")
        assert b'"message_uuid"' in sent
        # The 202's head and body came in one segment.
        sock.sendall(post)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 202 ") and first.endswith(b"}"), first

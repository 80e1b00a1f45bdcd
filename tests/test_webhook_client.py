"""The webhook sender's HTTP client against a raw HTTP/1.1 peer on a real socket: answers
written byte by byte as receivers write them (content-length, chunked, to the close),
keep-alive reuse, receivers that hang up, and the URL guard in front of every connect."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from missive.url_guard import AddressGuard, RefusedAddress
from missive.url_safety import UrlPolicy, parse_networks
from missive.webhooks.http_client import BODY_LIMIT, HttpError, WebhookClient

LOOPBACK = UrlPolicy(allowed_networks=parse_networks("127.0.0.0/8, ::1/128"))
STRICT = UrlPolicy()

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class RawPeer:
    """An HTTP/1.1 server that reads each request whole and writes what `answer` returns;
    after the answer it keeps the connection open unless `close_after` says not."""

    def __init__(self, answer: Callable[[int], bytes] = lambda n: OK, close_after: bool = False) -> None:
        self.answer = answer
        self.close_after = close_after
        self.connections = 0
        self.requests: list[bytes] = []
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def __aenter__(self) -> RawPeer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.hang_up_all()
        self._server.close()
        await self._server.wait_closed()

    def hang_up_all(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                self.requests.append(head + await reader.readexactly(length))
                writer.write(self.answer(len(self.requests)))
                await writer.drain()
                if self.close_after:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def client(policy: UrlPolicy = LOOPBACK, timeout: float = 2.0) -> WebhookClient:
    return WebhookClient(AddressGuard(policy), timeout, limit=8)


def test_posts_the_body_with_its_headers_and_reuses_the_connection() -> None:
    async def scenario() -> None:
        async with RawPeer() as peer:
            http = client()
            url = f"http://127.0.0.1:{peer.port}/hooks/status?x=1"
            for _ in range(3):
                answer = await http.post(url, b'{"a":1}', {"Content-Type": "application/json", "Authorization": "Bearer t"})
                assert answer.status == 200
            await http.close()
        assert peer.connections == 1
        first = peer.requests[0]
        assert first.startswith(b"POST /hooks/status?x=1 HTTP/1.1\r\n")
        assert f"Host: 127.0.0.1:{peer.port}\r\n".encode() in first
        assert b"Content-Length: 7\r\n" in first and b"Authorization: Bearer t\r\n" in first
        assert first.endswith(b'\r\n\r\n{"a":1}')

    run(scenario)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.1 500 Oops\r\nContent-Length: 5\r\n\r\nerror",
    ],
    ids=["no-body", "chunked", "error-status"],
)
def test_answers_of_every_framing_end_where_they_end(answer: bytes) -> None:
    async def scenario() -> None:
        async with RawPeer(lambda n: answer) as peer:
            http = client()
            statuses = [(await http.post(f"http://127.0.0.1:{peer.port}/", b"{}", {})).status for _ in range(2)]
            await http.close()
        assert statuses == [int(answer.split()[1])] * 2
        assert peer.connections == 1  # the answer's end was found: the connection was reused

    run(scenario)


def test_an_answer_ended_by_closing_the_connection_counts() -> None:
    async def scenario() -> None:
        async with RawPeer(lambda n: b"HTTP/1.0 200 OK\r\n\r\nbody until close", close_after=True) as peer:
            http = client()
            answers = [await http.post(f"http://127.0.0.1:{peer.port}/", b"{}", {}) for _ in range(2)]
            await http.close()
        assert [a.status for a in answers] == [200, 200]
        assert peer.connections == 2

    run(scenario)


def test_a_kept_connection_the_receiver_closed_is_replaced_without_a_failed_attempt() -> None:
    async def scenario() -> None:
        async with RawPeer() as peer:
            http = client()
            url = f"http://127.0.0.1:{peer.port}/"
            assert (await http.post(url, b"{}", {})).status == 200
            peer.hang_up_all()  # the receiver's idle timeout
            await asyncio.sleep(0.05)
            assert (await http.post(url, b"{}", {})).status == 200
            await http.close()
        assert peer.connections == 2

    run(scenario)


def test_a_redirect_is_an_answer_with_its_location() -> None:
    async def scenario() -> None:
        async with RawPeer(lambda n: b"HTTP/1.1 307 Go\r\nLocation: http://10.0.0.1/x\r\nContent-Length: 0\r\n\r\n") as peer:
            http = client()
            answer = await http.post(f"http://127.0.0.1:{peer.port}/", b"{}", {})
            await http.close()
        assert (answer.status, answer.location) == (307, "http://10.0.0.1/x")
        assert len(peer.requests) == 1  # not followed

    run(scenario)


def test_a_long_body_is_cut_off_after_the_status() -> None:
    async def scenario() -> None:
        huge = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (4 * BODY_LIMIT) + b"x" * (4 * BODY_LIMIT)
        async with RawPeer(lambda n: huge) as peer:
            http = client()
            answer = await http.post(f"http://127.0.0.1:{peer.port}/", b"{}", {})
            assert answer.status == 200
            assert (await http.post(f"http://127.0.0.1:{peer.port}/", b"{}", {})).status == 200
            await http.close()
        assert peer.connections == 2  # the cut connection was not reused

    run(scenario)


def test_garbage_and_silence_are_failed_attempts() -> None:
    async def scenario() -> None:
        async with RawPeer(lambda n: b"SMTP ready\r\n\r\n") as garbage:
            with pytest.raises(HttpError):
                await client().post(f"http://127.0.0.1:{garbage.port}/", b"{}", {})
        async with RawPeer(lambda n: b"") as silent:
            with pytest.raises(TimeoutError):
                await client(timeout=0.3).post(f"http://127.0.0.1:{silent.port}/", b"{}", {})

    run(scenario)


def test_host_names_connect_only_through_the_guard() -> None:
    async def scenario() -> None:
        async with RawPeer() as peer:
            with pytest.raises(RefusedAddress):
                await client(STRICT).post(f"http://localhost:{peer.port}/", b"{}", {})
            assert peer.connections == 0
            answer = await client(LOOPBACK).post(f"http://localhost:{peer.port}/", b"{}", {})
            assert answer.status == 200 and peer.connections == 1

    run(scenario)

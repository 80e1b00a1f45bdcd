"""The webhook sender's HTTP/1.1 client: one POST at a time per keep-alive connection,
connections pooled per (scheme, host, port), every address checked by the URL guard.

Written here rather than taken from aiohttp: webhooks are a hot path (two per message),
and aiohttp's general client (cookie jar, payload registry, tracing, request objects)
spent about a fifth of a dispatcher's CPU on them, for a request whose answer is only a
status code. What is used is small: the request is a fixed set of headers and a body;
the answer is parsed by httptools (uvicorn's parser, already installed); TLS and
connecting are asyncio's.

    post(url, body, headers) -> Answer(status, location)

- Only addresses the guard allows are connected to: a host name is resolved through
  `AddressGuard.addresses` (pinned: the connection goes to the checked address).
- `timeout` bounds the whole attempt: waiting for a connection slot, connecting,
  sending, the answer and its body.
- Redirects are not followed; the body is read up to BODY_LIMIT bytes (so that the
  connection can be reused) and dropped, with the connection, past it.
- A kept-alive connection that the receiver closed meanwhile fails before any answer:
  the request is then sent once more on a new connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from dataclasses import dataclass

import httptools
from yarl import URL

from missive.url_guard import AddressGuard

# The most of a receiver's answer body read; a longer body is dropped with its connection.
BODY_LIMIT = 64 * 1024
# Idle connections kept per receiver; more are closed when they come back.
IDLE_PER_HOST = 256


class HttpError(Exception):
    """An attempt that got no usable answer: the connection failed or the answer was not HTTP."""


@dataclass(frozen=True)
class Answer:
    status: int
    location: str | None = None


class _Connection(asyncio.Protocol):
    """One connection and the answer it is waiting for (httptools calls the on_* methods)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self._status = 0
        self._location: str | None = None
        self._received = 0
        self._keep_alive = False
        self.closed = False

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            if self._status:  # an answer whose body ends with the connection
                self._waiter.set_result(self.answer)
            else:
                self._waiter.set_exception(HttpError(f"connection closed: {exc or 'by the receiver'}"))

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # nothing was asked: this connection is not in a state to reuse
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"not an HTTP answer: {exc}"))

    # -- httptools --

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"location":
            self._location = value.decode("latin-1")[:200]

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self._received += len(body)
        if self._received > BODY_LIMIT and self._waiter is not None and not self._waiter.done():
            # The status is the answer; the rest of a long body is not read.
            self._waiter.set_result(self.answer)
            self.close()

    def on_message_complete(self) -> None:
        self._keep_alive = self._parser.should_keep_alive()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(self.answer)

    # -- use --

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self.close()

    @property
    def answer(self) -> Answer:
        return Answer(self._status, self._location)

    @property
    def answered(self) -> bool:
        """Whether the answer to the current request has begun."""
        return self._status != 0

    @property
    def reusable(self) -> bool:
        return not self.closed and self._keep_alive and self._waiter is not None and self._waiter.done()

    async def exchange(self, request: bytes) -> Answer:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._status, self._location, self._received, self._keep_alive = 0, None, 0, False
        self.transport.write(request)
        return await self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


Key = tuple[str, str, int]


class _Attempt:
    """The connection a request is on, for the answer to stand when the deadline hits
    during its body."""

    connection: _Connection | None = None


class WebhookClient:
    def __init__(self, guard: AddressGuard, timeout: float, limit: int) -> None:
        self._guard = guard
        self._timeout = timeout
        self._slots = asyncio.Semaphore(limit)
        self._idle: dict[Key, list[_Connection]] = {}
        self._tls = ssl.create_default_context()

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        """POST `body` to `url`; the answer's status (and Location). TimeoutError past the
        timeout; HttpError, OSError (RefusedAddress included) or ssl.SSLError otherwise."""
        parsed = URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.raw_host or parsed.port is None:
            raise HttpError(f"not an http(s) URL: {url[:200]}")
        key = (parsed.scheme, parsed.raw_host, parsed.port)
        lines = [f"POST {parsed.raw_path_qs} HTTP/1.1", f"Host: {parsed.host_port_subcomponent}",
                 f"Content-Length: {len(body)}"]
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        attempt = _Attempt()
        try:
            async with asyncio.timeout(self._timeout), self._slots:
                return await self._exchange(key, request, attempt)
        except TimeoutError:
            # An answer whose status came in time counts, however slow its body.
            if attempt.connection is not None and attempt.connection.answered:
                attempt.connection.close()
                return attempt.connection.answer
            raise

    async def _exchange(self, key: Key, request: bytes, attempt: _Attempt) -> Answer:
        connection = attempt.connection = self._take(key)
        if connection is not None:
            try:
                return self._done(key, connection, await connection.exchange(request))
            except HttpError:
                connection.close()
                if connection.answered:
                    raise
                # Closed by the receiver while idle: once more, on a new connection.
            except BaseException:
                connection.close()
                raise
        connection = attempt.connection = await self._connect(key)
        try:
            return self._done(key, connection, await connection.exchange(request))
        except BaseException:
            connection.close()
            raise

    def _take(self, key: Key) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if not connection.closed:
                return connection
        return None

    def _done(self, key: Key, connection: _Connection, answer: Answer) -> Answer:
        idle = self._idle.setdefault(key, [])
        if connection.reusable and len(idle) < IDLE_PER_HOST:
            idle.append(connection)
        else:
            connection.close()
        return answer

    async def _connect(self, key: Key) -> _Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        tls = self._tls if scheme == "https" else None
        server_hostname = host if tls else None
        if _is_literal_ip(host):
            # Literal-IP URLs were judged by `AddressGuard.refusal` before the attempt.
            addresses = [host]
        else:
            addresses = [address for _, address in await self._guard.addresses(host)]
        error: Exception = HttpError(f"{host} has no address")
        for address in addresses:
            try:
                _, connection = await loop.create_connection(
                    _Connection, address, port, ssl=tls, server_hostname=server_hostname)
                return connection
            except OSError as exc:
                error = exc
        raise error

    async def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


def _is_literal_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True

"""uvicorn's HTTP protocol with deadlines on reading a request: first its head, then its body.

uvicorn bounds only the idle time between two requests of a kept-alive connection. A
client that opens a connection and sends nothing, or sends its head or its body a byte
at a time, would hold the connection (and, for a body, a request task) as long as it
liked. Here:

- the head (request line and headers) must be complete `header_timeout` seconds after
  the connection opened, or after the first bytes of a later request on a kept-alive
  connection; past it the connection is closed, with a 408 when part of a head came;
- the body must be complete `body_timeout` seconds after its head; past it the client
  gets a 408 problem (when nothing was answered yet) and the connection is closed. The
  application, waiting for the rest of the body, sees the client gone.

A deadline is armed or moved only after a read: a request whose head and body come in
one read, nearly all of them, arms none (a new connection arms one, for its first
head). A timeout of 0 turns its deadline off.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from missive.api.errors import ERRORS
from missive.api.joined_writes import JoinedWritesProtocol
from missive.observability.context import trace_id_or_new

log = logging.getLogger("missive.api")

_HEAD = "head"
_BODY = "body"


class ReadDeadlinesProtocol(JoinedWritesProtocol):
    def __init__(self, *args: Any, header_timeout: float, body_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timeouts = {_HEAD: header_timeout, _BODY: body_timeout}
        self._deadline: asyncio.TimerHandle | None = None
        self._awaited = ""  # what the deadline is for: _HEAD, _BODY or "" (none armed)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(_HEAD)

    def connection_lost(self, exc: Exception | None) -> None:
        self._arm("")
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Where the request stands is read off uvicorn's own state rather than kept by
        # overriding the parser's callbacks: this runs for every request.
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope and not cycle.more_body and not cycle.response_complete:
            awaited = ""  # nearly always: a request read whole, being handled
        else:
            awaited = self._still_awaited()
        if awaited != self._awaited:
            self._arm(awaited)

    def _in_head(self) -> bool:
        # uvicorn makes a new scope when a request begins, and its cycle when the head is in.
        return self.scope is not None and (self.cycle is None or self.cycle.scope is not self.scope)

    def _still_awaited(self) -> str:
        if self.transport.is_closing():
            return ""
        cycle = self.cycle
        if cycle is None or self._in_head():
            # Blank lines before a request count as its head.
            return _HEAD
        if cycle.more_body:
            # Also when the answer went before the body was read whole (a 401, a 413):
            # the rest still has to come in time.
            return _BODY
        # Bytes that begin no request (blank lines) on an idle connection stop uvicorn's
        # keep-alive timer: this deadline takes its place.
        return _HEAD if cycle.response_complete else ""

    def _arm(self, awaited: str) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._awaited = awaited
        timeout = self._timeouts.get(awaited, 0)
        if timeout > 0:
            self._deadline = self.loop.call_later(timeout, self._expired)

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if (self._awaited == _HEAD and cycle is not None and not cycle.response_complete) or self.pipeline:
            # A request sent before the one ahead of it was answered (pipelining) is
            # read at the server's pace, not the client's: it gets another period.
            self._arm(self._awaited)
            return
        timeout = self._timeouts[self._awaited]
        trace_id = trace_id_or_new()
        if self._awaited == _HEAD:
            if self._in_head():
                self._answer_408(f"The request headers were not received within {timeout:g} seconds.", trace_id)
            log.info("request head not received within %gs from %s: connection closed [instance %s]",
                     timeout, _peer(self.client), trace_id)
        else:
            if not cycle.response_started:
                self._answer_408(f"The request body was not received within {timeout:g} seconds.", trace_id)
            # The application answers nobody now: its sends are dropped, and a wait for
            # more body ends as the client's disconnection.
            cycle.disconnected = True
            cycle.message_event.set()
            log.info("request body not received within %gs on %s %s: connection closed [instance %s]",
                     timeout, cycle.scope["method"], cycle.scope.get("path", ""), trace_id)
        self.transport.close()

    def _answer_408(self, detail: str, trace_id: str) -> None:
        body = orjson.dumps(
            {"type": f"{ERRORS}#request-timeout", "title": "Request Timeout", "detail": detail, "instance": trace_id}
        )
        head = [b"HTTP/1.1 408 Request Timeout\r\n"]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(
            b"content-type: application/problem+json\r\ncontent-length: %d\r\nx-request-id: %s\r\n"
            b"connection: close\r\n\r\n" % (len(body), trace_id.encode())
        )
        self.transport.write(b"".join(head) + body)


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"

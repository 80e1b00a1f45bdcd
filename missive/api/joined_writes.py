"""uvicorn's HTTP protocol, writing an answer's head and body in one send.

uvicorn writes the status line and headers when the application starts its answer and
the body when it sends it: two writes, so two `send` system calls and, with Nagle off,
two TCP segments for a 202 of ~200 bytes. A loopback send costs ~4 us of CPU on our
2-core machine, a tenth of what accepting a message costs in all. Here the head waits
for the next write (the body), the end of the answer (a HEAD's has no body write) or the
close, and both go out together. Interim answers (100 Continue, 101 Switching Protocols)
go out at once: the client waits for them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _JoinedWrites:
    """A transport that holds back a final answer's head until the next write."""

    __slots__ = ("_transport", "_head")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
        elif data.startswith(b"HTTP/1.1 ") and data[9:10] != b"1" and data.endswith(b"\r\n\r\n"):
            self._head = data
        else:
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head)

    def __getattr__(self, name: str) -> Any:
        # Everything else is the transport's own (is_closing, get_extra_info, ...).
        return getattr(self._transport, name)


class JoinedWritesProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn's flow control keeps the real transport; answers go through this one.
        self.transport = _JoinedWrites(transport)  # type: ignore[assignment]

    def on_response_complete(self) -> None:
        # An answer without a body write (HEAD) has its head still held here.
        self.transport.flush()  # type: ignore[attr-defined]
        super().on_response_complete()

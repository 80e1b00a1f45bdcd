"""The send endpoints served straight from the ASGI entry, before Starlette's stack.

`POST /v1/messages`, `/v0.1/messages` and `/beta/messages` carry nearly all of a
server's traffic. Through Starlette a request passes its error middleware, exception
middleware, router (a pattern match per route until one fits) and endpoint wrapper, and
each of the answer's two ASGI messages passes back through a `send` wrapper of each
layer: measured with py-spy on the accept bench, those layers took more of the event
loop than Missive's own work for the request. Here the same endpoint runs with the
same exception handlers, and its answer goes to the server's `send` directly.

Only the exact paths come here; anything else (a trailing slash, another method, an
unknown path) goes through Starlette as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from missive.observability.context import start_request

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Exception], Awaitable[Response]]


def handler_for(handlers: Mapping[Any, Handler], exc: Exception) -> Handler | None:
    """The handler of the nearest class of `exc` in `handlers`, as Starlette picks it."""
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None


class _Request(Request):
    """A request whose headers are a plain dict, made in one pass: Starlette's `Headers`
    scans the raw list, lower-casing and encoding the name, on every lookup, and a send
    looks up three. Names are lower case (ASGI); the first of repeated headers wins, as
    with `Headers.get`. Made with the request (every send reads them): made on first use,
    the missing attribute cost an AttributeError per request."""

    def __init__(self, scope: Scope, receive: Receive) -> None:
        super().__init__(scope, receive)
        self._plain_headers: dict[str, str] = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(scope["headers"])
        }

    @property
    def headers(self) -> dict[str, str]:  # type: ignore[override]
        return self._plain_headers


async def serve(endpoint: Endpoint, handlers: Mapping[Any, Handler], scope: Scope, receive: Receive, send: Send) -> None:
    start_request()
    request = _Request(scope, receive)
    try:
        response = await endpoint(request)
    except Exception as exc:
        handler = handler_for(handlers, exc)
        if handler is None:
            raise
        # The catch-all handler logs what it answers; unlike Starlette's error
        # middleware, the exception is not raised on to the server, which would drop
        # the connection after the answer.
        response = await handler(request, exc)
    await response(scope, receive, send)

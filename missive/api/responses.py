"""JSON answers."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


class Accepted(Response):
    """A send's 202 `{"message_uuid": ...}`, its headers made without Starlette's general
    `init_headers` (media type, charset, length checks): every send answers with one."""

    def __init__(self, message_uuid: str) -> None:
        self.status_code = 202
        self.background = None
        self.body = b'{"message_uuid":"%s"}' % message_uuid.encode()
        self.raw_headers = [(b"content-length", b"%d" % len(self.body)), (b"content-type", b"application/json")]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Starlette's, less what a 202 to an HTTP request never has (a websocket prefix,
        # a background task).
        await send({"type": "http.response.start", "status": 202, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body})

"""JSON answers."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


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

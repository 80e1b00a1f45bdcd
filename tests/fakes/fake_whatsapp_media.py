"""A fake WhatsApp Cloud API on 127.0.0.1 for what the callback side calls: media and read receipts.

    with FakeWhatsappMedia(token="EAAG...") as cloud:
        cloud.add_media("1234", b"...jpeg...", "image/jpeg")
        ... MISSIVE_GRAPH_API_URL=cloud.url ...
        cloud.wait_for(lambda requests: any(r.path.endswith("/messages") for r in requests))

GET /{version}/{media_id} with `Authorization: Bearer TOKEN`:
{"messaging_product": "whatsapp", "url": "<download URL>", "mime_type", "sha256", "file_size", "id"};
an unknown id gets Graph's 400 code 100. GET <download URL> with the token: the bytes (a
wrong or missing token: 401, as Meta's lookaside answers). POST /{version}/{phone}/messages
with a read receipt: {"success": true}. A wrong or missing token on the Graph paths gets
401 code 190. The fake sends of tests/fakes/fake_whatsapp.py are not served here.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.fakes import serving
from tests.fakes.base import FakeServer
from tests.fakes.fake_whatsapp import CloudRequest

_MEDIA = re.compile(r"^/(v[0-9.]+)/([0-9]+)$")
_MESSAGES = re.compile(r"^/(v[0-9.]+)/([0-9]+)/messages$")
_DOWNLOAD = re.compile(r"^/download/([0-9]+)$")


@dataclass
class Stored:
    content: bytes
    mime_type: str
    # What the media endpoint says the size is (None: the real size); a slow download.
    declared_size: int | None = None
    delay: float = 0.0


def _error(status: int, code: int, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "AbCdEfGh123"}}


@dataclass
class FakeWhatsappMedia(FakeServer[CloudRequest]):
    token: str
    media: dict[str, Stored] = field(default_factory=dict)
    name = "fake WhatsApp Cloud API (media)"
    waiting_for = "Cloud API requests"

    def add_media(self, media_id: str, content: bytes, mime_type: str, declared_size: int | None = None,
                  delay: float = 0.0) -> None:
        with self._lock:
            self.media[media_id] = Stored(content, mime_type, declared_size, delay)

    def read_receipts(self) -> list[CloudRequest]:
        return [r for r in self.snapshot() if r.method == "POST" and _MESSAGES.match(r.path)]

    def _describe(self, request: CloudRequest) -> Any:
        return request.path

    def _answer(self, method: str, path: str, authorized: bool, body: Any) -> tuple[int, Any, str]:
        """(status, body as JSON or bytes, content type)."""
        download = _DOWNLOAD.match(path)
        if download:
            stored = self.media.get(download.group(1))
            if not authorized or stored is None:
                return 401 if not authorized else 404, b"", "text/plain"
            return 200, stored.content, stored.mime_type
        if not authorized:
            return *_error(401, 190, "Invalid OAuth access token - Cannot parse access token"), "application/json"
        found = _MEDIA.match(path)
        if method == "GET" and found:
            stored = self.media.get(found.group(2))
            if stored is None:
                return *_error(400, 100, "Unsupported get request. Object with ID does not exist"), "application/json"
            return 200, {
                "messaging_product": "whatsapp", "url": f"{self.url}/download/{found.group(2)}", "mime_type": stored.mime_type,
                "sha256": hashlib.sha256(stored.content).hexdigest(),
                "file_size": stored.declared_size if stored.declared_size is not None else len(stored.content),
                "id": found.group(2),
            }, "application/json"
        if method == "POST" and _MESSAGES.match(path) and isinstance(body, dict) and body.get("status") == "read":
            if body.get("messaging_product") != "whatsapp" or not isinstance(body.get("message_id"), str):
                return *_error(400, 100, "(#100) Invalid parameter"), "application/json"
            return 200, {"success": True}, "application/json"
        return *_error(400, 100, "Unknown path components"), "application/json"

    async def _app(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        body = serving.json_or_text(await serving.read_body(receive))
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        authorization = headers.get("authorization")
        self._record(CloudRequest(scope["method"], scope["path"], authorization, body, time.time()))
        download = _DOWNLOAD.match(scope["path"])
        stored = self.media.get(download.group(1)) if download else None
        if stored is not None and stored.delay:
            await asyncio.sleep(stored.delay)
        status, payload, content_type = self._answer(scope["method"], scope["path"], authorization == f"Bearer {self.token}", body)
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type.encode())]})
        await send({"type": "http.response.body", "body": data})

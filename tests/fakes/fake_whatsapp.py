"""A fake WhatsApp Cloud API on 127.0.0.1, in a background thread: the send endpoint.

    with FakeWhatsapp(token="EAAG...") as cloud:
        cloud.script(cloud.error(130429), ok(), to="447700900001")   # answered in order, then success
        ... MISSIVE_GRAPH_API_URL=cloud.url ...
        cloud.wait_for(lambda requests: len(requests) >= 2)
        release = threading.Event()
        cloud.script(Answer(hold=release), to="447700900002")   # taken, answered at release.set()
        assert cloud.unused() == []

POST /{version}/{phone_number_id}/messages with `Authorization: Bearer TOKEN`:
{"messaging_product": "whatsapp", "contacts": [{"input", "wa_id"}], "messages": [{"id": "wamid..."}]}
(a template's also says `"message_status": "accepted"`). Errors: {"error": {"message", "type",
"code", "error_data": {"messaging_product", "details"}, "error_subcode", "fbtrace_id"}}. A wrong
or missing token gets Graph's 401 code 190; another path gets code 100.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from tests.fakes import serving
from tests.fakes.base import ScriptedFake

_PATH = re.compile(r"^/(v[0-9.]+)/([0-9]+)/messages$")


@dataclass(frozen=True)
class CloudRequest:
    method: str
    path: str
    authorization: str | None
    body: Any
    at: float


@dataclass(frozen=True)
class Answer:
    status: int = 200
    # None: the normal success body for the request.
    body: dict[str, Any] | None = None
    delay: float = 0.0
    raw: bytes | None = None
    # Set by the test to let the answer go: until then the request is taken, unanswered.
    hold: threading.Event | None = None


def ok() -> Answer:
    return Answer()


def error(code: int, status: int = 400, message: str = "Cloud API error", details: str | None = None,
          subcode: int | None = None) -> Answer:
    body: dict[str, Any] = {
        "message": f"(#{code}) {message}", "type": "OAuthException", "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": details or message}, "fbtrace_id": "AbCdEfWa123"}
    if subcode is not None:
        body["error_subcode"] = subcode
    return Answer(status, {"error": body})


@dataclass
class FakeWhatsapp(ScriptedFake[CloudRequest, Answer]):
    token: str
    error = staticmethod(error)
    name = "fake WhatsApp Cloud API"
    waiting_for = "Cloud API requests"
    answer_type = Answer

    def __post_init__(self) -> None:
        super().__post_init__()
        self._ids = itertools.count(1)
        self.answered = 0  # answers written out in full

    def script(self, *answers: Answer, to: str | None = None) -> None:
        self._script(answers, to)

    def unused(self, to: str | None = None) -> list[Answer]:
        return self._unused(to)

    def snapshot(self, to: str | None = None) -> list[CloudRequest]:
        return self._snapshot(to)

    def _recipient(self, body: Any) -> str | None:
        return body.get("to") if isinstance(body, dict) else None

    def _success(self, body: dict[str, Any]) -> dict[str, Any]:
        sent: dict[str, Any] = {"id": f"wamid.FAKE{next(self._ids):010d}"}
        if body.get("type") == "template":
            sent["message_status"] = "accepted"
        to = body.get("to")
        return {"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}], "messages": [sent]}

    def _refusal(self, path: str, authorization: str | None, body: Any) -> Answer | None:
        if authorization != f"Bearer {self.token}":
            return Answer(401, {"error": {"message": "Invalid OAuth access token - Cannot parse access token",
                                          "type": "OAuthException", "code": 190, "fbtrace_id": "AbCdEfWa190"}})
        if not _PATH.match(path):
            return error(100, message="Unsupported post request")
        if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp" or not body.get("to"):
            return error(100, message="Invalid parameter", details="messaging_product and to are required")
        return None

    async def _app(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        body = serving.json_or_text(await serving.read_body(receive))
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        authorization = headers.get("authorization")
        self._record(CloudRequest(scope["method"], scope["path"], authorization, body, time.time()))
        answer = self._refusal(scope["path"], authorization, body) or self._next(body.get("to"))
        if answer.hold is not None:
            await asyncio.to_thread(answer.hold.wait)
        if answer.delay:
            await asyncio.sleep(answer.delay)
        payload = answer.raw if answer.raw is not None else orjson.dumps(
            answer.body if answer.body is not None else self._success(body))
        await send({"type": "http.response.start", "status": answer.status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})
        with self._lock:
            self.answered += 1

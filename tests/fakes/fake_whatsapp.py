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
from dataclasses import dataclass, field
from typing import Any, Self

import orjson

from tests.fakes import serving

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
class FakeWhatsapp:
    token: str
    port: int = field(default_factory=serving.free_port)
    requests: list[CloudRequest] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    # Answers for one recipient, before the shared queue: lets concurrent tests script apart.
    by_recipient: dict[str, list[Answer]] = field(default_factory=dict)
    error = staticmethod(error)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.answered = 0  # answers written out in full
        self._server: serving.uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *answers: Answer, to: str | None = None) -> None:
        with self._lock:
            if to is None:
                self.answers.extend(answers)
            else:
                self.by_recipient.setdefault(to, []).extend(answers)

    def unused(self, to: str | None = None) -> list[Answer]:
        with self._lock:
            if to is not None:
                return list(self.by_recipient.get(to, ()))
            return [*self.answers, *(a for queue in self.by_recipient.values() for a in queue)]

    def snapshot(self, to: str | None = None) -> list[CloudRequest]:
        with self._lock:
            found = list(self.requests)
        if to is None:
            return found
        return [r for r in found if isinstance(r.body, dict) and r.body.get("to") == to]

    def wait_for(self, condition: Callable[[list[CloudRequest]], bool], timeout: float = 15.0) -> list[CloudRequest]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.snapshot()
            if condition(found):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for Cloud API requests; got {[r.body for r in found[-5:]]}")
            time.sleep(0.02)

    def _next(self, to: str | None) -> Answer:
        with self._lock:
            queue = self.by_recipient.get(to or "")
            if queue:
                return queue.pop(0)
            return self.answers.pop(0) if self.answers else Answer()

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
        raw = b""
        while True:
            event = await receive()
            raw += event.get("body", b"")
            if not event.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = raw.decode(errors="replace")
        authorization = headers.get("authorization")
        with self._lock:
            self.requests.append(CloudRequest(scope["method"], scope["path"], authorization, body, time.time()))
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

    def __enter__(self) -> Self:
        self._server, self._thread = serving.start(self._app, self.port, "fake WhatsApp Cloud API")
        return self

    def __exit__(self, *exc: object) -> None:
        serving.stop(self._server, self._thread)

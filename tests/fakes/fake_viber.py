"""A fake Viber REST API on 127.0.0.1 in a background thread: Viber's request and
response shapes and `status` codes, scripted answers, every request recorded.

    with FakeViber(auth_token="T") as viber:
        viber.script("/pa/send_message", {"status": 6, "status_message": "notSubscribed"})
        viber.script("/pa/send_message", 503)          # an HTTP status, no Viber body
        viber.script("/pa/send_message", ("slow", 2.0))  # answers (normally) after 2 s
        ... MISSIVE_VIBER_API_URL=viber.url() ...
        viber.wait_for(lambda sent: len(sent) >= 1)

Unscripted calls get Viber's normal answers: a wrong X-Viber-Auth-Token is status 2
(invalidAuthToken), a request missing what Viber requires, with a non-integer size or
duration, or with a malformed keyboard is status 3 (badData), else
status 0 with a fresh numeric `message_token`. `HEAD /media/...` answers a
Content-Length, standing in for a media host (`media_heads` records them).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

import orjson

from tests.fakes import serving

MEDIA_SIZE = 123456
# Viber's message tokens are 64-bit integers (beyond a double's exact range).
FIRST_TOKEN = 5741311803571721087

REQUIRED = {
    "text": ("text",),
    "picture": ("media", "text"),
    "video": ("media", "size"),
    "file": ("media", "size", "file_name"),
}

Answer = dict[str, Any] | int | tuple[str, float]
# Integer fields of Viber's message models (a string there is badData).
INTEGERS = ("size", "duration", "min_api_version")
ACTION_TYPES = ("reply", "open-url", "location-picker", "share-phone", "none")


def _keyboard_ok(keyboard: object) -> bool:
    """Viber's keyboard: `Buttons` required, each button with a known ActionType and its
    ActionBody, Columns 1-6 and Rows 1-2 when given."""
    if not isinstance(keyboard, dict) or keyboard.get("Type", "keyboard") != "keyboard":
        return False
    buttons = keyboard.get("Buttons")
    if not isinstance(buttons, list) or not buttons:
        return False
    return all(
        isinstance(b, dict)
        and b.get("ActionType", "reply") in ACTION_TYPES
        and isinstance(b.get("ActionBody"), str)
        and b.get("Columns", 6) in range(1, 7)
        and b.get("Rows", 1) in range(1, 3)
        for b in buttons
    )


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)




class FakeViber:
    def __init__(self, auth_token: str | None = None) -> None:
        self.auth_token = auth_token
        self.port = serving.free_port()
        self.calls: list[Call] = []
        self.media_heads: list[str] = []  # paths of HEAD /media/... requests
        # tracking_data (Missive's message uuid) -> the message_token answered.
        self.tokens: dict[str, int] = {}
        self._scripts: dict[str, deque[Answer]] = defaultdict(deque)
        self._tokens = itertools.count(FIRST_TOKEN)
        self._lock = threading.Lock()
        self._server: serving.uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, *answers: Answer) -> None:
        with self._lock:
            self._scripts[path].extend(answers)

    def unused(self) -> dict[str, list[Answer]]:
        """Scripted answers never given: a test that scripts more than happens is wrong."""
        with self._lock:
            return {path: list(queue) for path, queue in self._scripts.items() if queue}

    def sent(self) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.path == "/pa/send_message"]

    def wait_for(self, condition: Callable[[list[Call]], bool], timeout: float = 10.0) -> list[Call]:
        deadline = time.monotonic() + timeout
        while True:
            sent = self.sent()
            if condition(sent):
                return sent
            if time.monotonic() > deadline:
                raise AssertionError(f"fake Viber: timed out; got {[c.json for c in sent]}")
            time.sleep(0.05)

    # -- the server -------------------------------------------------------------------

    def _answer(self, call: Call) -> tuple[int, dict[str, Any] | None, float]:
        with self._lock:
            queue = self._scripts.get(call.path)
            scripted = queue.popleft() if queue else None
        delay = 0.0
        if isinstance(scripted, tuple):
            delay, scripted = scripted[1], None
        if isinstance(scripted, int):
            return scripted, None, delay
        if isinstance(scripted, dict):
            return 200, scripted, delay
        return 200, self._normal(call), delay

    def _normal(self, call: Call) -> dict[str, Any]:
        if self.auth_token is not None and call.headers.get("x-viber-auth-token") != self.auth_token:
            return {"status": 2, "status_message": "invalidAuthToken"}
        try:
            body = call.json
        except orjson.JSONDecodeError:
            return {"status": 3, "status_message": "badData"}
        if call.path == "/pa/set_webhook":
            if not isinstance(body.get("url"), str):
                return {"status": 3, "status_message": "badData"}
            return {"status": 0, "status_message": "ok", "event_types": body.get("event_types", [])}
        if call.path != "/pa/send_message":
            return {"status": 3, "status_message": "badData"}
        kind = body.get("type")
        sender = body.get("sender")
        missing = (
            not body.get("receiver")
            or kind not in REQUIRED
            or not isinstance(sender, dict)
            or not sender.get("name")
            or any(key not in body for key in REQUIRED.get(kind, ()))
            or any(key in body and type(body[key]) is not int for key in INTEGERS)
            or ("keyboard" in body and not _keyboard_ok(body["keyboard"]))
        )
        if missing:
            return {"status": 3, "status_message": "badData"}
        with self._lock:
            token = next(self._tokens)
            self.tokens[str(body.get("tracking_data"))] = token
        return {"status": 0, "status_message": "ok", "message_token": token, "chat_hostname": "SN-CHAT-01_", "billing_status": 1}

    async def _app(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        body = await serving.read_body(receive)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if scope["method"] == "HEAD" and scope["path"].startswith("/media/"):
            with self._lock:
                self.media_heads.append(scope["path"])
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", str(MEDIA_SIZE).encode())]})
            await send({"type": "http.response.body", "body": b""})
            return
        call = Call(scope["method"], scope["path"], headers, body)
        with self._lock:
            self.calls.append(call)
        status, answer, delay = self._answer(call)
        if delay:
            await asyncio.sleep(delay)
        payload = orjson.dumps(answer) if answer is not None else b"upstream error"
        content_type = b"application/json" if answer is not None else b"text/plain"
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]})
        await send({"type": "http.response.body", "body": payload})

    def __enter__(self) -> Self:
        self._server, self._thread = serving.start(self._app, self.port, "fake Viber")
        return self

    def __exit__(self, *exc: object) -> None:
        serving.stop(self._server, self._thread)

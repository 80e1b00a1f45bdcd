"""A real HTTP webhook receiver on 127.0.0.1, in a background thread, recording what arrives.

    with WebhookReceiver() as receiver:
        receiver.respond = lambda hook: 500 if hook.path == "/flaky" else 200
        ... receiver.url("/status") ...
        receiver.wait_for(lambda hooks: len(hooks) >= 3)

`respond` may also return (status, delay_seconds) to answer slowly.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from tests.fakes import serving


@dataclass(frozen=True)
class Hook:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    answered: int

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)




class WebhookReceiver:
    def __init__(self) -> None:
        self.port = serving.free_port()
        self.hooks: list[Hook] = []
        self.respond: Callable[[Hook], int | tuple[int, float]] = lambda hook: 200
        self._lock = threading.Lock()
        self._server: serving.uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _app(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        probe = Hook(scope["path"], headers, body, time.time(), 0)
        answer = self.respond(probe)
        status, delay = answer if isinstance(answer, tuple) else (answer, 0.0)
        if delay:
            await asyncio.sleep(delay)
        with self._lock:
            self.hooks.append(Hook(probe.path, headers, body, probe.at, status))
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    def __enter__(self) -> WebhookReceiver:
        self._server, self._thread = serving.start(self._app, self.port, "webhook receiver")
        return self

    def __exit__(self, *exc: object) -> None:
        serving.stop(self._server, self._thread)

    def snapshot(self, accepted_only: bool = False) -> list[Hook]:
        with self._lock:
            hooks = list(self.hooks)
        return [h for h in hooks if 200 <= h.answered < 300] if accepted_only else hooks

    def wait_for(self, condition: Callable[[list[Hook]], bool], timeout: float = 30.0) -> list[Hook]:
        deadline = time.monotonic() + timeout
        while True:
            hooks = self.snapshot()
            if condition(hooks):
                return hooks
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for webhooks; got {len(hooks)}: {[h.json for h in hooks[-5:]]}")
            time.sleep(0.05)

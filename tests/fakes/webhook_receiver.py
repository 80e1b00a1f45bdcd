"""A real HTTP webhook receiver on 127.0.0.1, in a background thread, recording what arrives.

    with WebhookReceiver() as receiver:
        receiver.respond = lambda hook: 500 if hook.path == "/flaky" else 200
        ... receiver.url("/status") ...
        receiver.wait_for(lambda hooks: len(hooks) >= 3)

`respond` may also return (status, delay_seconds) to answer slowly, or a `Reply` for
headers (a redirect's Location) and bodies that never end:

    receiver.respond = lambda hook: Reply(307, headers={"location": other.url("/status")})
    receiver.respond = lambda hook: Reply(200, stream=b"x" * 65536)          # as fast as it can
    receiver.respond = lambda hook: Reply(200, stream=b"x", stream_every=0.1)  # dribbling

A streamed body goes on until the client leaves; `streamed` counts its bytes and
`disconnects` records when clients left.

`WebhookReceiver(host="127.0.0.2")` listens on another loopback address (Linux routes all
of 127/8 to loopback).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Reply:
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    # Sent after `body`, again and again, `stream_every` seconds apart, until the client leaves.
    stream: bytes = b""
    stream_every: float = 0.0


class WebhookReceiver:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = serving.free_port(host)
        self.hooks: list[Hook] = []
        self.respond: Callable[[Hook], int | tuple[int, float] | Reply] = lambda hook: 200
        self.streamed = 0
        self.disconnects: list[float] = []
        self._lock = threading.Lock()
        self._server: serving.uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    async def _app(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        body = await serving.read_body(receive)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        probe = Hook(scope["path"], headers, body, time.time(), 0)
        answer = self.respond(probe)
        if isinstance(answer, tuple):
            answer = Reply(answer[0], answer[1])
        elif not isinstance(answer, Reply):
            answer = Reply(answer)
        if answer.delay:
            await asyncio.sleep(answer.delay)
        with self._lock:
            self.hooks.append(Hook(probe.path, headers, body, probe.at, answer.status))
        extra = [(k.encode(), v.encode()) for k, v in answer.headers.items()]
        await send({"type": "http.response.start", "status": answer.status,
                    "headers": [(b"content-type", b"text/plain"), *extra]})
        if not answer.stream:
            await send({"type": "http.response.body", "body": answer.body})
            return
        await self._stream(answer, receive, send)

    async def _stream(self, answer: Reply, receive: Callable, send: Callable) -> None:
        left = asyncio.ensure_future(receive())  # http.disconnect once the client is gone
        try:
            await send({"type": "http.response.body", "body": answer.body, "more_body": True})
            while not left.done():
                await send({"type": "http.response.body", "body": answer.stream, "more_body": True})
                with self._lock:
                    self.streamed += len(answer.stream)
                await asyncio.sleep(answer.stream_every)
        finally:
            left.cancel()
        with self._lock:
            self.disconnects.append(time.time())

    def __enter__(self) -> WebhookReceiver:
        self._server, self._thread = serving.start(self._app, self.port, "webhook receiver", self.host)
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

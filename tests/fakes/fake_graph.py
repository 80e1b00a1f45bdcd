"""A fake Facebook Graph API on 127.0.0.1, in a background thread: the Send API's shapes.

    with FakeGraph() as graph:
        graph.script(graph.error(613, status=400), ok())     # answered in order, then success
        ... MISSIVE_GRAPH_API_URL=graph.url ...
        graph.wait_for(lambda requests: len(requests) >= 2)
        assert graph.unused() == []

Success: {"recipient_id": "PSID", "message_id": "m_..."}; for a sender action only
{"recipient_id": "PSID"}. Errors: {"error": {"message", "type", "code",
"error_subcode", "fbtrace_id"}}. A request without `access_token` gets Graph's 190.
`Answer(hang=True)` never answers; `Answer(dribble=0.2)` answers a byte at a time.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson

from tests.fakes import serving
from tests.fakes.base import ScriptedFake


@dataclass(frozen=True)
class GraphRequest:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    at: float


@dataclass(frozen=True)
class Answer:
    status: int = 200
    # None: the normal success body for the request.
    body: dict[str, Any] | None = None
    delay: float = 0.0
    raw: bytes | None = None
    # A provider that hangs: `hang` reads the request and never answers; `dribble` sends
    # the status line and then one byte of body every `dribble` seconds. Both until the
    # client leaves.
    hang: bool = False
    dribble: float = 0.0


def ok() -> Answer:
    return Answer()


def error(code: int, subcode: int | None = None, status: int = 400, message: str = "Graph error",
          kind: str = "OAuthException") -> Answer:
    body: dict[str, Any] = {"message": message, "type": kind, "code": code, "fbtrace_id": "AbCdEfGh123"}
    if subcode is not None:
        body["error_subcode"] = subcode
    return Answer(status, {"error": body})


@dataclass
class FakeGraph(ScriptedFake[GraphRequest, Answer]):
    # When clients hung up on a `hang` or `dribble` answer.
    abandoned: list[float] = field(default_factory=list)
    error = staticmethod(error)
    name = "fake Graph API"
    waiting_for = "Graph requests"
    answer_type = Answer

    def __post_init__(self) -> None:
        super().__post_init__()
        self._ids = itertools.count(1)

    def script(self, *answers: Answer, recipient: str | None = None) -> None:
        self._script(answers, recipient)

    def unused(self, recipient: str | None = None) -> list[Answer]:
        """Scripted answers not given yet: all, or those scripted for `recipient`."""
        return self._unused(recipient)

    def snapshot(self, recipient: str | None = None) -> list[GraphRequest]:
        return self._snapshot(recipient)

    def _recipient(self, body: Any) -> str | None:
        return (body.get("recipient") or {}).get("id") if isinstance(body, dict) else None

    def _success(self, body: Any) -> dict[str, Any]:
        recipient = self._recipient(body)
        if isinstance(body, dict) and "sender_action" in body:
            return {"recipient_id": recipient}
        return {"recipient_id": recipient, "message_id": f"m_fake{next(self._ids):08d}"}

    async def _app(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        body = serving.json_or_text(await serving.read_body(receive))
        query = dict(parse_qsl(scope["query_string"].decode()))
        self._record(GraphRequest(scope["method"], scope["path"], query, body, time.time()))
        recipient = self._recipient(body)
        if not query.get("access_token"):
            answer = error(190, message="An active access token must be used to query information about the current user.")
        elif not scope["path"].endswith("/me/messages"):
            answer = error(100, message="Unknown path components", kind="OAuthException")
        else:
            answer = self._next(recipient)
        if answer.hang or answer.dribble:
            await self._stall(answer, receive, send)
            return
        if answer.delay:
            await asyncio.sleep(answer.delay)
        payload = answer.raw if answer.raw is not None else orjson.dumps(answer.body if answer.body is not None else self._success(body))
        await send({"type": "http.response.start", "status": answer.status, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})

    async def _stall(self, answer: Answer, receive: Callable, send: Callable) -> None:
        left = asyncio.ensure_future(receive())  # http.disconnect once the client is gone
        try:
            if answer.dribble:
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000000")]})
            while not left.done():
                if answer.dribble:
                    await send({"type": "http.response.body", "body": b" ", "more_body": True})
                await asyncio.wait([left], timeout=answer.dribble or None)
        finally:
            left.cancel()
        with self._lock:
            self.abandoned.append(time.time())

"""What the recording fakes share: a port on 127.0.0.1, the requests they recorded, waiting
for them, serving their ASGI `_app` in a background thread; and, for fakes that answer
from a script, answers queued in order, for everyone or for one recipient.

    class FakeThing(ScriptedFake[ThingRequest, Answer]):
        name = "fake Thing API"           # in "did not start"
        waiting_for = "Thing requests"    # in wait_for's timeout
        answer_type = Answer              # Answer(): the normal answer once the script is used up

        def _recipient(self, body): ...   # whom a request body is for (None: nobody)
        async def _app(self, scope, receive, send): ...
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

from tests.fakes import serving


class _Recorded(Protocol):
    @property
    def path(self) -> str: ...
    @property
    def body(self) -> Any: ...


R = TypeVar("R", bound=_Recorded)
A = TypeVar("A")


@dataclass(kw_only=True)
class FakeServer(Generic[R]):
    port: int = field(default_factory=serving.free_port)
    requests: list[R] = field(default_factory=list)
    name: ClassVar[str] = "fake server"
    waiting_for: ClassVar[str] = "requests"

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: serving.uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _record(self, request: R) -> None:
        with self._lock:
            self.requests.append(request)

    def _recorded(self) -> list[R]:
        with self._lock:
            return list(self.requests)

    def snapshot(self) -> list[R]:
        return self._recorded()

    def _describe(self, request: R) -> Any:
        """What wait_for's timeout shows of a request."""
        return request.body

    def wait_for(self, condition: Callable[[list[R]], bool], timeout: float = 15.0) -> list[R]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.snapshot()
            if condition(found):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {self.waiting_for}; got {[self._describe(r) for r in found[-5:]]}")
            time.sleep(0.02)

    async def _app(self, scope: dict, receive: Callable, send: Callable) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._server, self._thread = serving.start(self._app, self.port, self.name)
        return self

    def __exit__(self, *exc: object) -> None:
        serving.stop(self._server, self._thread)


@dataclass(kw_only=True)
class ScriptedFake(FakeServer[R], Generic[R, A]):
    answers: list[A] = field(default_factory=list)
    # Answers for one recipient, before the shared queue: lets concurrent tests script apart.
    by_recipient: dict[str, list[A]] = field(default_factory=dict)
    answer_type: ClassVar[Callable[[], Any]]

    def _recipient(self, body: Any) -> str | None:
        raise NotImplementedError

    def _script(self, answers: tuple[A, ...], recipient: str | None) -> None:
        with self._lock:
            if recipient is None:
                self.answers.extend(answers)
            else:
                self.by_recipient.setdefault(recipient, []).extend(answers)

    def _unused(self, recipient: str | None) -> list[A]:
        with self._lock:
            if recipient is not None:
                return list(self.by_recipient.get(recipient, ()))
            return [*self.answers, *(a for queue in self.by_recipient.values() for a in queue)]

    def _snapshot(self, recipient: str | None) -> list[R]:
        found = self._recorded()
        if recipient is None:
            return found
        return [r for r in found if self._recipient(r.body) == recipient]

    def _next(self, recipient: str | None) -> A:
        with self._lock:
            queue = self.by_recipient.get(recipient or "")
            if queue:
                return queue.pop(0)
            return self.answers.pop(0) if self.answers else self.answer_type()

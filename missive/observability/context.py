"""What a log line is about: the request's trace id and the message being handled.

Both live in contextvars. Every HTTP request and every dispatcher send runs in its own
asyncio task, which has its own copy of the context, so a value set there is seen by
whatever that task logs and never leaks into another request.

The accept path handles thousands of requests a second, so starting a request costs one
counter step and one `ContextVar.set` of an int: the id's text is only made when
something needs it (an error body, a log line). Ids are a random per-process prefix and
a counter, 32 hex digits like the uuid4 hex they replace, unique across processes.
"""

from __future__ import annotations

import itertools
import os
from contextvars import ContextVar

_PREFIX = os.urandom(8).hex()
_next = itertools.count(1).__next__

_request: ContextVar[int] = ContextVar("missive_request", default=0)
message_uuid: ContextVar[str | None] = ContextVar("missive_message_uuid", default=None)


def start_request() -> None:
    """Give the running task (an HTTP request) a fresh trace id."""
    _request.set(_next())


def _text(number: int) -> str:
    return f"{_PREFIX}{number:016x}"


def trace_id() -> str | None:
    """The current request's trace id, or None outside a request."""
    number = _request.get()
    return _text(number) if number else None


def trace_id_or_new() -> str:
    """The current request's trace id; outside a request, a fresh one."""
    return _text(_request.get() or _next())

"""Cached lookups that expire under load are read once, not once per waiting request.

Credentials and links are cached for a few seconds (missive/cache.py). When an entry
expires while requests keep coming, every request that misses it together would read
the database in turn on the process's connection; on the accept bench that was 64
application reads every 5 seconds. They now share one read.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import jwt
from sqlalchemy import event
from starlette.requests import Request

from missive.auth import Authenticator, Principal
from missive.cache import TTLCache
from missive.store.db import make_engine, migrate
from tests.harness import provision, settings_for


def _request(token: str) -> Request:
    return Request({"type": "http", "method": "POST", "path": "/v1/messages", "query_string": b"",
                    "headers": [(b"authorization", f"Bearer {token}".encode())]})


def test_requests_missing_an_expired_application_read_it_once(tmp_path: Path) -> None:
    _account, app = provision(tmp_path)

    def token() -> str:  # an SDK signs a new JWT for every request
        claims = {"application_id": app["id"], "iat": int(time.time()), "jti": str(uuid.uuid4())}
        return jwt.encode(claims, app["private_key"], algorithm="RS256")

    async def main() -> tuple[list[Principal], list[str]]:
        engine = make_engine(settings_for(tmp_path))
        await migrate(engine)
        reads: list[str] = []
        event.listen(engine.sync_engine, "before_cursor_execute",
                     lambda _c, _cur, statement, *_a: reads.append(statement) if "FROM applications" in statement else None)
        now = [time.time()]
        auth = Authenticator(engine, settings_for(tmp_path), clock=lambda: now[0])
        try:
            first = await asyncio.gather(*(auth.authenticate(_request(token())) for _ in range(20)))
            now[0] += 60  # every cached entry expired
            second = await asyncio.gather(*(auth.authenticate(_request(token())) for _ in range(20)))
        finally:
            await engine.dispose()
        return first + second, reads

    principals, reads = asyncio.run(main())
    assert {p.application_id for p in principals} == {app["id"]}
    assert len(reads) == 2, reads  # one read per expiry, for 20 requests each time


def test_a_failed_load_fails_its_waiters_and_is_tried_again() -> None:
    async def main() -> None:
        cache = TTLCache(time.monotonic)
        calls = []

        async def failing() -> str:
            calls.append("failing")
            await asyncio.sleep(0.01)
            raise OSError("database gone")

        results = await asyncio.gather(*(cache.load("k", failing) for _ in range(5)), return_exceptions=True)
        assert calls == ["failing"] and all(isinstance(r, OSError) for r in results)

        async def working() -> str:
            calls.append("working")
            return "value"

        assert await cache.load("k", working) == "value"
        assert await cache.load("k", working) == "value"  # cached
        assert calls == ["failing", "working"]

    asyncio.run(main())

"""The dispatch rules, with an injected clock: retry policy, rate limits, leases, status moves."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from missive.channels.base import Rejected, Throttled, Unavailable
from missive.dispatch.ratelimit import RateLimiter
from missive.dispatch.retry import RetryPolicy
from missive.store import rates
from missive.store.claims import claim_due
from missive.store.db import make_engine, migrate
from missive.store.statuses import StatusChange, apply_changes, moves_forward
from missive.store.tables import message_events, messages, outbox
from tests.harness import settings_for


def test_backoff_grows_exponentially_within_jitter_and_stops() -> None:
    policy = RetryPolicy(base=1.0, cap=100.0, max_attempts=5, jitter=0.2)
    error = Unavailable()
    assert [policy.delay(n, error, rand=0.5) for n in range(1, 5)] == [1.0, 2.0, 4.0, 8.0]
    assert policy.delay(3, error, rand=0.0) == pytest.approx(4.0 * 0.8)
    assert policy.delay(3, error, rand=1.0) == pytest.approx(4.0 * 1.2)
    assert policy.delay(5, error) is None
    assert RetryPolicy(base=1.0, cap=10.0, max_attempts=50).delay(20, error, rand=0.5) == 10.0


def test_permanent_errors_are_not_retried_and_throttling_honours_the_hint() -> None:
    policy = RetryPolicy(base=1.0)
    assert policy.delay(1, Rejected(1020, "bad")) is None
    assert policy.delay(1, Throttled(retry_after=30.0), rand=0.5) == 30.0


def test_rate_limit_makes_senders_wait_not_fail(tmp_path: Path) -> None:
    now = [0.0]

    async def run() -> list[float]:
        engine = make_engine(settings_for(tmp_path))
        await migrate(engine)

        async def reserve(key: str, rate: float, units: float) -> float:
            async with engine.begin() as conn:
                return await rates.take(conn, key, rate, units, now[0])

        limiter = RateLimiter(reserve, clock=lambda: now[0])
        try:
            waits = [await limiter.delay("link", rate=5.0) for _ in range(10)]
            waits.append(await limiter.delay("link", rate=5.0, units=3))
            assert limiter.waits == 6
            waits.append(await limiter.delay("another-link", rate=5.0))
            return waits
        finally:
            await engine.dispose()

    waits = asyncio.run(run())
    # A burst of 5 passes, then each send waits its turn: 1/5 s apart, and 3 parts cost 3.
    assert waits[:5] == [0.0] * 5
    assert waits[5:10] == [pytest.approx(0.2 * i) for i in range(1, 6)]
    assert waits[10] == pytest.approx(1.6)
    # Another key is another bucket: its own burst.
    assert waits[11] == 0.0


def test_throttled_link_pauses_everyone_on_it() -> None:
    async def no_rate(key: str, rate: float, units: float) -> float:
        raise AssertionError("a link without a rate takes no tokens")

    limiter = RateLimiter(no_rate, clock=lambda: 100.0)
    limiter.slow_down("link", 2.0)

    async def run() -> list[float]:
        return [await limiter.delay("link", rate=None), await limiter.delay("other", rate=None)]

    assert asyncio.run(run()) == [pytest.approx(2.0), 0.0]


@pytest.mark.parametrize(
    ("current", "new", "moves"),
    [
        ("accepted", "submitted", True), ("submitted", "delivered", True), ("delivered", "read", True),
        ("submitted", "read", True), ("read", "delivered", False), ("delivered", "submitted", False),
        ("rejected", "delivered", False), ("undeliverable", "read", False), ("submitted", "undeliverable", True),
        ("delivered", "undeliverable", False), ("submitted", "submitted", False), ("accepted", "rejected", True),
    ],
)
def test_statuses_only_move_forward(current: str, new: str, moves: bool) -> None:
    assert moves_forward(current, new) is moves


def _message(uuid: str) -> dict:
    return {
        "uuid": uuid, "account_id": "a", "application_id": None, "channel": "sms", "message_type": "text",
        "to_addr": "447700900000", "from_addr": "Acme", "body": {}, "client_ref": None, "webhook_url": None,
        "webhook_version": "v1", "status": "accepted", "workflow_id": None, "created_at": 0.0, "updated_at": 0.0,
    }


def test_leases_expire_and_rows_are_claimed_again(tmp_path: Path) -> None:
    async def run() -> None:
        engine = make_engine(settings_for(tmp_path))
        await migrate(engine)
        async with engine.begin() as conn:
            await conn.execute(outbox.insert(), [{"message_uuid": f"m{i}", "due_at": float(i), "attempts": 0} for i in range(5)])
        async with engine.begin() as conn:
            first = await claim_due(conn, outbox, outbox.c.message_uuid, now=10.0, lease=30.0, limit=3)
            second = await claim_due(conn, outbox, outbox.c.message_uuid, now=11.0, lease=30.0, limit=10)
            nothing = await claim_due(conn, outbox, outbox.c.message_uuid, now=20.0, lease=30.0, limit=10)
            # The first dispatcher died: at 41 its lease has run out.
            again = await claim_due(conn, outbox, outbox.c.message_uuid, now=41.0, lease=30.0, limit=10)
            not_due = await claim_due(conn, outbox, outbox.c.message_uuid, now=-1.0, lease=30.0, limit=10)
        await engine.dispose()
        assert sorted(r["message_uuid"] for r in first) == ["m0", "m1", "m2"]
        assert sorted(r["message_uuid"] for r in second) == ["m3", "m4"]
        assert nothing == [] and not_due == []
        assert sorted(r["message_uuid"] for r in again) == ["m0", "m1", "m2"]

    asyncio.run(run())


def test_out_of_order_statuses_are_recorded_but_only_forward_moves_apply(tmp_path: Path) -> None:
    async def run() -> None:
        engine = make_engine(settings_for(tmp_path))
        await migrate(engine)
        async with engine.begin() as conn:
            await conn.execute(messages.insert(), [_message("m1")])
            applied = await apply_changes(conn, [
                StatusChange("m1", "submitted", 1.0, "ref"),
                StatusChange("m1", "read", 2.0),
                StatusChange("m1", "delivered", 3.0),
                StatusChange("unknown", "delivered", 3.0),
            ])
            status = (await conn.execute(messages.select())).one().status
            events = [row.status for row in await conn.execute(message_events.select().order_by(message_events.c.id))]
        await engine.dispose()
        assert [c.status for c, _ in applied] == ["submitted", "read"]
        assert status == "read"
        # The late `delivered` is kept in the history; the unknown message is not.
        assert events == ["submitted", "read", "delivered"]

    asyncio.run(run())

"""The webhook sender's claims while a receiver is at its bound.

A process holds at most 2 x MISSIVE_WEBHOOK_PER_TARGET webhooks of one receiver (its
requests in flight and one round waiting); the rest stay in the outbox. Claiming again
after each delivery of that receiver would find nothing of it (or take its rows and hand
them back) while scanning every pending row, which cost a quarter of the end-to-end
throughput. The claims must come once per drained round instead.

The sender runs in-process on the test's database; the receiver is a real HTTP server.
Statements are counted on the engine, as they reach the driver.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sqlalchemy import event, func, select

from missive.store.accounts import create_account
from missive.store.bulk import insert_many
from missive.store.db import make_engine, migrate
from missive.store.tables import webhook_outbox
from missive.webhooks.outbox import _row
from missive.webhooks.sender import WebhookSender
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.harness import settings_for

PER_TARGET = 4
WEBHOOKS = 48


async def deliver_backlog(data_dir: Path, url: str) -> tuple[int, int]:
    """(claims made, webhooks delivered) for a backlog of one receiver's webhooks."""
    # A long poll interval: every claim after the first is one a delivery asked for.
    settings = settings_for(data_dir, webhook_per_target=PER_TARGET, poll_interval=60.0)
    engine = make_engine(settings)
    await migrate(engine)
    account = await create_account(engine)
    now = time.time()
    rows = [_row("status", account.id, None, f"m-{i}", url, "POST", {"message_uuid": f"m-{i}", "status": "delivered"}, now)
            for i in range(WEBHOOKS)]
    async with engine.begin() as conn:
        await insert_many(conn, webhook_outbox, rows)
    claims = 0

    def count(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        nonlocal claims
        if statement.startswith("UPDATE webhook_outbox SET claimed_until") and "SELECT" in statement:
            claims += 1

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    sender = WebhookSender(engine, settings)
    stopping = asyncio.Event()
    running = asyncio.create_task(sender.run(stopping))
    try:
        deadline = time.monotonic() + 30
        delivered = 0
        while delivered < WEBHOOKS and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            async with engine.connect() as conn:
                delivered = (await conn.execute(
                    select(func.count()).select_from(webhook_outbox).where(webhook_outbox.c.state == "delivered")
                )).scalar_one()
    finally:
        stopping.set()
        sender.wake.set()
        await running
        await engine.dispose()
    return claims, delivered


def test_a_receiver_at_its_bound_is_claimed_once_per_round(tmp_path: Path) -> None:
    with WebhookReceiver() as receiver:
        # Each request takes a moment, a different one, so that deliveries end one by one.
        receiver.respond = lambda hook: (200, 0.005 + 0.006 * (int(hook.json["message_uuid"][2:]) % 7))
        claims, delivered = asyncio.run(deliver_backlog(tmp_path, receiver.url("/status")))
        assert delivered == WEBHOOKS
        assert len(receiver.snapshot()) == WEBHOOKS
    # One claim per drained round of PER_TARGET deliveries (and a few at the edges), where
    # claiming after every delivery made about one per webhook.
    rounds = WEBHOOKS // PER_TARGET
    assert claims <= rounds + 3, f"{claims} claims for {WEBHOOKS} webhooks in rounds of {PER_TARGET}"

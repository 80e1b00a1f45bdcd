"""Group commits as one statement on PostgreSQL.

A batch of the accept path (messages and their outbox rows) and a batch of webhook
results (attempt records and outbox updates) go to PostgreSQL as one statement in
autocommit mode: one round trip where BEGIN, a statement per table and COMMIT took four.
The statement must still be all or nothing, and the rows the same as table by table.
On SQLite the same batches run statement by statement in one transaction; both passes
of the suite run these tests, and the one on how a batch gathers its items.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from missive.store.accounts import create_account
from missive.store.db import make_engine, migrate
from missive.store.messages import new_message_rows
from missive.store.tables import messages, outbox, webhook_attempts, webhook_outbox
from missive.store.writer import Batcher, GroupWriter, Rows
from missive.webhooks.outbox import _row
from missive.webhooks.sender import Attempt, WebhookSender
from tests.harness import settings_for

SMS = {"channel": "sms", "message_type": "text", "to": "447700900000", "from": "Missive", "text": "Hello"}


def _statements(engine: AsyncEngine) -> list[str]:
    seen: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute", lambda _c, _cur, statement, *_a: seen.append(statement))
    return seen


async def _count(engine: AsyncEngine, table, **where: str) -> int:  # type: ignore[no-untyped-def]
    query = select(func.count()).select_from(table)
    for name, value in where.items():
        query = query.where(table.c[name] == value)
    async with engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def _accept(data_dir: Path, batches: list[list[Rows]]) -> tuple[list[str], list[BaseException | None], AsyncEngine]:
    engine = make_engine(settings_for(data_dir))
    await migrate(engine)
    writer = GroupWriter(engine, [messages, outbox])
    writer.start()
    seen = _statements(engine)
    outcomes: list[BaseException | None] = []
    try:
        for batch in batches:
            # Submitted together: one commit for the whole batch.
            results = await asyncio.gather(*(writer.write(rows) for rows in batch), return_exceptions=True)
            outcomes.extend(r if isinstance(r, BaseException) else None for r in results)
    finally:
        await writer.stop()
    return seen, outcomes, engine


async def _new_account(data_dir: Path) -> str:
    engine = make_engine(settings_for(data_dir))
    await migrate(engine)
    account = await create_account(engine)
    await engine.dispose()
    return account.id


def _message(account_id: str) -> tuple[str, Rows]:
    return new_message_rows(dict(SMS), account_id, None, time.time())


def test_an_accepted_batch_is_one_statement_on_postgresql_and_lands_whole(tmp_path: Path) -> None:
    async def run() -> None:
        account_id = await _new_account(tmp_path)
        made = [_message(account_id) for _ in range(5)]
        seen, outcomes, engine = await _accept(tmp_path, [[rows for _uuid, rows in made]])
        try:
            assert outcomes == [None] * 5
            writes = [s for s in seen if s.lstrip().upper().startswith(("INSERT", "WITH"))]
            if engine.dialect.name == "postgresql":
                assert len(writes) == 1, writes
                assert writes[0].startswith("WITH ")
            else:
                # Deferred by the driver: sent in the commit's thread hop, not through
                # SQLAlchemy (tests/test_sqlite_driver.py counts the hops).
                assert writes == [], writes
            for uuid, _rows in made:
                assert await _count(engine, messages, uuid=uuid) == 1
                assert await _count(engine, outbox, message_uuid=uuid) == 1
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_a_batch_that_fails_in_its_last_table_leaves_nothing_of_the_first(tmp_path: Path) -> None:
    async def run() -> None:
        account_id = await _new_account(tmp_path)
        first_uuid, first = _message(account_id)
        second_uuid, second = _message(account_id)
        # The second batch's outbox row repeats the first's primary key: its messages
        # insert is fine on its own, its outbox insert is not.
        clash = {table: [dict(row) for row in rows] for table, rows in second.items()}
        clash[outbox][0]["message_uuid"] = first_uuid
        _seen, outcomes, engine = await _accept(tmp_path, [[first], [clash]])
        try:
            assert outcomes[0] is None
            assert outcomes[1] is not None
            assert await _count(engine, messages, uuid=first_uuid) == 1
            assert await _count(engine, messages, uuid=second_uuid) == 0
            assert await _count(engine, outbox) == 1
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_rows_of_a_table_the_writer_does_not_write_fail_the_batch_rather_than_vanish(tmp_path: Path) -> None:
    # The writer sorts a batch's rows into its tables in one pass; a row for another
    # table is an error of the caller, reported, not a row silently left out.
    async def run() -> None:
        account_id = await _new_account(tmp_path)
        message_uuid, rows = _message(account_id)
        stray = {**rows, webhook_attempts: [{"webhook_id": "w-1", "at": 1.0, "status_code": 200}]}
        _seen, outcomes, engine = await _accept(tmp_path, [[stray]])
        try:
            assert isinstance(outcomes[0], KeyError)
            assert await _count(engine, messages, uuid=message_uuid) == 0
        finally:
            await engine.dispose()

    asyncio.run(run())


@pytest.mark.parametrize("ok", [True, False])
def test_webhook_results_record_the_attempt_and_move_the_row_together(tmp_path: Path, ok: bool) -> None:
    async def run() -> None:
        settings = settings_for(tmp_path)
        engine = make_engine(settings)
        await migrate(engine)
        account = await create_account(engine)
        now = time.time()
        row = _row("status", account.id, None, "m-1", "http://127.0.0.1:9/status", "POST", {"status": "delivered"}, now)
        row["claimed_until"] = now + 60
        writer = GroupWriter(engine, [webhook_outbox])
        writer.start()
        await writer.write({webhook_outbox: [row]})
        await writer.stop()
        sender = WebhookSender(engine, settings)
        seen = _statements(engine)
        attempt = Attempt(row["id"], now + 1, 12.5, 200 if ok else 500, None, 1, now)
        try:
            async with engine.begin() as conn:
                await sender._record(conn, [attempt])
            writes = [s for s in seen if s.lstrip().upper().startswith(("INSERT", "UPDATE", "WITH"))]
            # One statement on PostgreSQL; on SQLite both are deferred to the commit's hop.
            assert len(writes) == (1 if engine.dialect.name == "postgresql" else 0), writes
            async with engine.connect() as conn:
                hook = (await conn.execute(select(webhook_outbox).where(webhook_outbox.c.id == row["id"]))).one()
                tries = (await conn.execute(select(webhook_attempts).where(webhook_attempts.c.webhook_id == row["id"]))).all()
            assert hook.state == ("delivered" if ok else "pending")
            assert hook.attempts == 1
            assert hook.claimed_until is None
            assert hook.last_status_code == (200 if ok else 500)
            assert hook.delivered_at == (now + 1 if ok else None)
            assert [(t.status_code, t.duration_ms) for t in tries] == [(200 if ok else 500, 12.5)]
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_items_that_keep_arriving_join_the_batch_being_gathered(tmp_path: Path) -> None:
    # Answers leave in bursts and the next requests come back a few per turn of the
    # loop: they go in one commit rather than one commit per trickle.
    async def main() -> list[list[int]]:
        engine = make_engine(settings_for(tmp_path))
        commits: list[list[int]] = []

        async def commit(_conn: object, items: list[int]) -> None:
            commits.append(items)

        batcher = Batcher(engine, commit)  # type: ignore[arg-type]
        batcher.start()

        async def after(turns: int, item: int) -> None:
            for _ in range(turns):
                await asyncio.sleep(0)
            await batcher.submit(item)

        try:
            await asyncio.gather(*(after(turn, turn) for turn in range(8)))
            # A lone item still goes at once (two idle turns of the loop).
            await asyncio.wait_for(batcher.submit(99), 1)
        finally:
            await batcher.stop()
            await engine.dispose()
        return commits

    assert asyncio.run(main()) == [list(range(8)), [99]]

"""One bad item fails alone: a group commit that fails is committed again in parts.

A batch holds many callers' work; when its commit fails for something one item carries
(a row that breaks a constraint, a value the driver cannot bind), the batcher commits
its halves, and theirs, down to single items: the others commit, and only the bad
item's caller gets the error. For the dispatcher's results that item is a message
whose result cannot be written: it is recorded `undeliverable` (error 1030, with why)
rather than left to its lease and sent again for ever, and the messages that shared its
batch are recorded as usual. Both database passes run these tests.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from missive.dispatch.worker import Dispatcher
from missive.store.db import make_engine, migrate
from missive.store.links import create_link
from missive.store.messages import new_message_rows
from missive.store.tables import message_events, messages, outbox
from missive.store.writer import GroupWriter
from tests.fakes.fake_graph import Answer, FakeGraph
from tests.harness import provision, query, settings_for

SMS = {"channel": "sms", "message_type": "text", "to": "447700900000", "from": "Missive", "text": "Hello"}


def test_a_row_that_breaks_a_constraint_fails_alone_and_the_others_commit(tmp_path: Path) -> None:
    async def run() -> None:
        await asyncio.to_thread(provision, tmp_path)
        account_id = account_id_of(tmp_path)
        engine = make_engine(settings_for(tmp_path))
        await migrate(engine)
        writer = GroupWriter(engine, [messages, outbox])
        writer.start()
        try:
            taken_uuid, taken = new_message_rows(dict(SMS), account_id, None, time.time())
            await writer.write(taken)
            made = [new_message_rows(dict(SMS), account_id, None, time.time()) for _ in range(7)]
            # The fourth repeats the committed message's key: a primary key violation, in a
            # batch with six good messages.
            clash = {table: [dict(row) for row in rows] for table, rows in made[3][1].items()}
            clash[messages][0]["uuid"] = taken_uuid
            clash[outbox][0]["message_uuid"] = taken_uuid
            batch = [rows for _uuid, rows in made]
            batch[3] = clash
            results = await asyncio.gather(*(writer.write(rows) for rows in batch), return_exceptions=True)
        finally:
            await writer.stop()
        try:
            assert [type(r).__name__ for r in results] == ["NoneType"] * 3 + ["IntegrityError"] + ["NoneType"] * 3
            assert isinstance(results[3], IntegrityError)
            async with engine.connect() as conn:
                stored = set((await conn.execute(select(messages.c.uuid))).scalars())
            good = {uuid for i, (uuid, _rows) in enumerate(made) if i != 3}
            assert stored == good | {taken_uuid}
        finally:
            await engine.dispose()

    asyncio.run(run())


PAGE = "1122334455"
LINK_CONFIG = {"page_id": PAGE, "page_token": "EAAGpagetoken", "app_secret": "app-secret", "verify_token": "verify"}


def test_a_send_whose_result_cannot_be_written_is_recorded_failed_and_the_others_as_usual(tmp_path: Path) -> None:
    # The poison comes from the provider: the Graph API answers one send with a
    # message_id holding a lone surrogate ("\ud800" is valid JSON), which neither
    # database driver can bind. Its result fails alone; the batch's others are recorded.
    count, poisoned = 6, 2
    with FakeGraph() as graph:
        settings = settings_for(tmp_path, graph_api_url=graph.url, claim_linger=0.05, poll_interval=0.05)
        _account, app = provision(tmp_path)
        recipients = [f"psid-{i}" for i in range(count)]
        raw = b'{"recipient_id": "psid-2", "message_id": "m_\\ud800"}'
        graph.script(Answer(raw=raw), recipient=recipients[poisoned])

        async def run() -> dict[str, tuple[str, list[tuple]]]:
            engine = make_engine(settings)
            await migrate(engine)
            await create_link(engine, account_id_of(tmp_path), "messenger", "messenger", "page", LINK_CONFIG,
                              app["id"], None, True)
            rows_by_uuid = {}
            writer = GroupWriter(engine, [messages, outbox])
            writer.start()
            for to in recipients:
                body = {"channel": "messenger", "message_type": "text", "to": to, "from": PAGE, "text": "hi"}
                uuid, rows = new_message_rows(body, account_id_of(tmp_path), app["id"], time.time())
                rows_by_uuid[uuid] = to
                await writer.write(rows)
            await writer.stop()
            dispatcher = Dispatcher(engine, settings)
            dispatcher.start()
            try:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    async with engine.connect() as conn:
                        left = (await conn.execute(select(func.count()).select_from(outbox))).scalar_one()
                    if left == 0:
                        break
                    await asyncio.sleep(0.1)
            finally:
                await dispatcher.stop()
            found = {}
            async with engine.connect() as conn:
                for uuid, to in rows_by_uuid.items():
                    status = (await conn.execute(select(messages.c.status).where(messages.c.uuid == uuid))).scalar_one()
                    events = (await conn.execute(
                        select(message_events.c.status, message_events.c.error_code, message_events.c.error_reason)
                        .where(message_events.c.message_uuid == uuid))).all()
                    found[to] = (status, [tuple(e) for e in events])
            await engine.dispose()
            return found

        found = asyncio.run(run())
        sends = [r for r in graph.requests if r.path.endswith("/me/messages")]
    assert sorted(r.body["recipient"]["id"] for r in sends) == sorted(recipients), (
        "every message is sent once, the poisoned one too, and none again")
    for i, to in enumerate(recipients):
        status, events = found[to]
        if i == poisoned:
            assert status == "undeliverable", found
            [(event_status, code, reason)] = events
            assert (event_status, code) == ("undeliverable", 1030)
            assert reason.startswith("Internal error: the result of the send could not be recorded (")
        else:
            assert status == "submitted", found
            assert [e[0] for e in events] == ["submitted"]
    assert query(tmp_path, "SELECT COUNT(*) FROM outbox") == [(0,)]


def account_id_of(data_dir: Path) -> str:
    return str(query(data_dir, "SELECT id FROM accounts")[0][0])

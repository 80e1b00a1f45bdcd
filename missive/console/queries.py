"""What the console reads, every query filtered by the signed-in account.

Per-minute counts are grouped in SQL on `floor(time / 60)`: PostgreSQL has floor();
SQLite's CAST truncates, which is floor for the positive epoch times stored here.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Integer, and_, cast, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from missive.store.tables import (
    bind_slots,
    dispatchers,
    message_events,
    messages,
    outbox,
    provider_logs,
    webhook_attempts,
    webhook_outbox,
    workflows,
)

FAILED = ("rejected", "undeliverable")
DELIVERED = ("delivered", "read")
# Events of messages accepted this long before a chart's window are not looked for:
# the query then uses the (account, created_at) index rather than every event.
EVENT_LOOKBACK = 86400.0


def _minute(conn: AsyncConnection, column: Any) -> Any:
    if conn.dialect.name == "postgresql":
        return cast(func.floor(column / 60), Integer)
    return cast(column / 60, Integer)


def encode_cursor(created_at: float, uuid: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([created_at, uuid])).decode().rstrip("=")


def decode_cursor(value: str) -> tuple[float, str] | None:
    try:
        created_at, uuid = orjson.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        return None
    if not isinstance(created_at, (int, float)) or not isinstance(uuid, str):
        return None
    return float(created_at), uuid


@dataclass(frozen=True)
class Filters:
    channel: str | None = None
    status: str | None = None
    to: str | None = None
    from_: str | None = None
    client_ref: str | None = None
    since: float | None = None
    until: float | None = None
    application_id: str | None = None
    link_id: str | None = None
    before: tuple[float, str] | None = None


async def list_messages(engine: AsyncEngine, account_id: str, filters: Filters, limit: int) -> list[dict[str, Any]]:
    c = messages.c
    query = select(messages).where(c.account_id == account_id)
    for column, value in ((c.channel, filters.channel), (c.status, filters.status), (c.to_addr, filters.to),
                          (c.from_addr, filters.from_), (c.client_ref, filters.client_ref),
                          (c.application_id, filters.application_id), (c.link_id, filters.link_id)):
        if value:
            query = query.where(column == value)
    if filters.since is not None:
        query = query.where(c.created_at >= filters.since)
    if filters.until is not None:
        query = query.where(c.created_at < filters.until)
    if filters.before is not None:
        created_at, uuid = filters.before
        query = query.where(or_(c.created_at < created_at, and_(c.created_at == created_at, c.uuid < uuid)))
    query = query.order_by(c.created_at.desc(), c.uuid.desc()).limit(limit)
    async with engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(query)]


async def message_details(engine: AsyncEngine, account_id: str, row: dict[str, Any],
                          hooks: list[dict[str, Any]]) -> dict[str, Any]:
    """What the message page shows beside the message: webhook attempts, its workflow and
    the other messages of it, and its provider log. `row` is already the account's."""
    async with engine.connect() as conn:
        attempts: dict[str, list[dict[str, Any]]] = {h["id"]: [] for h in hooks}
        if attempts:
            rows = await conn.execute(
                select(webhook_attempts).where(webhook_attempts.c.webhook_id.in_(list(attempts)))
                .order_by(webhook_attempts.c.at, webhook_attempts.c.id)
            )
            for attempt in rows:
                attempts[attempt.webhook_id].append(dict(attempt._mapping))
        workflow, steps = None, []
        if row["workflow_id"]:
            found = (await conn.execute(select(workflows).where(
                workflows.c.id == row["workflow_id"], workflows.c.account_id == account_id))).first()
            workflow = dict(found._mapping) if found else None
            steps = [dict(r._mapping) for r in await conn.execute(
                select(messages.c.uuid, messages.c.channel, messages.c.status, messages.c.created_at)
                .where(messages.c.workflow_id == row["workflow_id"], messages.c.account_id == account_id)
                .order_by(messages.c.created_at, messages.c.uuid))]
        # The message is the account's (checked by the caller): its exchanges are too.
        logs = [dict(r._mapping) for r in await conn.execute(
            select(provider_logs).where(provider_logs.c.message_uuid == row["uuid"])
            .order_by(provider_logs.c.at, provider_logs.c.id))]
    return {"attempts": attempts, "workflow": workflow, "steps": steps, "logs": logs}


async def send_again(engine: AsyncEngine, account_id: str, message_uuid: str, webhook_id: str, now: float) -> bool:
    """Make a webhook of the account's message pending and due now (its lease dropped)."""
    async with engine.begin() as conn:
        result = await conn.execute(
            update(webhook_outbox)
            .where(webhook_outbox.c.id == webhook_id, webhook_outbox.c.account_id == account_id,
                   webhook_outbox.c.message_uuid == message_uuid)
            .values(state="pending", due_at=now, claimed_until=None, claimed_by=None)
        )
    return bool(result.rowcount == 1)


async def per_minute(engine: AsyncEngine, account_id: str, start: float) -> dict[str, dict[str, dict[int, int]]]:
    """{channel: {"accepted"|"delivered"|"failed": {minute: count}}} since `start`."""
    out: dict[str, dict[str, dict[int, int]]] = {}

    def add(channel: str, series: str, minute: int, count: int) -> None:
        bucket = out.setdefault(channel, {"accepted": {}, "delivered": {}, "failed": {}})[series]
        bucket[minute] = bucket.get(minute, 0) + count

    async with engine.connect() as conn:
        minute = _minute(conn, messages.c.created_at)
        for r in await conn.execute(
            select(messages.c.channel, minute.label("m"), func.count())
            .where(messages.c.account_id == account_id, messages.c.created_at >= start)
            .group_by(messages.c.channel, minute)
        ):
            add(r[0], "accepted", int(r[1]), int(r[2]))
        event_minute = _minute(conn, message_events.c.timestamp)
        kind = message_events.c.status.in_(FAILED)
        for r in await conn.execute(
            select(messages.c.channel, event_minute.label("m"), kind.label("failed"), func.count())
            .select_from(messages.join(message_events, message_events.c.message_uuid == messages.c.uuid))
            .where(messages.c.account_id == account_id, messages.c.created_at >= start - EVENT_LOOKBACK,
                   message_events.c.timestamp >= start, message_events.c.status.in_(("delivered", *FAILED)))
            .group_by(messages.c.channel, event_minute, kind)
        ):
            add(r[0], "failed" if r[2] else "delivered", int(r[1]), int(r[3]))
    return out


async def queue_state(engine: AsyncEngine, account_id: str) -> dict[str, Any]:
    """The account's queued messages: how many per channel, and the oldest one."""
    joined = outbox.join(messages, messages.c.uuid == outbox.c.message_uuid)
    async with engine.connect() as conn:
        depth = {r[0]: int(r[1]) for r in await conn.execute(
            select(messages.c.channel, func.count()).select_from(joined)
            .where(messages.c.account_id == account_id).group_by(messages.c.channel))}
        oldest = (await conn.execute(
            select(messages.c.uuid, messages.c.channel, messages.c.created_at, outbox.c.attempts, outbox.c.last_error)
            .select_from(joined).where(messages.c.account_id == account_id)
            .order_by(messages.c.created_at).limit(1))).first()
    return {"depth": depth, "oldest": dict(oldest._mapping) if oldest else None}


async def webhook_failures(engine: AsyncEngine, account_id: str, since: float, limit: int = 10) -> dict[str, Any]:
    """Webhooks given up on, and those still being retried after a failed attempt."""
    failing = and_(webhook_outbox.c.account_id == account_id, webhook_outbox.c.created_at >= since,
                   or_(webhook_outbox.c.state == "failed",
                       and_(webhook_outbox.c.state == "pending", webhook_outbox.c.attempts > 0)))
    async with engine.connect() as conn:
        counts = {r[0]: int(r[1]) for r in await conn.execute(
            select(webhook_outbox.c.state, func.count()).where(failing).group_by(webhook_outbox.c.state))}
        latest = [dict(r._mapping) for r in await conn.execute(
            select(webhook_outbox.c.id, webhook_outbox.c.message_uuid, webhook_outbox.c.kind, webhook_outbox.c.url,
                   webhook_outbox.c.state, webhook_outbox.c.attempts, webhook_outbox.c.last_status_code,
                   webhook_outbox.c.last_error, webhook_outbox.c.created_at)
            .where(failing).order_by(webhook_outbox.c.created_at.desc()).limit(limit))]
    return {"failed": counts.get("failed", 0), "retrying": counts.get("pending", 0), "latest": latest}


async def link_states(engine: AsyncEngine, account_id: str, link_ids: list[str], now: float,
                      window: float = 300.0) -> dict[str, dict[str, Any]]:
    """Per link: messages per minute over the last `window` seconds, its last error (of
    the last day), and its SMPP bind slots by holding process."""
    states: dict[str, dict[str, Any]] = {i: {"per_minute": 0.0, "last_error": None, "binds": []} for i in link_ids}
    if not link_ids:
        return states
    async with engine.connect() as conn:
        for r in await conn.execute(
            select(messages.c.link_id, func.count())
            .where(messages.c.account_id == account_id, messages.c.created_at >= now - window,
                   messages.c.link_id.in_(link_ids))
            .group_by(messages.c.link_id)
        ):
            states[r[0]]["per_minute"] = int(r[1]) / (window / 60)
        for link_id in link_ids:
            error = (await conn.execute(
                select(message_events.c.error_code, message_events.c.error_reason, message_events.c.timestamp)
                .select_from(messages.join(message_events, message_events.c.message_uuid == messages.c.uuid))
                .where(messages.c.account_id == account_id, messages.c.created_at >= now - EVENT_LOOKBACK,
                       messages.c.link_id == link_id, message_events.c.error_code.is_not(None))
                .order_by(message_events.c.timestamp.desc()).limit(1)
            )).first()
            states[link_id]["last_error"] = dict(error._mapping) if error else None
        slots = await conn.execute(
            select(bind_slots.c.link_id, bind_slots.c.slot, bind_slots.c.holder, bind_slots.c.until,
                   dispatchers.c.seen_at)
            .select_from(bind_slots.outerjoin(dispatchers, dispatchers.c.id == bind_slots.c.holder))
            .where(bind_slots.c.link_id.in_(link_ids)).order_by(bind_slots.c.link_id, bind_slots.c.slot)
        )
        for r in slots:
            held = r.holder is not None and r.until >= now
            states[r.link_id]["binds"].append({"slot": r.slot, "holder": r.holder if held else None,
                                               "until": r.until, "seen_at": r.seen_at})
    return states

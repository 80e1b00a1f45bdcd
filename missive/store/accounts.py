"""Queries on accounts: creation, credentials for Basic auth, listing, disabling and
deletion. Every change bumps the configuration version in the same transaction."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from missive import credentials
from missive.store import account_secrets as secret_store
from missive.store.config_version import bump
from missive.store.locks import lock_name
from missive.store.tables import (
    account_secrets,
    accounts,
    applications,
    bind_slots,
    channel_links,
    inbound_messages,
    inbound_parts,
    message_events,
    messages,
    numbers,
    outbox,
    part_receipts,
    provider_refs,
    provider_users,
    rate_buckets,
    seen_events,
    timers,
    unmatched_receipts,
    used_jtis,
    webhook_attempts,
    webhook_outbox,
    workflows,
)


@dataclass(frozen=True)
class NewAccount:
    id: str
    api_key: str
    api_secret: str
    signature_secret: str


async def create_account(engine: AsyncEngine) -> NewAccount:
    """Create an account; its api_secret is returned here once and only its hash kept."""
    async with engine.begin() as conn:
        return await _insert_account(conn)


async def create_first_account(engine: AsyncEngine) -> NewAccount | None:
    """Create an account if there is none yet (`missive serve` on an empty database);
    None when one exists. Servers starting together make one: the check and the insert
    are one transaction under a lock, PostgreSQL's advisory lock here, SQLite's writer
    lock taken by every transaction's BEGIN IMMEDIATE (store/db.py)."""
    async with engine.begin() as conn:
        await lock_name(conn, "first-account")
        if (await conn.execute(select(accounts.c.id).limit(1))).first() is not None:
            return None
        return await _insert_account(conn)


async def _insert_account(conn: AsyncConnection) -> NewAccount:
    api_secret = secret_store.new_secret()
    salt = credentials.new_salt()
    secret_hash = credentials.hash_secret(salt, api_secret)
    now = time.time()
    account = NewAccount(
        id=str(uuid.uuid4()),
        api_key=credentials.new_api_key(),
        api_secret=api_secret,
        signature_secret=credentials.new_signature_secret(),
    )
    await conn.execute(
        accounts.insert().values(
            id=account.id,
            api_key=account.api_key,
            secret_salt=salt,
            secret_hash=secret_hash,
            signature_secret=account.signature_secret,
            created_at=now,
        )
    )
    await secret_store.add(conn, account.id, salt, secret_hash, now)
    await bump(conn)
    return account


@dataclass(frozen=True)
class Credentials:
    """What Basic auth needs of an account: its id, whether it is disabled, and the salt
    and hash of each of its current secrets."""

    account_id: str
    disabled: bool
    secrets: tuple[tuple[str, str], ...]


async def credentials_of(engine: AsyncEngine, api_key: str) -> Credentials | None:
    query = (
        select(accounts.c.id, accounts.c.disabled, account_secrets.c.secret_salt, account_secrets.c.secret_hash)
        .select_from(accounts.outerjoin(account_secrets, account_secrets.c.account_id == accounts.c.id))
        .where(accounts.c.api_key == api_key)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    if not rows:
        return None
    held = tuple((r.secret_salt, r.secret_hash) for r in rows if r.secret_hash is not None)
    return Credentials(rows[0].id, bool(rows[0].disabled), held)


async def is_sending(engine: AsyncEngine, account_id: str) -> bool:
    """Whether the account's messages may be sent: it exists and is not disabled."""
    async with engine.connect() as conn:
        disabled = (await conn.execute(select(accounts.c.disabled).where(accounts.c.id == account_id))).scalar()
    return disabled is not None and not disabled


async def list_accounts(engine: AsyncEngine) -> list[dict[str, Any]]:
    """Every account's api_key, creation time and state, oldest first (no secrets)."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(accounts.c.api_key, accounts.c.created_at, accounts.c.disabled).order_by(accounts.c.created_at)
        )
        return [{"api_key": r.api_key, "created_at": r.created_at, "disabled": bool(r.disabled)} for r in rows]


async def set_disabled(engine: AsyncEngine, api_key: str, disabled: bool) -> str | None:
    """Disable or enable an account; its id, or None when there is no such account."""
    async with engine.begin() as conn:
        account_id = (await conn.execute(select(accounts.c.id).where(accounts.c.api_key == api_key))).scalar()
        if account_id is None:
            return None
        await conn.execute(update(accounts).where(accounts.c.id == account_id).values(disabled=int(disabled)))
        await bump(conn)
    return str(account_id)


class InFlight(Exception):
    """The account has messages not sent yet (accepted, or queued for a retry)."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} message(s) in flight")
        self.count = count


async def delete_account(engine: AsyncEngine, api_key: str, force: bool = False) -> bool:
    """Delete an account and everything it owns, its message history included: False when
    there is no such account; InFlight, unless `force`, while messages of it wait to be
    sent (those are then removed unsent). One transaction: a dispatcher either sees the
    account whole or not at all, and sends nothing of it afterwards."""
    async with engine.begin() as conn:
        account_id = (await conn.execute(
            select(accounts.c.id).where(accounts.c.api_key == api_key).with_for_update()
        )).scalar()
        if account_id is None:
            return False
        own = select(messages.c.uuid).where(messages.c.account_id == account_id)
        if not force:
            waiting = (await conn.execute(
                select(func.count()).select_from(messages).where(
                    messages.c.account_id == account_id,
                    or_(messages.c.status == "accepted", messages.c.uuid.in_(select(outbox.c.message_uuid))),
                )
            )).scalar_one()
            if waiting:
                raise InFlight(int(waiting))
        for table in (outbox, timers, message_events, provider_refs, part_receipts):
            await conn.execute(delete(table).where(table.c.message_uuid.in_(own)))
        hooks = select(webhook_outbox.c.id).where(webhook_outbox.c.account_id == account_id)
        await conn.execute(delete(webhook_attempts).where(webhook_attempts.c.webhook_id.in_(hooks)))
        links = select(channel_links.c.id).where(channel_links.c.account_id == account_id)
        for table in (seen_events, provider_users, unmatched_receipts, inbound_parts, bind_slots, provider_refs,
                      part_receipts):
            await conn.execute(delete(table).where(table.c.link_id.in_(links)))
        await conn.execute(delete(rate_buckets).where(rate_buckets.c.key.in_(links)))
        apps = select(applications.c.id).where(applications.c.account_id == account_id)
        await conn.execute(delete(used_jtis).where(used_jtis.c.application_id.in_(apps)))
        for table in (webhook_outbox, messages, inbound_messages, workflows, numbers, channel_links, applications,
                      account_secrets):
            await conn.execute(delete(table).where(table.c.account_id == account_id))
        await conn.execute(delete(accounts).where(accounts.c.id == account_id))
        await bump(conn)
    return True


async def get_by_api_key(engine: AsyncEngine, api_key: str) -> dict | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(accounts).where(accounts.c.api_key == api_key))).first()
    return dict(row._mapping) if row else None


async def update_webhooks(
    engine: AsyncEngine, api_key: str, status_url: str | None, inbound_url: str | None
) -> bool:
    values = {}
    if status_url is not None:
        values["status_url"] = status_url or None
    if inbound_url is not None:
        values["inbound_url"] = inbound_url or None
    if not values:
        return await get_by_api_key(engine, api_key) is not None
    async with engine.begin() as conn:
        result = await conn.execute(
            update(accounts).where(accounts.c.api_key == api_key).values(**values)
        )
        await bump(conn)
    return result.rowcount == 1

"""Queries on accounts."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from missive import credentials
from missive.store.locks import lock_name
from missive.store.tables import accounts


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
    api_secret = credentials.new_api_secret()
    salt = credentials.new_salt()
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
            secret_hash=credentials.hash_secret(salt, api_secret),
            signature_secret=account.signature_secret,
            created_at=time.time(),
        )
    )
    return account


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
    return result.rowcount == 1

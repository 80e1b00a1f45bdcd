"""Queries on accounts."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from missive import credentials
from missive.store.tables import accounts


@dataclass(frozen=True)
class NewAccount:
    id: str
    api_key: str
    api_secret: str
    signature_secret: str


async def create_account(engine: AsyncEngine) -> NewAccount:
    """Create an account; its api_secret is returned here once and only its hash kept."""
    api_secret = credentials.new_api_secret()
    salt = credentials.new_salt()
    account = NewAccount(
        id=str(uuid.uuid4()),
        api_key=credentials.new_api_key(),
        api_secret=api_secret,
        signature_secret=credentials.new_signature_secret(),
    )
    async with engine.begin() as conn:
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


async def count_accounts(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(accounts))).scalar_one())


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

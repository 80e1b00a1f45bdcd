"""Channel links: which provider account carries a channel for an account or application."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from missive.store.tables import channel_links


async def create_link(
    engine: AsyncEngine,
    account_id: str,
    kind: str,
    channel: str,
    name: str,
    config: dict[str, Any],
    application_id: str | None = None,
    tps: float | None = None,
    is_default: bool = False,
) -> dict[str, Any]:
    row = {
        "id": str(uuid.uuid4()),
        "account_id": account_id,
        "application_id": application_id,
        "channel": channel,
        "kind": kind,
        "name": name,
        "config": config,
        "tps": tps,
        "is_default": 1 if is_default else 0,
        "created_at": time.time(),
    }
    async with engine.begin() as conn:
        await conn.execute(channel_links.insert().values(**row))
    return row


async def list_links(engine: AsyncEngine, account_id: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(channel_links).where(channel_links.c.account_id == account_id).order_by(channel_links.c.created_at)
        )
        return [dict(r._mapping) for r in rows]


async def get_link(engine: AsyncEngine, account_id: str, link_id: str) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(channel_links).where(channel_links.c.account_id == account_id, channel_links.c.id == link_id)
            )
        ).first()
    return dict(row._mapping) if row else None


async def links_of_kinds(engine: AsyncEngine, kinds: list[str]) -> list[dict[str, Any]]:
    """Every account's links of these kinds (the ones whose sessions a dispatcher keeps)."""
    async with engine.connect() as conn:
        rows = await conn.execute(select(channel_links).where(channel_links.c.kind.in_(kinds)))
        return [dict(row._mapping) for row in rows]


async def update_link(
    engine: AsyncEngine,
    account_id: str,
    link_id: str,
    fields: dict[str, Any],
    new_config: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Change a link's columns; `new_config(stored row)` makes its new config, in the same
    transaction as the read (an exception from it changes nothing). (before, after), or
    None when the account has no such link."""
    where = (channel_links.c.account_id == account_id, channel_links.c.id == link_id)
    async with engine.begin() as conn:
        found = (await conn.execute(select(channel_links).where(*where).with_for_update())).first()
        if found is None:
            return None
        before = dict(found._mapping)
        values = dict(fields)
        if new_config is not None:
            values["config"] = new_config(before)
        if values:
            await conn.execute(update(channel_links).where(*where).values(**values))
    return before, {**before, **values}


async def delete_link(engine: AsyncEngine, account_id: str, link_id: str) -> bool:
    async with engine.begin() as conn:
        result = await conn.execute(
            delete(channel_links).where(channel_links.c.account_id == account_id, channel_links.c.id == link_id)
        )
    return result.rowcount == 1

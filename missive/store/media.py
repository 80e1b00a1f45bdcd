"""Inbound media Missive keeps and serves (a provider's URL needs its token, so the file
is fetched once and served from here until it expires), and the windows in which a
WhatsApp user may be written to freely.

Media live in the database, so that every process serves what any of them fetched.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from missive.store.faults import describe
from missive.store.tables import accounts, conversation_windows, media
from missive.store.upsert import insert
from missive.waiting import wait_any

log = logging.getLogger("missive.media")


async def add_media(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(media.insert().values(**row))


async def get_media(engine: AsyncEngine, media_id: str, now: float) -> dict[str, Any] | None:
    """The media and its owner's signature secret (for signed links); None when unknown
    or expired (a prune may not have run yet)."""
    query = (
        select(media, accounts.c.signature_secret)
        .join(accounts, accounts.c.id == media.c.account_id)
        .where(media.c.id == media_id, media.c.expires_at > now)
    )
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
    return dict(row._mapping) if row else None


async def prune_media(engine: AsyncEngine, now: float) -> int:
    async with engine.begin() as conn:
        result = await conn.execute(delete(media).where(media.c.expires_at <= now))
    return int(result.rowcount or 0)


async def prune_loop(engine: AsyncEngine, interval: float, stopping: asyncio.Event, clock: Callable[[], float]) -> None:
    """Delete expired media every `interval` seconds until `stopping` is set (every
    dispatcher does; two at once only find less to do)."""
    while not stopping.is_set():
        try:
            gone = await prune_media(engine, clock())
            if gone:
                log.info("media: %d expired deleted", gone)
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            log.warning("pruning media failed: %s", describe(exc))
        await wait_any(stopping, None, interval)


def link_signature(secret: str, media_id: str, expires: int) -> str:
    """The `signature` of a signed media link: HMAC-SHA256 of "{id}.{expires}" with the
    owning account's signature secret, hex."""
    return hmac.new(secret.encode(), f"{media_id}.{expires}".encode(), hashlib.sha256).hexdigest()


async def note_inbound(conn: AsyncConnection, link_id: str, user_id: str, at: float) -> None:
    """The user wrote at `at`: the window the send side reads for the 24-hour rule. A
    late, older message does not move it back."""
    statement = insert(conn, conversation_windows).values(link_id=link_id, user_id=user_id, last_inbound_at=at)
    statement = statement.on_conflict_do_update(
        index_elements=[conversation_windows.c.link_id, conversation_windows.c.user_id],
        set_={"last_inbound_at": statement.excluded.last_inbound_at},
        where=conversation_windows.c.last_inbound_at < statement.excluded.last_inbound_at,
    )
    await conn.execute(statement)

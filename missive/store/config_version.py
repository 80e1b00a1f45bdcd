"""The configuration version: one counter, bumped in the transaction of every change an
operator makes (accounts, secrets, applications, links, numbers), so that each process's
caches can tell with one cheap read whether what they hold may be stale."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from missive.cache import GENERATION
from missive.store.tables import config_version


async def bump(conn: AsyncConnection) -> None:
    """Count one more change; call it inside the transaction that makes the change, so
    that a process seeing the new version also sees the change. This process's caches
    move on when that transaction commits."""
    await conn.execute(
        update(config_version).where(config_version.c.id == 1).values(version=config_version.c.version + 1)
    )
    event.listen(conn.sync_connection, "commit", _committed, once=True)


def _committed(_conn: Any) -> None:
    GENERATION.changed()


async def current(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(config_version.c.version).where(config_version.c.id == 1))).scalar_one())

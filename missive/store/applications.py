"""Queries on applications."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from missive.store.config_version import bump
from missive.store.tables import applications


@dataclass
class ApplicationFields:
    name: str
    public_key: str
    status_url: str | None = None
    status_method: str = "POST"
    inbound_url: str | None = None
    inbound_method: str = "POST"
    extra: dict = field(default_factory=dict)


async def create_application(engine: AsyncEngine, account_id: str, fields: ApplicationFields) -> dict:
    now = time.time()
    row = {
        "id": str(uuid.uuid4()),
        "account_id": account_id,
        **fields.__dict__,
        "created_at": now,
        "updated_at": now,
    }
    async with engine.begin() as conn:
        await conn.execute(applications.insert().values(**row))
        await bump(conn)
    return row


async def get_application(engine: AsyncEngine, app_id: str, account_id: str | None = None) -> dict | None:
    query = select(applications).where(applications.c.id == app_id)
    if account_id is not None:
        query = query.where(applications.c.account_id == account_id)
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
    return dict(row._mapping) if row else None


async def list_applications(
    engine: AsyncEngine, account_id: str, page: int, page_size: int
) -> tuple[list[dict], int]:
    where = applications.c.account_id == account_id
    async with engine.connect() as conn:
        total = (await conn.execute(select(func.count()).where(where))).scalar_one()
        rows = await conn.execute(
            select(applications)
            .where(where)
            .order_by(applications.c.created_at, applications.c.id)
            .limit(page_size)
            .offset((page - 1) * page_size)
        )
        return [dict(r._mapping) for r in rows], int(total)


async def update_application(
    engine: AsyncEngine, app_id: str, account_id: str, fields: ApplicationFields
) -> dict | None:
    values = {**fields.__dict__, "updated_at": time.time()}
    async with engine.begin() as conn:
        result = await conn.execute(
            update(applications)
            .where(applications.c.id == app_id, applications.c.account_id == account_id)
            .values(**values)
        )
        await bump(conn)
    if result.rowcount != 1:
        return None
    return await get_application(engine, app_id, account_id)


async def delete_application(engine: AsyncEngine, app_id: str, account_id: str) -> bool:
    async with engine.begin() as conn:
        result = await conn.execute(
            delete(applications).where(
                applications.c.id == app_id, applications.c.account_id == account_id
            )
        )
        await bump(conn)
    return result.rowcount == 1

"""INSERT ... ON CONFLICT for the two databases Missive runs on (both dialects have it,
under their own `insert`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


def insert(conn: AsyncConnection, table: Table) -> Any:
    """The dialect's insert of `table`, which has `on_conflict_do_nothing/update`."""
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)

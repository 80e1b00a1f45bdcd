"""Channel links: which provider account carries a channel for an account or application.

Every read and write of links goes through here, because the config keys a channel kind
declares secret (`secrets`) are stored encrypted (missive/secrets_box.py): `_sealed` is
applied to every config written and `_opened` to every row read, so callers only ever
see plaintext and the database only ever gets ciphertext.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import Select, delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from missive.secrets_box import Keyring, keyring_of, open_config, seal_config, sealed_id
from missive.store.config_version import bump
from missive.store.locks import lock_name
from missive.store.tables import channel_links

# Writers of link configs hold this lock shared while they encrypt and write; a rotation
# holds it exclusively, so no value is written with a key it has just retired. (On SQLite
# BEGIN IMMEDIATE already serialises writers.)
_KEY_LOCK = "link-secrets-key"


def _secret_keys(kind: str) -> tuple[str, ...]:
    # The channel registry imports every channel (and aiohttp, pydantic models): ~0.2 s
    # of a CLI command that never opens a link's config, so it is imported on first use.
    from missive.channels.registry import secret_keys

    return secret_keys(kind)


def _opened(keyring: Keyring, row: dict[str, Any]) -> dict[str, Any]:
    """The row with its secret config values decrypted."""
    return {**row, "config": open_config(keyring, row["id"], row["config"] or {}, _secret_keys(row["kind"]))}


def _sealed(keyring: Keyring, row: dict[str, Any]) -> dict[str, Any]:
    """The (plaintext) config of a row as it is stored: its secret values encrypted."""
    return seal_config(keyring, row["id"], row["config"], _secret_keys(row["kind"]))


async def _read(engine: AsyncEngine, query: Select) -> list[dict[str, Any]]:
    keyring = keyring_of(engine)
    async with engine.connect() as conn:
        rows = [dict(r._mapping) for r in await conn.execute(query)]
    return [_opened(keyring, row) for row in rows]


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
        await lock_name(conn, _KEY_LOCK, shared=True)
        await conn.execute(channel_links.insert().values(**{**row, "config": _sealed(keyring_of(engine), row)}))
        await bump(conn)
    return row


async def list_links(engine: AsyncEngine, account_id: str) -> list[dict[str, Any]]:
    """An account's links, oldest first (what routing chooses from)."""
    return await _read(
        engine, select(channel_links).where(channel_links.c.account_id == account_id).order_by(channel_links.c.created_at)
    )


async def get_link(engine: AsyncEngine, account_id: str, link_id: str) -> dict[str, Any] | None:
    rows = await _read(
        engine, select(channel_links).where(channel_links.c.account_id == account_id, channel_links.c.id == link_id)
    )
    return rows[0] if rows else None


async def links_of_kinds(engine: AsyncEngine, kinds: list[str], account_id: str | None = None) -> list[dict[str, Any]]:
    """Every account's (or one account's) links of these kinds, oldest first: the ones
    whose sessions a dispatcher keeps, the pages and services providers call back for."""
    query = select(channel_links).where(channel_links.c.kind.in_(kinds)).order_by(channel_links.c.created_at)
    if account_id is not None:
        query = query.where(channel_links.c.account_id == account_id)
    return await _read(engine, query)


async def update_link(
    engine: AsyncEngine,
    account_id: str,
    link_id: str,
    fields: dict[str, Any],
    new_config: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Change a link's columns; `new_config(stored row)` makes its new config, in the same
    transaction as the read (an exception from it changes nothing). (before, after), or
    None when the account has no such link. Both have plaintext configs; the stored one
    is encrypted again with the current key (secrets stored in plaintext get encrypted)."""
    keyring = keyring_of(engine)
    where = (channel_links.c.account_id == account_id, channel_links.c.id == link_id)
    async with engine.begin() as conn:
        await lock_name(conn, _KEY_LOCK, shared=True)
        found = (await conn.execute(select(channel_links).where(*where).with_for_update())).first()
        if found is None:
            return None
        before = _opened(keyring, dict(found._mapping))
        values = dict(fields)
        values["config"] = new_config(before) if new_config is not None else before["config"]
        after = {**before, **values}
        await conn.execute(update(channel_links).where(*where).values(**{**values, "config": _sealed(keyring, after)}))
        await bump(conn)
    return before, after


async def reseal_all(engine: AsyncEngine) -> dict[str, int]:
    """Encrypt every link's secrets again with the keyring's current key, in one
    transaction (`missive secrets rotate`). Counts: links, values re-encrypted, and of
    those the ones that were stored in plaintext."""
    keyring = keyring_of(engine)
    counts = {"links": 0, "values": 0, "from_plaintext": 0}
    async with engine.begin() as conn:
        await lock_name(conn, _KEY_LOCK)
        rows = [dict(r._mapping) for r in await conn.execute(select(channel_links).with_for_update())]
        for row in rows:
            names = [n for n in _secret_keys(row["kind"]) if isinstance((row["config"] or {}).get(n), str)]
            if not names:
                continue
            opened = _opened(keyring, row)
            await conn.execute(update(channel_links).where(channel_links.c.id == row["id"])
                               .values(config=_sealed(keyring, opened)))
            counts["links"] += 1
            counts["values"] += len(names)
            counts["from_plaintext"] += sum(1 for n in names if sealed_id(row["config"][n]) is None)
        await bump(conn)
    return counts


async def delete_link(engine: AsyncEngine, account_id: str, link_id: str) -> bool:
    async with engine.begin() as conn:
        result = await conn.execute(
            delete(channel_links).where(channel_links.c.account_id == account_id, channel_links.c.id == link_id)
        )
        await bump(conn)
    return result.rowcount == 1

"""An account's API secrets, with the hosted Account API's rules: 8 to 25 characters
with a lower-case letter, an upper-case letter and a digit; at most two per account, so
that clients can move to a new one before the old one is revoked; never fewer than one.

Only a salted hash of each is kept (missive/credentials.py). `accounts.secret_salt` and
`secret_hash` mirror the account's oldest current secret: Basic auth reads this table, and
the columns, which older versions of Missive read, never hold a revoked secret.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from missive import credentials
from missive.store.config_version import bump
from missive.store.tables import account_secrets, accounts

MAX_SECRETS = 2
MIN_LENGTH = 8
MAX_LENGTH = 25
_CLASSES = ((re.compile(r"[a-z]"), "a lower-case letter"), (re.compile(r"[A-Z]"), "an upper-case letter"),
            (re.compile(r"[0-9]"), "a digit"))


class TooManySecrets(Exception):
    """The account has MAX_SECRETS already: one must be revoked first."""


class LastSecret(Exception):
    """The account's only secret cannot be revoked."""


def secret_problems(secret: str) -> list[str]:
    """Why `secret` breaks the rules (nothing when it keeps them)."""
    problems = []
    if not MIN_LENGTH <= len(secret) <= MAX_LENGTH:
        problems.append(f"must be {MIN_LENGTH} to {MAX_LENGTH} characters long")
    problems += [f"must contain {name}" for pattern, name in _CLASSES if not pattern.search(secret)]
    return problems


def new_secret() -> str:
    """A random secret that keeps the rules (16 characters, ~95 bits)."""
    while True:
        secret = credentials.new_api_secret()
        if not secret_problems(secret):
            return secret


async def add(conn: AsyncConnection, account_id: str, salt: str, secret_hash: str, now: float) -> dict[str, Any]:
    row = {"id": str(uuid.uuid4()), "account_id": account_id, "secret_salt": salt, "secret_hash": secret_hash,
           "created_at": now}
    await conn.execute(account_secrets.insert().values(**row))
    return {"id": row["id"], "created_at": now}


async def list_secrets(engine: AsyncEngine, account_id: str) -> list[dict[str, Any]]:
    """The account's secrets (id and created_at; never a hash), oldest first."""
    async with engine.connect() as conn:
        return await _listed(conn, account_id)


async def get_secret(engine: AsyncEngine, account_id: str, secret_id: str) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        row = (await conn.execute(
            select(account_secrets.c.id, account_secrets.c.created_at)
            .where(account_secrets.c.account_id == account_id, account_secrets.c.id == secret_id)
        )).first()
    return dict(row._mapping) if row else None


async def create_secret(engine: AsyncEngine, account_id: str, secret: str) -> dict[str, Any]:
    """Add a secret (already checked with `secret_problems`); TooManySecrets at the limit."""
    async with engine.begin() as conn:
        await _lock_account(conn, account_id)
        count = (await conn.execute(
            select(func.count()).select_from(account_secrets).where(account_secrets.c.account_id == account_id)
        )).scalar_one()
        if count >= MAX_SECRETS:
            raise TooManySecrets()
        salt = credentials.new_salt()
        created = await add(conn, account_id, salt, credentials.hash_secret(salt, secret), time.time())
        await bump(conn)
    return created


async def revoke_secret(engine: AsyncEngine, account_id: str, secret_id: str) -> bool:
    """Remove a secret: False when the account has no such secret, LastSecret when it is
    the only one."""
    async with engine.begin() as conn:
        await _lock_account(conn, account_id)
        held = await _listed(conn, account_id)
        if secret_id not in {s["id"] for s in held}:
            return False
        if len(held) == 1:
            raise LastSecret()
        await conn.execute(account_secrets.delete().where(account_secrets.c.id == secret_id))
        oldest = (await conn.execute(
            select(account_secrets.c.secret_salt, account_secrets.c.secret_hash)
            .where(account_secrets.c.account_id == account_id)
            .order_by(account_secrets.c.created_at, account_secrets.c.id).limit(1)
        )).one()
        await conn.execute(update(accounts).where(accounts.c.id == account_id)
                           .values(secret_salt=oldest.secret_salt, secret_hash=oldest.secret_hash))
        await bump(conn)
    return True


async def _listed(conn: AsyncConnection, account_id: str) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(account_secrets.c.id, account_secrets.c.created_at)
        .where(account_secrets.c.account_id == account_id)
        .order_by(account_secrets.c.created_at, account_secrets.c.id)
    )
    return [dict(row._mapping) for row in rows]


async def _lock_account(conn: AsyncConnection, account_id: str) -> None:
    """Two changes to one account's secrets wait for each other, so that two creations
    cannot make three, nor two revocations none (FOR UPDATE on PostgreSQL; on SQLite the
    transaction already holds the writer lock)."""
    await conn.execute(select(accounts.c.id).where(accounts.c.id == account_id).with_for_update())



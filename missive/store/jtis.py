"""Single-use JWTs: a token's `jti` is recorded once, until the token expires.

The check is the insert itself: the primary key (application, jti) makes a second insert
fail, in whichever process and on whichever database, with no read before the write to
race. Expired rows are deleted now and then by the process that records a new one.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from missive.store.tables import used_jtis

PURGE_EVERY = 60.0


class JtiLedger:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # The first use in each process purges, then at most every PURGE_EVERY seconds.
        self._next_purge = float("-inf")

    async def first_use(self, application_id: str, jti: str, expires_at: float, now: float) -> bool:
        """Record the jti; False when it was recorded before (the token is replayed)."""
        row = {
            "application_id": application_id,
            "jti_hash": hashlib.sha256(jti.encode("utf-8", "surrogatepass")).hexdigest(),
            "expires_at": expires_at,
        }
        purge = now >= self._next_purge
        if purge:
            self._next_purge = now + PURGE_EVERY
        try:
            async with self._engine.begin() as conn:
                if purge:
                    await conn.execute(delete(used_jtis).where(used_jtis.c.expires_at < now))
                await conn.execute(used_jtis.insert().values(row))
        except IntegrityError:
            return False
        return True

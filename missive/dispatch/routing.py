"""Which link carries a message: the application's own link for the channel, else the
account's default, else any account link for it, else the built-in sandbox."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from missive.cache import TTLCache
from missive.channels.base import ChannelLink
from missive.config import Settings
from missive.store.links import list_links


def sandbox_link(settings: Settings, channel: str) -> ChannelLink:
    config: dict[str, Any] = {
        "delivered_after": settings.sandbox_delivered_after,
        "read_after": settings.sandbox_read_after,
    }
    if settings.sandbox_log:
        config["log"] = settings.sandbox_log
    return ChannelLink(id=f"sandbox:{channel}", kind="sandbox", channel=channel, config=config)


def as_link(row: dict[str, Any], settings: Settings) -> ChannelLink:
    config = dict(row["config"])
    if row["kind"] == "sandbox" and settings.sandbox_log and "log" not in config:
        config["log"] = settings.sandbox_log
    return ChannelLink(id=row["id"], kind=row["kind"], channel=row["channel"], config=config, tps=row["tps"],
                       account_id=row["account_id"], application_id=row["application_id"])


def _rule_match(row: dict[str, Any], to: str, sender: str) -> tuple[int, int] | None:
    """How well a link's routing rules (`senders`, destination `prefixes`) fit a message:
    a sender match first, then the longest prefix; None when it has rules and none fit."""
    senders, prefixes = row["config"].get("senders") or [], row["config"].get("prefixes") or []
    if not senders and not prefixes:
        return None
    by_sender = 1 if sender in senders else 0
    longest = max((len(p) for p in prefixes if to.startswith(p)), default=-1)
    if not by_sender and longest < 0:
        return None
    return by_sender, longest


def choose(
    rows: list[dict[str, Any]], channel: str, application_id: str | None, to: str = "", sender: str = ""
) -> dict[str, Any] | None:
    """The application's links before the account's; within each, a link whose routing
    rules fit the message best; then the application's link, the account's default, the
    account's first."""
    candidates = [r for r in rows if r["channel"] == channel]
    own = [r for r in candidates if application_id and r["application_id"] == application_id]
    for group in (own, [r for r in candidates if r["application_id"] is None]):
        scored = [(score, r) for r in group if (score := _rule_match(r, to, sender)) is not None]
        if scored:
            return max(scored, key=lambda pair: pair[0])[1]
    for row in candidates:
        if application_id and row["application_id"] == application_id:
            return row
    account_wide = [r for r in candidates if r["application_id"] is None]
    for row in account_wide:
        if row["is_default"]:
            return row
    return account_wide[0] if account_wide else None


class LinkRouter:
    def __init__(self, engine: AsyncEngine, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._settings = settings
        self._clock = clock
        self._cache = TTLCache(clock)

    async def _links(self, account_id: str) -> list[dict[str, Any]]:
        # Secrets decrypted; one read for all the sends of the account that miss together.
        return await self._cache.load(account_id, lambda: list_links(self._engine, account_id))  # type: ignore[no-any-return]

    async def route(self, message: dict[str, Any]) -> ChannelLink:
        row = choose(await self._links(message["account_id"]), message["channel"], message["application_id"],
                     message["to_addr"], message["from_addr"])
        if row is None:
            return sandbox_link(self._settings, message["channel"])
        return as_link(row, self._settings)

"""Which link carries a message, among its account's links only.

Messenger, Viber and WhatsApp: the link of the page, service or number the message is
`from` (the link's `page_id` / `service_id` / `phone_number_id` or `phone_number`),
whoever sent it, Basic or JWT. SMS: a link whose routing rules
fit, else the application's link, else the account's default, else its first (a Basic-auth
message belongs to the account: its application-bound links come after the account-wide
ones). Links of kind `sandbox` are chosen like SMS links.

The built-in sandbox carries a channel only for an account with no real link for it (a
fresh install, a test account). Once real links exist, a message none of them can carry
is `rejected` (NO_LINK): faking its delivery would hide the mistake.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from missive.cache import TTLCache
from missive.channels.base import ChannelLink, Rejected
from missive.config import Settings
from missive.store.links import list_links

# Missive's own code, in the style of the Messages API's (1420 is "Invalid sender"):
# no link of the account can carry the message.
NO_LINK = 1490

# The config key naming the sender a link sends as, for the kinds whose `from` says
# which link to use.
IDENTITY = {"messenger": "page_id", "viber": "service_id", "whatsapp": "phone_number_id"}
# A WhatsApp message may also be `from` the business number itself.
ALSO_NAMED = {"whatsapp": "phone_number"}
SENDER_NAMES = {"messenger": "Facebook page", "viber_service": "Viber service", "whatsapp": "WhatsApp number"}


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


def _groups(rows: list[dict[str, Any]], application_id: str | None) -> list[list[dict[str, Any]]]:
    """The links a message may use, most its own first: a JWT message its application's,
    then the account's; a Basic-auth message the account's, then the applications'."""
    account_wide = [r for r in rows if r["application_id"] is None]
    if application_id:
        return [[r for r in rows if r["application_id"] == application_id], account_wide]
    return [account_wide, [r for r in rows if r["application_id"] is not None]]


def choose(
    rows: list[dict[str, Any]], channel: str, application_id: str | None, to: str = "", sender: str = ""
) -> dict[str, Any] | None:
    """Within the groups of `_groups`, in order: a link whose routing rules fit the
    message best; then each group's default link, else its first."""
    groups = _groups([r for r in rows if r["channel"] == channel], application_id)
    for group in groups:
        scored = [(score, r) for r in group if (score := _rule_match(r, to, sender)) is not None]
        if scored:
            return max(scored, key=lambda pair: pair[0])[1]
    for group in groups:
        if group:
            return next((r for r in group if r["is_default"]), group[0])
    return None


def sending_as(
    rows: list[dict[str, Any]], channel: str, application_id: str | None, sender: str
) -> dict[str, Any] | None:
    """The link of the page or service `sender`, its application's own first when several
    of the account's links name it."""
    named = [r for r in rows if r["channel"] == channel and r["kind"] in IDENTITY
             and sender in (r["config"].get(IDENTITY[r["kind"]]), r["config"].get(ALSO_NAMED.get(r["kind"], "")))]
    return choose(named, channel, application_id) or (named[0] if named else None)


def _no_link(message: dict[str, Any]) -> Rejected:
    channel = message["channel"]
    if channel in SENDER_NAMES:
        return Rejected(NO_LINK, f"No link: {SENDER_NAMES[channel]} {message['from_addr']!r} is not linked "
                                 f"to this account, and no sandbox link is configured for {channel}")
    whose = f"application {message['application_id']}" if message["application_id"] else "this account"
    return Rejected(NO_LINK, f"No link: none of this account's {channel} links serves {whose}")


def route(rows: list[dict[str, Any]], message: dict[str, Any]) -> dict[str, Any] | None:
    """The row of the link that carries `message`; None for the built-in sandbox. Raises
    Rejected(NO_LINK) when the account has real links for the channel and none fits."""
    channel, application_id = message["channel"], message["application_id"]
    mine = [r for r in rows if r["channel"] == channel]
    real = [r for r in mine if r["kind"] != "sandbox"]
    if any(r["kind"] in IDENTITY for r in real):
        row = sending_as(real, channel, application_id, message["from_addr"])
        if row is None:
            row = choose([r for r in mine if r["kind"] == "sandbox"], channel, application_id,
                         message["to_addr"], message["from_addr"])
    else:
        row = choose(mine, channel, application_id, message["to_addr"], message["from_addr"])
    if row is None and real:
        raise _no_link(message)
    return row


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
        row = route(await self._links(message["account_id"]), message)
        if row is None:
            return sandbox_link(self._settings, message["channel"])
        return as_link(row, self._settings)

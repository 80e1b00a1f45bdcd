"""What Missive knows about Viber users, and the rules it applies before calling Viber.

Viber addresses users by id; `to` may also be a phone number a user shared with the
service (a contact message). Before a send the dispatcher asks:

    error = await check(conn, message, link)      # None, or the SendError to record
    to = await recipient(conn, message, link)      # the Viber user id to send to

- an unknown number is rejected with 1170, never guessed, saying how to make it known;
- a user who unsubscribed is undeliverable without calling Viber;
- a `promotion` goes only to a user who already got a `transaction` (May 2018 notice):
  one recorded for the user (`had_transaction`), or one of this account's messages to
  them that Viber accepted.

Callbacks feed it through `learn` (subscribed, unsubscribed, shared contacts) and
`learn_receipt` (a receipt for a transaction message).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from missive.channels.base import ChannelLink, Rejected, SendError, Undeliverable
from missive.channels.viber import UserUpdate
from missive.schemas.addresses import normalise_msisdn
from missive.store.tables import messages, provider_refs, provider_users

ACCEPTED = ("submitted", "delivered", "read")
# Viber's bot API sends to user ids only; a number is usable once its user shared it.
UNKNOWN_NUMBER = (
    "Invalid or Missing Msisdn Param: no user of this Viber bot has shared this number with it, "
    "and Viber's bot API addresses users by their Viber user id, not by number. To reach this user, "
    "ask them to share their contact with the bot (Missive then learns their number), "
    "or send to their Viber user id (the `from` of their inbound messages)"
)
_NOT_DIGITS = re.compile(r"\D")


def is_phone(to: str) -> bool:
    return to.isascii() and to.isdigit()


def normalise_phone(value: str) -> str | None:
    try:
        return normalise_msisdn(value)
    except ValueError:
        digits = _NOT_DIGITS.sub("", value)
        return digits or None


async def _user_by_phone(conn: AsyncConnection, link_id: str, phone: str) -> dict[str, Any] | None:
    row = (
        await conn.execute(
            select(provider_users)
            .where(provider_users.c.link_id == link_id, provider_users.c.phone == phone)
            .order_by(provider_users.c.updated_at.desc())
            .limit(1)
        )
    ).first()
    return dict(row._mapping) if row else None


async def _user(conn: AsyncConnection, link_id: str, user_id: str) -> dict[str, Any] | None:
    row = (
        await conn.execute(
            select(provider_users).where(provider_users.c.link_id == link_id, provider_users.c.user_id == user_id)
        )
    ).first()
    return dict(row._mapping) if row else None


async def _resolve(conn: AsyncConnection, message: dict[str, Any], link: ChannelLink) -> tuple[str | None, dict[str, Any] | None]:
    to = message["to_addr"]
    if is_phone(to):
        user = await _user_by_phone(conn, link.id, to)
        return (user["user_id"] if user else None), user
    return to, await _user(conn, link.id, to)


async def recipient(conn: AsyncConnection, message: dict[str, Any], link: ChannelLink) -> str:
    """The Viber user id for the message's `to` (call after `check` said None)."""
    user_id, _ = await _resolve(conn, message, link)
    return user_id or message["to_addr"]


async def check(conn: AsyncConnection, message: dict[str, Any], link: ChannelLink) -> SendError | None:
    """The error that stops this message before Viber is called, or None to send it."""
    user_id, user = await _resolve(conn, message, link)
    if user_id is None:
        return Rejected(1170, UNKNOWN_NUMBER)
    if user is not None and not user["subscribed"]:
        return Undeliverable(1240, "The user unsubscribed from this Viber service")
    category = (message["body"].get("viber_service") or {}).get("category") or "transaction"
    if (
        category == "promotion"
        and not (user and user["had_transaction"])
        and not await _got_transaction(conn, message, user_id, user)
    ):
        return Rejected(
            1020, "Invalid params: a promotion can only be sent to a user who has already received a transaction message"
        )
    return None


async def _got_transaction(
    conn: AsyncConnection, message: dict[str, Any], user_id: str, user: dict[str, Any] | None
) -> bool:
    addresses = {user_id, message["to_addr"]} | ({user["phone"]} if user and user["phone"] else set())
    rows = await conn.execute(
        select(messages.c.body).where(
            messages.c.account_id == message["account_id"],
            messages.c.channel == "viber_service",
            messages.c.to_addr.in_(sorted(addresses)),
            messages.c.status.in_(ACCEPTED),
            messages.c.uuid != message["uuid"],
        )
    )
    return any((r.body.get("viber_service") or {}).get("category", "transaction") == "transaction" for r in rows)


# -- learning from callbacks ------------------------------------------------------------


async def learn(conn: AsyncConnection, link_id: str, updates: list[UserUpdate], now: float) -> None:
    """Record subscriptions and shared phone numbers."""
    for change in updates:
        values: dict[str, Any] = {"updated_at": now}
        if change.subscribed is not None:
            values["subscribed"] = 1 if change.subscribed else 0
        if change.phone:
            phone = normalise_phone(change.phone)
            if phone:
                values["phone"] = phone
        await _upsert(conn, link_id, change.user_id, values)


async def learn_receipt(conn: AsyncConnection, link_id: str, provider_ref: str, user_id: str, now: float) -> None:
    """A delivered or seen transaction message of this link: the user may now get promotions."""
    row = (
        await conn.execute(
            select(messages.c.body)
            .select_from(provider_refs.join(messages, messages.c.uuid == provider_refs.c.message_uuid))
            .where(provider_refs.c.link_id == link_id, provider_refs.c.ref == provider_ref)
        )
    ).first()
    if row is not None and (row.body.get("viber_service") or {}).get("category", "transaction") == "transaction":
        await _upsert(conn, link_id, user_id, {"had_transaction": 1, "updated_at": now})


async def _upsert(conn: AsyncConnection, link_id: str, user_id: str, values: dict[str, Any]) -> None:
    where = (provider_users.c.link_id == link_id) & (provider_users.c.user_id == user_id)
    result = await conn.execute(update(provider_users).where(where).values(**values))
    if result.rowcount == 0:
        await conn.execute(provider_users.insert().values(link_id=link_id, user_id=user_id, **values))

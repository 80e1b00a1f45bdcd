"""Numbers (SMS long codes, short codes) and the application their inbound messages go to.

Each account has its own numbers: an inbound SMS arrives on a link, which names the
account, and its `to` number is looked up among that account's numbers only (for the
application, or none for the account's own inbound URL). Another account registering
the same number, in any format, changes nothing for this one, and no answer says
whether another account has it. Numbers are kept normalised, E.164 digits without "+"
or "00", so that an SMSC's "+447700900000" finds "447700900000".
"""

from __future__ import annotations

import re
import time
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from missive.schemas.addresses import normalise_msisdn
from missive.store.config_version import bump
from missive.store.tables import applications, numbers

_SEPARATORS = re.compile(r"[\s\-().]")
_DIGITS = re.compile(r"^\d{3,15}$")
SHORT_CODE_MAX = 6


class NumberTaken(Exception):
    """The number is already linked by this account."""


class UnknownApplication(LookupError):
    """The application does not exist in this account."""


def normalise_number(value: str) -> str:
    """E.164 digits without "+" or "00" (a possible number), or a short code of 3 to 6
    digits; ValueError otherwise."""
    digits = _SEPARATORS.sub("", value)
    if digits.startswith("+"):
        digits = digits[1:]
    elif digits.startswith("00") and len(digits) > SHORT_CODE_MAX:
        digits = digits[2:]
    if not (digits.isascii() and _DIGITS.match(digits)):
        raise ValueError("must be an E.164 number (country code and number, digits only) or a short code of 3 to 6 digits")
    if len(digits) <= SHORT_CODE_MAX:
        return digits
    return normalise_msisdn(digits)


async def _check_application(conn: AsyncConnection, account_id: str, application_id: str | None) -> None:
    if application_id is None:
        return
    found = (
        await conn.execute(
            select(applications.c.id).where(applications.c.id == application_id, applications.c.account_id == account_id)
        )
    ).first()
    if found is None:
        raise UnknownApplication(f"no application {application_id} in this account")


async def add_number(engine: AsyncEngine, account_id: str, number: str, application_id: str | None = None) -> dict[str, Any]:
    """Link a number (normalised here; ValueError when it is not one). NumberTaken when it
    is linked already, UnknownApplication when the application is not the account's."""
    row = {
        "number": normalise_number(number),
        "account_id": account_id,
        "application_id": application_id,
        "created_at": time.time(),
    }
    try:
        async with engine.begin() as conn:
            await _check_application(conn, account_id, application_id)
            await conn.execute(numbers.insert().values(**row))
            await bump(conn)
    except IntegrityError:
        raise NumberTaken(f"{row['number']} is already linked to this account") from None
    return row


async def list_numbers(engine: AsyncEngine, account_id: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(numbers).where(numbers.c.account_id == account_id).order_by(numbers.c.created_at, numbers.c.number)
        )
        return [dict(r._mapping) for r in rows]


def _normalised_or_none(number: str) -> str | None:
    try:
        return normalise_number(number)
    except ValueError:
        return None


async def get_number(engine: AsyncEngine, account_id: str, number: str) -> dict[str, Any] | None:
    """The account's number, None when it is not one of the account's (or not a number)."""
    normalised = _normalised_or_none(number)
    if normalised is None:
        return None
    async with engine.connect() as conn:
        row = (
            await conn.execute(select(numbers).where(numbers.c.number == normalised, numbers.c.account_id == account_id))
        ).first()
    return dict(row._mapping) if row else None


async def update_number(
    engine: AsyncEngine, account_id: str, number: str, application_id: str | None
) -> dict[str, Any] | None:
    """Send the number's inbound messages to another application (None: the account's
    own inbound URL). None when the number is not the account's; UnknownApplication
    when the application is not."""
    normalised = _normalised_or_none(number)
    if normalised is None:
        return None
    where = (numbers.c.number == normalised, numbers.c.account_id == account_id)
    async with engine.begin() as conn:
        result = await conn.execute(update(numbers).where(*where).values(application_id=application_id))
        if result.rowcount != 1:
            return None
        await _check_application(conn, account_id, application_id)  # raising rolls back
        await bump(conn)
        row = (await conn.execute(select(numbers).where(*where))).first()
    return dict(row._mapping) if row else None


async def remove_number(engine: AsyncEngine, account_id: str, number: str) -> bool:
    normalised = _normalised_or_none(number)
    if normalised is None:
        return False
    async with engine.begin() as conn:
        result = await conn.execute(
            delete(numbers).where(numbers.c.number == normalised, numbers.c.account_id == account_id)
        )
        await bump(conn)
    return result.rowcount == 1


async def number_of(conn: AsyncConnection, account_id: str, number: str) -> tuple[str | None] | None:
    """(application_id,) of the account's number an inbound SMS was sent to, as the SMSC
    wrote it (destination_addr: "+447700900000", "00447700900000", "447700900000");
    None when the account has no such number."""
    normalised = _normalised_or_none(number)
    if normalised is None:
        return None
    row = (
        await conn.execute(
            select(numbers.c.application_id).where(numbers.c.account_id == account_id, numbers.c.number == normalised)
        )
    ).first()
    return (row.application_id,) if row else None

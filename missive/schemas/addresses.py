"""Phone numbers and sender ids: checked and normalised at the edge."""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers

_MSISDN = re.compile(r"^[1-9]\d{6,14}$")
_SEPARATORS = re.compile(r"[\s\-().]")
_ALPHA_SENDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._&+\-]{0,10}$")
_SHORT_CODE = re.compile(r"^\d{3,15}$")


@lru_cache(maxsize=65536)
def normalise_msisdn(value: str) -> str:
    """E.164 digits without '+' for a *possible* number; ValueError otherwise.

    Possible, not valid: allocation tables reject the fictional 447700900xxx range
    that the vendor's own examples use.
    """
    digits = _SEPARATORS.sub("", value)
    digits = digits.removeprefix("+")
    if not _MSISDN.match(digits):
        raise ValueError("must be an E.164 number: 7 to 15 digits with the country code, no leading + or 00")
    try:
        parsed = phonenumbers.parse("+" + digits)
    except phonenumbers.NumberParseException:
        raise ValueError("is not a phone number: unknown country code") from None
    if not phonenumbers.is_possible_number(parsed):
        raise ValueError("is not a possible phone number for its country")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)[1:]


def normalise_sms_sender(value: str) -> str:
    """A phone number, a short code, or an alphanumeric sender id of up to 11 characters."""
    stripped = value.removeprefix("+")
    if stripped.isdigit() and stripped.isascii():
        if len(stripped) >= 7:
            return normalise_msisdn(stripped)
        if _SHORT_CODE.match(stripped):
            return stripped
        raise ValueError("a numeric sender must be a short code (3 to 6 digits) or an E.164 number")
    if not _ALPHA_SENDER.match(value):
        raise ValueError(
            "must be an E.164 number or an alphanumeric sender id of 1 to 11 letters, digits, spaces or ._&+-"
        )
    return value


def normalise_viber_recipient(value: str) -> str:
    """A Viber user id, kept as is, or a phone number Missive may have learned for a user."""
    candidate = _SEPARATORS.sub("", value)
    candidate = candidate.removeprefix("+")
    if candidate.isdigit() and candidate.isascii():
        return normalise_msisdn(candidate)
    return value

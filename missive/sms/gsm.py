"""GSM 03.38 and UCS-2 for SMS: which encoding a text needs, and how many parts it takes.

Written here because no maintained Python library does both the default alphabet with
its extension table and part counting that never splits an escape sequence or a
surrogate pair.
"""

from __future__ import annotations

# The GSM 03.38 default alphabet, in code order (0x00-0x7F); 0x1B is the escape to the
# extension table, shown here as a placeholder that never matches text.
GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Characters of the extension table: each costs two septets (escape + code).
GSM_EXTENDED = {"\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F, "[": 0x3C, "~": 0x3D, "]": 0x3E, "|": 0x40, "€": 0x65}

_BASIC = {ch: code for code, ch in enumerate(GSM_BASIC) if ch != "\x1b"}

SINGLE_GSM, PART_GSM = 160, 153
SINGLE_UCS2, PART_UCS2 = 70, 67


def fits_gsm(text: str) -> bool:
    return all(ch in _BASIC or ch in GSM_EXTENDED for ch in text)


def choose_encoding(text: str, encoding_type: str | None = "auto") -> str:
    """"gsm" or "ucs2": `text` forces GSM where it fits, `unicode` forces UCS-2."""
    if encoding_type == "unicode":
        return "ucs2"
    return "gsm" if fits_gsm(text) else "ucs2"


def _cost(ch: str, encoding: str) -> int:
    if encoding == "gsm":
        return 2 if ch in GSM_EXTENDED else 1
    return 2 if ord(ch) > 0xFFFF else 1


def split_units(text: str, encoding: str) -> list[str]:
    """The text cut into parts of at most 153 septets / 67 UTF-16 units (one part when
    it fits 160 / 70), never inside an escape sequence or a surrogate pair."""
    single, part = (SINGLE_GSM, PART_GSM) if encoding == "gsm" else (SINGLE_UCS2, PART_UCS2)
    costs = [_cost(ch, encoding) for ch in text]
    if sum(costs) <= single:
        return [text]
    parts, start, used = [], 0, 0
    for index, cost in enumerate(costs):
        if used + cost > part:
            parts.append(text[start:index])
            start, used = index, 0
        used += cost
    parts.append(text[start:])
    return parts


def count_parts(text: str, encoding_type: str | None = "auto") -> int:
    return len(split_units(text, choose_encoding(text, encoding_type)))

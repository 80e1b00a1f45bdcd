"""GSM 03.38 and UCS-2 for SMS: which encoding a text needs, and where it is cut into parts.

Hand-written because no maintained Python library does GSM 03.38 with the extension
table + segmentation that never splits an escape or surrogate pair.

`split_units` is the one place that decides where a long text is cut: the dispatcher
counts parts with `count_parts`, and `missive.sms.encoding` builds the parts it sends
from the same cuts, so the two never disagree.
"""

from __future__ import annotations

# The GSM 03.38 default alphabet, in code order (0x00-0x7F); 0x1B is the escape to the
# extension table, shown here as a placeholder that never matches text.
GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
ESCAPE = 0x1B
# Characters of the extension table: each costs two septets (escape + code).
GSM_EXTENDED = {"\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F, "[": 0x3C, "~": 0x3D, "]": 0x3E, "|": 0x40, "€": 0x65}

# Every GSM character as SMPP carries it unpacked (one septet per octet): its code, or the
# escape followed by its code in the extension table. The length is its cost in septets.
GSM_SEPTETS: dict[str, bytes] = {ch: bytes([code]) for code, ch in enumerate(GSM_BASIC) if code != ESCAPE}
GSM_SEPTETS.update({ch: bytes([ESCAPE, code]) for ch, code in GSM_EXTENDED.items()})

SINGLE_GSM, PART_GSM = 160, 153
SINGLE_UCS2, PART_UCS2 = 70, 67


def fits_gsm(text: str) -> bool:
    return all(ch in GSM_SEPTETS for ch in text)


def choose_encoding(text: str, encoding_type: str | None = "auto") -> str:
    """The encoding to send `text` in, "gsm" or "ucs2": `unicode` forces UCS-2; `text`,
    `auto` (or None) take GSM when every character is in it, UCS-2 otherwise."""
    if encoding_type == "unicode":
        return "ucs2"
    return "gsm" if fits_gsm(text) else "ucs2"


def pair_surrogates(text: str) -> str:
    """The text as UTF-16 will carry it: a high + low surrogate written as two code points
    become the one character they encode, and a lone surrogate (which UTF-16 cannot
    carry) becomes U+FFFD. Texts without surrogates come back unchanged."""
    if not any("\ud800" <= ch <= "\udfff" for ch in text):
        return text
    return text.encode("utf-16-be", "surrogatepass").decode("utf-16-be", "replace")


def _cost(ch: str, encoding: str) -> int:
    if encoding == "gsm":
        return len(GSM_SEPTETS.get(ch, b"?"))
    return 2 if ord(ch) > 0xFFFF else 1


def split_units(text: str, encoding: str) -> list[str]:
    """The text cut into parts of at most 153 septets / 67 UTF-16 units (one part when
    it fits 160 / 70), never inside an escape sequence or a surrogate pair.

    For UCS-2 the parts are of `pair_surrogates(text)`, the text as it will be sent."""
    if encoding != "gsm":
        text = pair_surrogates(text)
    single, part = (SINGLE_GSM, PART_GSM) if encoding == "gsm" else (SINGLE_UCS2, PART_UCS2)
    costs = [_cost(ch, encoding) for ch in text]
    if sum(costs) <= single:
        return [text]
    parts: list[str] = []
    start, used = 0, 0
    for index, cost in enumerate(costs):
        if used + cost > part:
            parts.append(text[start:index])
            start, used = index, 0
        used += cost
    parts.append(text[start:])
    return parts


def count_parts(text: str, encoding_type: str | None = "auto") -> int:
    return len(split_units(text, choose_encoding(text, encoding_type)))

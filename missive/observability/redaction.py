"""Redaction: secrets masked, and long values cut, in time linear in the text.

It runs on the event loop for every log line, and log lines carry what clients send
(paths, headers, ids that were looked up), so no pattern here may try the same
characters again and again. Python's `re` backtracks: `[\\w-]*secret[\\w-]*=` tried at
every position of a 24,000-character path segment took half a minute. So a key is only
looked for where a run of word characters starts (a lookbehind) and is then taken whole
(`++`, which never gives characters back); every other repeat either ends at a character
it cannot contain or runs to the end of the text once.

Lines longer than `LINE_LIMIT` characters are cut before the patterns run, with a marker
saying how much was cut (and the log call's arguments to `VALUE_LIMIT` before they are
formatted into the message, so that the rest of the line survives). Known secret values (`hide`) and private keys are
masked before the cut, so cutting through one cannot leave a piece the patterns no
longer recognise.
"""

from __future__ import annotations

import re

MASK = "***"
VALUE_LIMIT = 1_000  # each argument of a log call, before it is formatted into the message
LINE_LIMIT = 4_000
TEXT_LIMIT = 64 * 1024

# A secret-looking key followed by `=` or `:` and its value ("password=x",
# '"api_secret": "x"', "Authorization: Bearer x", "X-Viber-Auth-Token: x").
_KEYED = re.compile(
    r"(?i)(?<![\w-])(?=[\w-]*?(?:password|passwd|secret|token|authorization|private[_-]?key))"
    r"([\w-]++[\"']?\s*+[:=]\s*+[\"']?)((?:basic|bearer)\s++)?[^\s\"',;&}\]]++"
)
_SCHEMES = re.compile(r"(?i)\b(basic|bearer)\s++[A-Za-z0-9._~+/=-]{8,}+")
_URL_PASSWORD = re.compile(r"(?i)((?<![a-z0-9+.-])[a-z0-9+.-]++://[^/\s:@]++:)[^@\s/]++@")
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL)
# A JWT starts a run of word characters ("Bearer eyJ..", '"eyJ..', "=eyJ.."): looking for
# it inside runs too would scan the rest of the run again from each "eyJ".
_JWT = re.compile(r"(?<![\w-])eyJ[\w-]{5,}+\.[\w-]{5,}+\.[\w-]++")
# SQLAlchemy's errors end with the statement's parameters: "[parameters: ('id', 'secret')]".
_SQL_PARAMETERS = re.compile(r"\[parameters: [^\n]*+")
SECRET_KEY = re.compile(r"(?i)password|passwd|secret|token|authorization|private[_-]?key|credential")

# Secret values this process knows (its key, the metrics token...): masked wherever they appear.
_known: set[str] = set()


def hide(value: str | None) -> None:
    """Mask `value` in every line logged from now on (values under 6 characters would
    mask ordinary words, and are left to the patterns)."""
    if value and len(value) >= 6:
        _known.add(value)


def shorten(text: str, line_limit: int = LINE_LIMIT, text_limit: int = TEXT_LIMIT) -> str:
    """`text` with each line kept to its first `line_limit` characters and the whole to
    `text_limit`, each cut marked with the number of characters it took out. Known values
    and private keys are masked first; and heads only are kept, since a tail could start
    in the middle of a value whose name was cut off."""
    for value in _known:
        if value in text:
            text = text.replace(value, MASK)
    if "PRIVATE KEY" in text:
        text = _PEM.sub("[private key " + MASK + "]", text)
    if len(text) <= line_limit and "\n" not in text:
        return text
    lines = [line if len(line) <= line_limit else _cut(line, line_limit) for line in text.split("\n")]
    text = "\n".join(lines)
    return text if len(text) <= text_limit else _cut(text, text_limit)


def _cut(text: str, limit: int) -> str:
    return f"{text[:limit]}...[{len(text) - limit} characters cut]"


def redact(text: str) -> str:
    """`text`, cut to size, with everything that looks like a secret replaced by ***."""
    return mask(shorten(text)) if text else text


def mask(text: str) -> str:
    """`text` with the secrets the patterns recognise replaced by ***, however long it is."""
    text = _KEYED.sub(lambda m: m.group(1) + (m.group(2) or "") + MASK, text)
    text = _SCHEMES.sub(lambda m: m.group(1) + " " + MASK, text)
    text = _URL_PASSWORD.sub(r"\1" + MASK + "@", text)
    text = _SQL_PARAMETERS.sub("[parameters: " + MASK + "]", text)
    return _JWT.sub(MASK, text)

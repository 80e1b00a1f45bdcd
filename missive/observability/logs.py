"""Logs: one JSON object per line (or plain text), with secrets masked.

    {"time": "2026-11-23T12:59:16.913Z", "level": "ERROR", "logger": "missive.api",
     "message": "...", "trace_id": "...", "message_uuid": "...", "exc": "Traceback ..."}

`trace_id` (the `instance` of the request's error body) and `message_uuid` appear when
the line was logged while handling a request or a message; fields given with `extra=`
are kept as further keys. `Redactor` masks passwords, secrets, tokens, Authorization
values, credentials in URLs and PEM private keys, in the message, in extra fields and in
tracebacks, before any formatter sees them.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import IO, Any

import orjson

from missive.config import Settings
from missive.observability import context

MASK = "***"

# A secret-looking key followed by `=` or `:` and its value ("password=x",
# '"api_secret": "x"', "Authorization: Bearer x", "X-Viber-Auth-Token: x").
_KEYED = re.compile(
    r"(?i)([\w-]*(?:password|passwd|secret|token|authorization|private[_-]?key)[\w-]*"
    r"[\"']?\s*[:=]\s*[\"']?)((?:basic|bearer)\s+)?[^\s\"',;&}\]]+"
)
_SCHEMES = re.compile(r"(?i)\b(basic|bearer)\s+[A-Za-z0-9._~+/=-]{8,}")
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@", re.IGNORECASE)
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL)
_JWT = re.compile(r"\beyJ[\w-]{5,}\.[\w-]{5,}\.[\w-]+")
_SECRET_KEY = re.compile(r"(?i)password|passwd|secret|token|authorization|private[_-]?key|credential")

# Attributes every LogRecord has: anything else came from `extra=`.
# (uvicorn adds `color_message`, the same message with terminal colours.)
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName", "color_message"}


def redact(text: str) -> str:
    """`text` with everything that looks like a secret replaced by ***."""
    if not text:
        return text
    text = _PEM.sub("[private key " + MASK + "]", text)
    text = _KEYED.sub(lambda m: m.group(1) + (m.group(2) or "") + MASK, text)
    text = _SCHEMES.sub(lambda m: m.group(1) + " " + MASK, text)
    text = _URL_PASSWORD.sub(r"\1" + MASK + "@", text)
    return _JWT.sub(MASK, text)


def _redact_value(key: str, value: Any) -> Any:
    if _SECRET_KEY.search(key):
        return MASK
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value("", v) for v in value]
    return value


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class Redactor(logging.Filter):
    """Masks secrets in a record's message and extra fields (the formatters mask tracebacks)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - arguments that do not fit: log the template
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        for key, value in extra_fields(record).items():
            setattr(record, key, _redact_value(key, value))
        return True


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    text = record.exc_text or ""
    if record.stack_info:
        text = f"{text}\n{formatter.formatStack(record.stack_info)}".strip()
    return redact(text) if text else None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        trace = context.trace_id()
        if trace:
            line["trace_id"] = trace
        message_uuid = context.message_uuid.get()
        if message_uuid:
            line["message_uuid"] = message_uuid
        for key, value in extra_fields(record).items():
            line.setdefault(key, value)
        exc = _exception_text(self, record)
        if exc:
            line["exc"] = exc
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = redact(super().format(record))  # the message is already masked; the traceback not
        trace, message_uuid = context.trace_id(), context.message_uuid.get()
        if trace:
            text += f" trace_id={trace}"
        if message_uuid:
            text += f" message_uuid={message_uuid}"
        return text


def make_handler(log_format: str, stream: IO[str] | None = None) -> logging.Handler:
    if log_format not in ("json", "text"):
        raise ValueError(f"MISSIVE_LOG_FORMAT: expected json or text, not {log_format!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(Redactor())
    return handler


def configure_logging(settings: Settings) -> None:
    """Route every log record (Missive's, uvicorn's, libraries') through one handler."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(make_handler(settings.log_format))
    root.setLevel(settings.log_level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True

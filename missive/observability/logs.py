"""Logs: one JSON object per line (or plain text), with secrets masked.

    {"time": "2026-11-23T12:59:16.913Z", "level": "ERROR", "logger": "missive.api",
     "message": "...", "trace_id": "...", "message_uuid": "...", "exc": "Traceback ..."}

`trace_id` (the `instance` of the request's error body) and `message_uuid` appear when
the line was logged while handling a request or a message; fields given with `extra=`
are kept as further keys. `Redactor` masks passwords, secrets, tokens, Authorization
values, credentials in URLs and PEM private keys, in the message, in extra fields and in
tracebacks, before any formatter sees them, after cutting long values to size
(`redaction.py`). Libraries' lines below WARNING lose their arguments, and below
`log_library_level` are dropped: at debug, aiosqlite would print every SQL parameter.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO, Any
from urllib.parse import urlsplit

import orjson

from missive.config import Settings
from missive.observability import context
from missive.observability.redaction import MASK, SECRET_KEY, VALUE_LIMIT, hide, redact, shorten

# Attributes every LogRecord has: anything else came from `extra=`.
# (uvicorn adds `color_message`, the same message with terminal colours.)
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName", "color_message"}

# Loggers whose arguments are ours or known to be safe to print once masked. Any other
# library may pass SQL parameters, result rows or headers as arguments (aiosqlite and
# SQLAlchemy do, at DEBUG and INFO): below WARNING its lines keep their template only.
_TRUSTED = frozenset({"missive", "uvicorn", "alembic", "asyncio", "httpx"})
_ARGUMENTS_HIDDEN = "[arguments not logged]"


def _trusted(name: str) -> bool:
    return name.partition(".")[0] in _TRUSTED


def _redact_value(key: str, value: Any) -> Any:
    if SECRET_KEY.search(key):
        return MASK
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value("", v) for v in value]
    return value


def _cut_argument(value: Any) -> Any:
    """A long argument cut before it is formatted into the message, so that the rest of
    the template (a trace id after a 100,000-character path) survives the message's cut."""
    if isinstance(value, (str, bytes)) and len(value) > VALUE_LIMIT:
        return shorten(value if isinstance(value, str) else repr(value), VALUE_LIMIT)
    return value


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class Redactor(logging.Filter):
    """Masks secrets in a record's message and extra fields (the formatters mask tracebacks)."""

    def __init__(self, library_level: int = logging.NOTSET) -> None:
        super().__init__()
        self.library_level = library_level

    def filter(self, record: logging.LogRecord) -> bool:
        trusted = _trusted(record.name)
        if not trusted and record.levelno < self.library_level:
            return False
        if record.args and not trusted and record.levelno < logging.WARNING:
            message = f"{record.msg} {_ARGUMENTS_HIDDEN}"
        else:
            message = _formatted(record)
        record.msg, record.args = redact(message), None
        for key, value in extra_fields(record).items():
            setattr(record, key, _redact_value(key, value))
        return True


def _formatted(record: logging.LogRecord) -> str:
    if isinstance(record.args, dict):
        record.args = {key: _cut_argument(value) for key, value in record.args.items()}
    elif isinstance(record.args, tuple):
        record.args = tuple(_cut_argument(value) for value in record.args)
    try:
        return record.getMessage()
    except Exception:  # noqa: BLE001 - arguments that do not fit: log the template
        return str(record.msg)


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


def make_handler(log_format: str, stream: IO[str] | None = None, library_level: int = logging.NOTSET) -> logging.Handler:
    if log_format not in ("json", "text"):
        raise ValueError(f"MISSIVE_LOG_FORMAT: expected json or text, not {log_format!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(Redactor(library_level))
    return handler


def resolved_format(log_format: str, stream: IO[str]) -> str:
    """`auto`: plain lines for a person at a terminal, JSON for anything that collects them."""
    if log_format != "auto":
        return log_format
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # a stream without a descriptor, or closed
        return "json"


def configure_logging(settings: Settings) -> None:
    """Route every log record (Missive's, uvicorn's, libraries') through one handler.
    Libraries' records below `log_library_level` are dropped whatever `log_level` says."""
    for value in (*settings.secret_key.get_secret_value().replace(",", " ").split(), settings.metrics_token,
                  urlsplit(settings.database_url).password):
        hide(value)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    log_format = resolved_format(settings.log_format, sys.stderr)
    root.addHandler(make_handler(log_format, library_level=_level(settings.log_library_level)))
    root.setLevel(_level(settings.log_level))
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True


def _level(name: str) -> int:
    level = logging.getLevelName(name.upper())
    if not isinstance(level, int):
        raise ValueError(f"not a log level: {name!r}")
    return level

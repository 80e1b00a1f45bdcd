"""Provider logs: each exchange with a provider for one message (an HTTP request and its
answer, an SMPP PDU, what the sandbox did), in readable form, secrets masked, cut to size.

    Exchange("out", "http", "POST graph.example/v19.0/me/messages",
             {"method": "POST", "url": "...?access_token=***", "headers": {...}, "body": "{...}"})
    Exchange("in", "smpp", "submit_sm_resp message_id=1f2e", {"command_status": "ESME_ROK", ...})

Channels never see the database. The dispatcher opens a `Recorder` around each send
(`recording`); a context variable makes it the current one for that send's task alone,
and whatever the channel's code records meanwhile (`record`, or the HTTP client made by
`recorded_client`, whose hooks record every request and answer) lands in it. The
dispatcher then writes the recorder's rows in the same results batch as the send's
outcome. Outside a send nothing is current and `record` does nothing.

MISSIVE_PROVIDER_LOGS: `all` (default), `off`, or `sample:N` (the messages one in N,
chosen by the uuid's random tail, so a sampled message keeps all its exchanges).
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import orjson

from missive.observability.redaction import MASK, SECRET_KEY, mask

# A body is kept to its first 8 KiB; a message to its first exchanges (a multipart SMS of
# 10 parts makes 20: submit_sm and submit_sm_resp each).
BODY_LIMIT = 8 * 1024
TEXT_LIMIT = 2 * 1024
MAX_EXCHANGES = 40
# Header values worth reading; the rest (dates, servers, lengths) only make the log long.
_HEADERS = frozenset({"content-type", "retry-after", "x-fb-trace-id", "x-fb-debug", "www-authenticate"})
# Keys that name a secret-looking word but hold a reference worth reading (Viber's).
_NOT_SECRET = frozenset({"message_token"})


@dataclass(frozen=True, slots=True)
class Exchange:
    direction: str  # "out" (to the provider) | "in" (from it)
    protocol: str  # "http" | "smpp" | "sandbox"
    summary: str
    detail: dict[str, Any]
    at: float


class Policy:
    """Which messages' exchanges are kept: MISSIVE_PROVIDER_LOGS."""

    def __init__(self, setting: str = "all") -> None:
        self.every = parse(setting)

    @property
    def on(self) -> bool:
        return self.every > 0

    def wants(self, message_uuid: str) -> bool:
        if self.every <= 1:
            return self.every == 1
        try:
            return int(message_uuid[-8:], 16) % self.every == 0
        except ValueError:
            return False


def parse(setting: str) -> int:
    """`all` -> 1, `off` -> 0, `sample:N` -> N (one message in N); ValueError otherwise."""
    value = setting.strip().lower()
    if value in ("all", "on"):
        return 1
    if value in ("off", "none"):
        return 0
    if value.startswith("sample:") and value[7:].isdigit() and int(value[7:]) >= 1:
        return int(value[7:])
    raise ValueError(f"MISSIVE_PROVIDER_LOGS: expected all, off or sample:N, not {setting!r}")


class Recorder:
    """The exchanges of one send of one message, as rows of `provider_logs`."""

    __slots__ = ("message_uuid", "account_id", "link_id", "exchanges", "_secrets")

    def __init__(self, message_uuid: str, account_id: str | None) -> None:
        self.message_uuid = message_uuid
        self.account_id = account_id
        self.link_id: str | None = None
        self.exchanges: list[Exchange] = []
        self._secrets: list[str] = []

    def on_link(self, link_id: str, config: dict[str, Any], secrets: Iterable[str]) -> None:
        """The send goes out on this link: its credentials are masked wherever they appear."""
        self.link_id = link_id
        for key in secrets:
            value = config.get(key)
            if isinstance(value, str) and len(value) >= 4:
                self._secrets.append(value)

    def add(self, exchange: Exchange) -> None:
        if len(self.exchanges) < MAX_EXCHANGES:
            self.exchanges.append(exchange)

    def rows(self, failure: str | None = None) -> tuple[dict[str, Any], ...]:
        """The rows to insert; `failure`, the send's error, stands for the answer of a
        request left without one (a timeout, a refused connection)."""
        if failure and self.exchanges and self.exchanges[-1].direction == "out" and self.exchanges[-1].protocol == "http":
            self.add(Exchange("in", "http", f"no answer: {failure}", {"error": failure}, time.time()))
        return tuple(row(e, self.message_uuid, self.account_id, self.link_id, self._secrets) for e in self.exchanges)


def row(exchange: Exchange, message_uuid: str, account_id: str | None, link_id: str | None,
        secrets: Iterable[str] = ()) -> dict[str, Any]:
    detail = orjson.dumps(exchange.detail, default=str).decode()
    summary = exchange.summary
    for secret in secrets:
        # As written and as JSON escapes it (a token with a quote or a backslash).
        for form in {secret, orjson.dumps(secret).decode()[1:-1]}:
            detail = detail.replace(form, MASK)
            summary = summary.replace(form, MASK)
    return {"message_uuid": message_uuid, "account_id": account_id, "link_id": link_id,
            "direction": exchange.direction, "protocol": exchange.protocol, "summary": summary[:500],
            "detail": detail, "at": exchange.at}


_current: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar("missive_exchanges", default=None)


@contextmanager
def recording(recorder: Recorder | None) -> Iterator[Recorder | None]:
    """Make `recorder` the current one (None: record nothing) for the enclosed send."""
    token = _current.set(recorder)
    try:
        yield recorder
    finally:
        _current.reset(token)


def current() -> Recorder | None:
    return _current.get()


def record(direction: str, protocol: str, summary: str, detail: dict[str, Any] | None = None,
           at: float | None = None) -> None:
    """Add an exchange to the current send's log (at `at`, else now); nothing outside a
    recorded send."""
    recorder = _current.get()
    if recorder is not None:
        recorder.add(Exchange(direction, protocol, summary, detail or {}, time.time() if at is None else at))


# -- HTTP ---------------------------------------------------------------------------------


def recorded_client(**kwargs: Any) -> httpx.AsyncClient:
    """An httpx client whose requests and answers go to the current send's log (every
    HTTP channel makes its client here: Graph, Viber, WhatsApp)."""
    hooks = kwargs.pop("event_hooks", None) or {}
    return httpx.AsyncClient(
        event_hooks={"request": [*hooks.get("request", ()), _on_request],
                     "response": [*hooks.get("response", ()), _on_response]},
        **kwargs,
    )


async def _on_request(request: httpx.Request) -> None:
    recorder = _current.get()
    if recorder is None:
        return
    request.extensions["missive_started"] = time.monotonic()
    url = safe_url(request.url)
    try:
        content = request.content
    except httpx.RequestNotRead:
        content = b"[streamed body]"
    detail = {"method": request.method, "url": url, "headers": safe_headers(request.headers, everything=True),
              "body": body_text(content)}
    recorder.add(Exchange("out", "http", f"{request.method} {url.split('?', 1)[0]}", detail, time.time()))


async def _on_response(response: httpx.Response) -> None:
    recorder = _current.get()
    if recorder is None:
        return
    # The channel reads the whole answer next in any case.
    await response.aread()
    started = response.request.extensions.get("missive_started")
    elapsed = round((time.monotonic() - started) * 1000, 1) if isinstance(started, float) else None
    body = body_text(response.content)
    detail = {"status": response.status_code, "headers": safe_headers(response.headers), "body": body,
              "elapsed_ms": elapsed}
    summary = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
    recorder.add(Exchange("in", "http", f"{summary}: {_head(body)}", detail, time.time()))


def safe_url(url: httpx.URL | str) -> str:
    """The URL with its user info dropped and secret-looking query values masked."""
    parts = urlsplit(str(url))
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = urlencode([(k, MASK if SECRET_KEY.search(k) or k.lower().endswith("proof") else v)
                       for k, v in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def safe_headers(headers: httpx.Headers, everything: bool = False) -> dict[str, str]:
    """Headers worth reading (all of a request's), credentials masked."""
    kept = {}
    for name, value in headers.items():
        name = name.lower()
        if SECRET_KEY.search(name) or name in ("cookie", "set-cookie", "proxy-authorization"):
            kept[name] = MASK
        elif everything or name in _HEADERS:
            kept[name] = value[:TEXT_LIMIT]
    return kept


def body_text(content: bytes) -> str:
    """A body as text: JSON with secret-looking keys masked, the first BODY_LIMIT bytes."""
    if not content:
        return ""
    head = content[:BODY_LIMIT]
    try:
        # JSON: secret-looking keys masked by name (the link's own secrets are masked by
        # value later, wherever they are).
        text = orjson.dumps(_masked(orjson.loads(content))).decode() if len(content) <= 4 * BODY_LIMIT else None
    except orjson.JSONDecodeError:
        text = None
    if text is None:
        text = mask(head.decode("utf-8", "replace"))
    if len(text) > BODY_LIMIT or len(content) > BODY_LIMIT:
        return f"{text[:BODY_LIMIT]}...[{len(content)} bytes in all]"
    return text


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: MASK if isinstance(k, str) and SECRET_KEY.search(k) and k not in _NOT_SECRET else _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def _head(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."

"""One Settings object, read once from MISSIVE_* environment variables and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MISSIVE_", extra="ignore")

    data_dir: Path = Path(".")
    # Any SQLAlchemy URL; empty means SQLite in data_dir/missive.db.
    database_url: str = ""
    # NORMAL is durable against a killed process in WAL mode (the WAL is fsynced at
    # checkpoints); FULL also survives power loss at about half the commit rate.
    sqlite_synchronous: str = "NORMAL"
    # Seconds an SQLite statement waits for another connection's lock before the request
    # gets a 503 (and a dispatcher loop tries again later).
    sqlite_busy_timeout: float = 30.0
    # A cap on the SQLite database's size in pages (of 4 KiB), for operators who want one:
    # past it writes fail as on a full disk (507). 0: no cap.
    sqlite_max_pages: int = 0

    # Keys encrypting provider credentials at rest: urlsafe base64 of 32 bytes, several
    # separated by commas (the first encrypts, all decrypt). Unset: data_dir/secret.key,
    # generated on first use. See missive/secrets_box.py and docs/security.md.
    secret_key: SecretStr = SecretStr("")

    host: str = "127.0.0.1"
    port: int = 8080

    # A JWT without `exp` is accepted this long after its `iat` (API.md: 15 minutes).
    jwt_max_age: int = 900
    # The longest a JWT is good for after its `iat`, whatever its `exp` says: one whose
    # `exp` is further than this from its `iat` is refused (a day; the SDKs ask 15 min).
    jwt_max_lifetime: int = 86400
    # Clock skew tolerated on `iat`/`nbf`/`exp`.
    jwt_leeway: int = 30
    max_body_bytes: int = 1024 * 1024
    # Seconds a client has to send a request's head (from the connection's opening, or
    # from its first bytes on a kept-alive one), then its body; 0 turns a limit off.
    request_header_timeout: float = 10.0
    request_body_timeout: float = 30.0
    # Abuse limits (docs/security.md). Requests per second per api_key (Basic) or
    # application (JWT), in each process; 0 turns the limit off. The default is well above
    # what one process accepts (~16,000/s on our 2-core machine), so only a lower setting
    # throttles. Burst 0 means twice the rate.
    request_rate: float = 100_000.0
    request_burst: float = 0.0
    # Refuse a second use of a JWT's `jti` (and a JWT without one), across processes.
    jwt_single_use: bool = False
    # Rows written per group commit on the accept path.
    write_batch_max: int = 512

    # Dispatch: leases, retries and concurrency.
    dispatch_in_serve: bool = True
    # `serve --dispatch-process`: the dispatcher in a child process of the API's.
    dispatch_process: bool = False
    # Set by the API process for its dispatcher child: woken through standard input.
    dispatch_woken_by_stdin: bool = False
    # `missive dispatch` serves /health, /ready and /metrics on this port (0: none).
    dispatch_metrics_port: int = 0
    dispatch_metrics_host: str = "127.0.0.1"
    lease_seconds: float = 60.0
    poll_interval: float = 0.2
    # After a claim that was not full, wait this long so that rows gather into batches.
    claim_linger: float = 0.01
    # Sends not yet recorded are what a crash may send twice. A slot is held from the
    # claim until the result is committed (batched, tens of milliseconds), so this bounds
    # throughput too: 128 held one dispatcher to about 400 messages/s on PostgreSQL.
    dispatch_max_in_flight: int = 512
    dispatch_max_attempts: int = 10
    dispatch_backoff_base: float = 1.0
    dispatch_backoff_cap: float = 300.0
    shutdown_timeout: float = 10.0

    # Webhooks: retried for at least a day (two by default), bounded per receiver.
    webhook_timeout: float = 10.0
    # A slot is held until the attempt is recorded; with 32 per receiver one receiver
    # took at most ~800 webhooks/s (docs/benchmarks.md). A crash may deliver again what
    # was in flight.
    webhook_max_in_flight: int = 1024
    webhook_per_target: int = 128
    webhook_retry_for: float = 2 * 86400.0
    webhook_backoff_base: float = 5.0
    webhook_backoff_cap: float = 3600.0
    # Outbound URLs (webhooks, media): loopback, private, link-local and other internal
    # addresses are refused unless allowed here (see missive/url_safety.py). True is for a
    # developer's machine; MISSIVE_ALLOWED_URL_NETWORKS allows chosen CIDRs, comma-separated.
    allow_private_urls: bool = False
    allowed_url_networks: str = ""

    # Where Missive is reachable from the internet (provider webhooks are registered on it).
    public_url: str | None = None
    # Provider APIs: settings so that tests and proxies can point them elsewhere.
    graph_api_url: str = "https://graph.facebook.com"
    graph_api_version: str = "v19.0"
    viber_api_url: str = "https://chatapi.viber.com"
    provider_timeout: float = 10.0
    # Inbound media fetched from providers whose URLs need a token (WhatsApp): the largest
    # kept, how long fetching one may hold the provider's callback, how long it is served
    # (GET /v1/media/{id}) before the dispatcher deletes it, and how often it looks.
    media_max_bytes: int = 16 * 1024 * 1024
    media_fetch_timeout: float = 10.0
    media_retention_days: float = 7.0
    media_prune_interval: float = 60.0
    # How often the dispatcher opens sessions of new SMPP links and closes removed ones,
    # and the least time its bind slots are held for (dispatch/sessions.py: three rounds,
    # and at least this long, so that a busy process keeps its binds).
    sessions_interval: float = 5.0
    bind_lease_min: float = 10.0

    # The sandbox channel's simulated receipts, and an optional log of what reached it.
    sandbox_delivered_after: float = 1.0
    sandbox_read_after: float = 2.0
    sandbox_log: str | None = None

    # Logs: one JSON object per line ("json") or plain lines ("text"); "auto" is text when
    # the logs go to a terminal, else JSON. See docs/operations.md.
    log_format: Literal["auto", "json", "text"] = "auto"
    log_level: str = "info"
    # Third-party libraries' lines below this level are left out even at log_level debug
    # (aiosqlite writes two per query); below WARNING theirs never carry their arguments.
    log_library_level: str = "info"
    # Provider logs (GET /v1/messages/{uuid}/logs): every exchange with a provider for a
    # message, secrets masked. "all", "off", or "sample:N" (one message in N); kept this
    # many days (fractions allowed), pruned by the dispatcher.
    provider_logs: str = "all"
    provider_log_days: float = 7.0

    # When set, GET /metrics wants `Authorization: Bearer <this>`; when empty it is open,
    # and should not be reachable from outside.
    metrics_token: str = ""

    # How long a console sign-in lasts (docs/console.md).
    console_session_hours: float = 12.0

    @field_validator("allowed_url_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        from missive.url_safety import parse_networks

        parse_networks(value)  # a typo stops the start, rather than allowing nothing
        return value

    @field_validator("provider_logs")
    @classmethod
    def _provider_logs(cls, value: str) -> str:
        from missive.observability.exchanges import parse

        parse(value)
        return value

    def resolved_database_url(self) -> str:
        url = self.database_url or f"sqlite:///{(self.data_dir / 'missive.db').as_posix()}"
        return async_url(url)


def async_url(url: str) -> str:
    """Map a plain SQLAlchemy URL to the asyncio driver Missive runs on."""
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://"):]
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("postgresql+psycopg"):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    return url

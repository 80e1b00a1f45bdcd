"""One Settings object, read once from MISSIVE_* environment variables and passed down."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MISSIVE_", extra="ignore")

    data_dir: Path = Path(".")
    # Any SQLAlchemy URL; empty means SQLite in data_dir/missive.db.
    database_url: str = ""
    # NORMAL is durable against a killed process in WAL mode (the WAL is fsynced at
    # checkpoints); FULL also survives power loss at about half the commit rate.
    sqlite_synchronous: str = "NORMAL"

    host: str = "127.0.0.1"
    port: int = 8080

    # A JWT without `exp` is accepted this long after its `iat` (API.md: 15 minutes).
    jwt_max_age: int = 900
    # Clock skew tolerated on `iat`/`nbf`/`exp`.
    jwt_leeway: int = 30
    max_body_bytes: int = 1024 * 1024
    # Rows written per group commit on the accept path.
    write_batch_max: int = 512

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

"""What the `missive` commands share: a database for one command, output, errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import typer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from missive.config import Settings
from missive.store import applications as app_store
from missive.store import links as link_store
from missive.store.db import make_engine, migrate
from missive.store.tables import accounts
from missive.url_safety import UnsafeUrl, check_url, policy_for

T = TypeVar("T")

channel_add_cli = typer.Typer(help="Link a provider account to a channel.", no_args_is_help=True)


def with_engine(work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    async def run() -> T:
        engine = make_engine(Settings())
        try:
            await migrate(engine)
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def emit(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(data))
        return
    for key, value in data.items():
        typer.echo(f"{key}: {value}")


def fail(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(1)


def check_webhook_urls(status_url: str | None, inbound_url: str | None) -> None:
    """--status-url and --inbound-url, checked as the API checks webhook URLs (no DNS;
    see missive/url_safety.py). An empty value clears a URL and passes."""
    settings = Settings()
    for option, url in (("--status-url", status_url), ("--inbound-url", inbound_url)):
        if url:
            try:
                check_url(url, policy_for(settings))
            except UnsafeUrl as exc:
                fail(f"{option}: {exc}")


async def account_id_for(engine: AsyncEngine, api_key: str | None) -> str:
    async with engine.connect() as conn:
        query = select(accounts.c.id, accounts.c.api_key).order_by(accounts.c.created_at)
        if api_key:
            query = query.where(accounts.c.api_key == api_key)
        rows = (await conn.execute(query)).all()
    if not rows:
        raise LookupError(f"no account with api_key {api_key}" if api_key else "no account yet: run `missive account create`")
    if len(rows) > 1:
        raise LookupError("several accounts exist: say which with --api-key")
    return str(rows[0].id)


def for_account(api_key: str | None, action: Callable[[AsyncEngine, str], Awaitable[T]]) -> T:
    """Run `action(engine, account_id)` for the account named by --api-key (or the only
    one); a missing account ends the command with its message."""

    async def work(engine: AsyncEngine) -> T:
        return await action(engine, await account_id_for(engine, api_key))

    try:
        return with_engine(work)
    except LookupError as exc:
        fail(str(exc))


def add_link(
    kind: str,
    channel: str,
    name: str | None,
    config: dict[str, Any],
    app_id: str | None = None,
    tps: float | None = None,
    default: bool = False,
    api_key: str | None = None,
    as_json: bool = False,
) -> dict[str, Any]:
    """Validate like `POST /v1/channels`, store the link, print it (secrets left out)."""
    from missive.api.channels import link_view, parse_link
    from missive.api.errors import ProblemError

    body = {"kind": kind, "channel": channel, "name": name or f"{kind}-{channel}", "application_id": app_id,
            "tps": tps, "default": default, "config": {k: v for k, v in config.items() if v is not None}}
    try:
        parsed, clean = parse_link(body)
    except ProblemError as problem:
        fail("; ".join(f"{p.name}: {p.reason}" for p in problem.invalid_parameters) or problem.detail)

    async def work(engine: AsyncEngine) -> dict:
        account_id = await account_id_for(engine, api_key)
        if parsed.application_id and await app_store.get_application(engine, parsed.application_id, account_id) is None:
            raise LookupError(f"no application {parsed.application_id} in this account")
        return await link_store.create_link(engine, account_id, parsed.kind, parsed.channel, parsed.name, clean,
                                            parsed.application_id, parsed.tps, parsed.default)

    try:
        row = with_engine(work)
    except LookupError as exc:
        fail(str(exc))
    view = link_view(row)
    emit(view, as_json)
    return row

"""`missive account list|disable|enable|delete` and `missive account secret
list|create|revoke`: the hosted Account API's secret rotation, from the command line.

A disabled account's credentials get 401 and its messages are not sent (they end
`rejected`, error 1060); enabling it again lets new messages through. Deleting removes
the account and everything it owns, its message history included; it is refused while
messages of the account wait to be sent, unless --force (they are then dropped unsent).
"""

from __future__ import annotations

import json
import time
from typing import Any

import typer
from sqlalchemy.ext.asyncio import AsyncEngine

from missive.cli_support import emit, fail, for_account, with_engine
from missive.store import account_secrets as secret_store
from missive.store import accounts as account_store

secret_cli = typer.Typer(help="An account's API secrets (two at most, one at least).", no_args_is_help=True)

_API_KEY = typer.Option(None, "--api-key", help="The account (needed when there are several).")
_JSON = typer.Option(False, "--json", help="Print JSON.")


def _when(epoch: float) -> str:
    # As the Account API shows it.
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def account_list(as_json: bool = _JSON) -> None:
    """List the accounts: api_key, when created, whether disabled (never a secret)."""
    rows = [{**row, "created_at": _when(row["created_at"])} for row in with_engine(account_store.list_accounts)]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for row in rows:
        typer.echo(f"{row['api_key']}  {row['created_at']}{'  disabled' if row['disabled'] else ''}")


def _set_disabled(api_key: str, disabled: bool, as_json: bool) -> None:
    if with_engine(lambda engine: account_store.set_disabled(engine, api_key, disabled)) is None:
        fail(f"no account with api_key {api_key}")
    emit({"api_key": api_key, "disabled": disabled}, as_json)


def account_disable(api_key: str = typer.Option(..., "--api-key", help="The account."), as_json: bool = _JSON) -> None:
    """Disable an account: its credentials get 401, its queued messages end `rejected`."""
    _set_disabled(api_key, True, as_json)


def account_enable(api_key: str = typer.Option(..., "--api-key", help="The account."), as_json: bool = _JSON) -> None:
    """Enable a disabled account again (messages rejected meanwhile stay rejected)."""
    _set_disabled(api_key, False, as_json)


def account_delete(
    api_key: str = typer.Option(..., "--api-key", help="The account."),
    force: bool = typer.Option(False, "--force", help="Delete even with messages waiting to be sent (dropped unsent)."),
    as_json: bool = _JSON,
) -> None:
    """Delete an account with its secrets, applications, links, numbers and message history."""
    try:
        found = with_engine(lambda engine: account_store.delete_account(engine, api_key, force))
    except account_store.InFlight as exc:
        fail(f"account {api_key} has {exc.count} message(s) waiting to be sent: wait for them, "
             "disable the account first (they then end rejected), or use --force to drop them")
    if not found:
        fail(f"no account with api_key {api_key}")
    emit({"api_key": api_key, "deleted": True}, as_json)


@secret_cli.command("list")
def secret_list(api_key: str = _API_KEY, as_json: bool = _JSON) -> None:
    """List the account's secrets: id and creation time (the secrets themselves are not kept)."""
    rows = [{"id": r["id"], "created_at": _when(r["created_at"])} for r in for_account(api_key, secret_store.list_secrets)]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for row in rows:
        typer.echo(f"{row['id']}  {row['created_at']}")


@secret_cli.command("create")
def secret_create(
    secret: str = typer.Option(None, "--secret", envvar="MISSIVE_NEW_API_SECRET", show_envvar=True,
                               help="The new secret (8-25 characters, a lower-case and an upper-case letter, a digit); "
                                    "one is generated when absent."),
    api_key: str = _API_KEY,
    as_json: bool = _JSON,
) -> None:
    """Add a secret (two at most); a generated one is printed once and only its hash kept."""
    if secret is not None and (problems := secret_store.secret_problems(secret)):
        fail("--secret " + "; ".join(problems))
    value = secret if secret is not None else secret_store.new_secret()

    async def work(engine: AsyncEngine, account_id: str) -> dict[str, Any]:
        return await secret_store.create_secret(engine, account_id, value)

    try:
        row = for_account(api_key, work)
    except secret_store.TooManySecrets:
        fail(f"the account has {secret_store.MAX_SECRETS} secrets already: revoke one first")
    out = {"id": row["id"], "created_at": _when(row["created_at"])}
    if secret is None:
        out["api_secret"] = value
    emit(out, as_json)
    if secret is None and not as_json:
        typer.echo("Keep the secret: it is not shown again.", err=True)


@secret_cli.command("revoke")
def secret_revoke(
    secret_id: str = typer.Argument(..., help="The secret's id (see `missive account secret list`)."),
    api_key: str = _API_KEY,
    as_json: bool = _JSON,
) -> None:
    """Revoke a secret; the account's last one cannot be revoked."""
    try:
        found = for_account(api_key, lambda engine, account_id: secret_store.revoke_secret(engine, account_id, secret_id))
    except secret_store.LastSecret:
        fail("this is the account's last secret: create another one first")
    if not found:
        fail(f"no secret {secret_id} in this account")
    emit({"id": secret_id, "revoked": True}, as_json)


def register(account_cli: typer.Typer) -> None:
    """Add these commands to `missive account`."""
    account_cli.command("list")(account_list)
    account_cli.command("disable")(account_disable)
    account_cli.command("enable")(account_enable)
    account_cli.command("delete")(account_delete)
    account_cli.add_typer(secret_cli, name="secret")

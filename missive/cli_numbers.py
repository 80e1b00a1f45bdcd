"""`missive number add|list|remove`: which application an SMS number's inbound messages go to.

The same rules as `/v1/numbers`: numbers are normalised, a number belongs to one account,
and the application must be the account's.
"""

from __future__ import annotations

import json

import typer
from sqlalchemy.ext.asyncio import AsyncEngine

from missive.cli_support import account_id_for, emit, fail, for_account, with_engine
from missive.store import numbers as number_store

number_cli = typer.Typer(help="SMS numbers: which application receives their inbound messages.", no_args_is_help=True)


def _view(row: dict) -> dict:
    from missive.api.numbers import number_view

    return number_view(row)


@number_cli.command("add")
def number_add(
    number: str = typer.Argument(..., help="E.164 (447700900000, +44 7700 900000) or a short code."),
    app_id: str = typer.Option(None, "--app", help="The application its inbound messages go to (else the account's URL)."),
    api_key: str = typer.Option(None, help="The account (needed when there are several)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Link a number to an application of the account."""

    async def work(engine: AsyncEngine) -> dict:
        return await number_store.add_number(engine, await account_id_for(engine, api_key), number, app_id)

    try:
        row = with_engine(work)
    except ValueError as exc:
        fail(f"number {number!r} {exc}")
    except (LookupError, number_store.NumberTaken) as exc:
        fail(str(exc))
    emit(_view(row), as_json)


@number_cli.command("list")
def number_list(
    api_key: str = typer.Option(None, help="The account (needed when there are several)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List the account's numbers and their applications."""
    views = [_view(row) for row in for_account(api_key, number_store.list_numbers)]
    if as_json:
        typer.echo(json.dumps(views))
        return
    for view in views:
        typer.echo(f"{view['number']:<16} {view['application_id'] or '(account)'}")


@number_cli.command("remove")
def number_remove(
    number: str = typer.Argument(...),
    api_key: str = typer.Option(None, help="The account (needed when there are several)."),
) -> None:
    """Unlink a number from the account."""
    if not for_account(api_key, lambda engine, account_id: number_store.remove_number(engine, account_id, number)):
        fail(f"no number {number} in this account")
    typer.echo(f"removed {number}")

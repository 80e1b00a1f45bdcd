"""`missive channel add KIND`: one command per kind of provider link."""

from __future__ import annotations

import typer

from missive.cli_support import add_link, channel_add_cli


@channel_add_cli.command("sandbox")
def add_sandbox(
    channel: str = typer.Option(..., help="API channel carried: sms, messenger or viber_service."),
    name: str = typer.Option(None, help="A name for the link."),
    app_id: str = typer.Option(None, "--app", help="Only for this application."),
    tps: float = typer.Option(None, help="Messages per second at most."),
    default: bool = typer.Option(False, "--default", help="The account's default link for the channel."),
    delivered_after: float = typer.Option(None, help="Seconds until `delivered`."),
    read_after: float = typer.Option(None, help="Seconds until `read`."),
    api_key: str = typer.Option(None, help="The account (needed when there are several)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The simulated provider, with its own receipt delays or rate."""
    add_link("sandbox", channel, name, {"delivered_after": delivered_after, "read_after": read_after},
             app_id, tps, default, api_key, as_json)

"""The `missive` command: serve, and manage accounts and applications."""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import signal
import sys
from pathlib import Path
from typing import Any

import typer
from sqlalchemy.ext.asyncio import AsyncEngine

from missive import credentials
from missive.cli_numbers import number_cli
from missive.cli_support import (
    account_id_for,
    channel_add_cli,
    check_webhook_urls,
    emit,
    fail,
    for_account,
    with_engine,
)
from missive.config import Settings
from missive.dispatch.callbacks import record_inbound
from missive.store import accounts as account_store
from missive.store import applications as app_store
from missive.store import links as link_store

app = typer.Typer(help="Missive: the Messages and Workflows APIs on your own machines.", no_args_is_help=True)
account_cli = typer.Typer(help="Accounts (api_key, api_secret, signature secret).", no_args_is_help=True)
app_cli = typer.Typer(help="Applications (JWT keys and webhook URLs).", no_args_is_help=True)
channel_cli = typer.Typer(help="Channel links: which provider carries a channel.", no_args_is_help=True)
sandbox_cli = typer.Typer(help="The sandbox provider.", no_args_is_help=True)
app.add_typer(account_cli, name="account")
app.add_typer(app_cli, name="app")
app.add_typer(channel_cli, name="channel")
app.add_typer(number_cli, name="number")
app.add_typer(sandbox_cli, name="sandbox")
channel_cli.add_typer(channel_add_cli, name="add")

def tune_gc() -> None:
    """Everything loaded by now lives as long as the process: keep it out of every
    collection, and collect the young generation less often. Each request allocates a
    few hundred short-lived objects, so the default threshold (700) collected every few
    requests; the accept benchmark's p99 went from ~80 ms to ~30 ms with this."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


@app.command()
def serve(
    host: str = typer.Option(None, help="Address to listen on (MISSIVE_HOST, default 127.0.0.1)."),
    port: int = typer.Option(None, help="Port (MISSIVE_PORT, default 8080)."),
    tls_cert: Path = typer.Option(None, help="PEM certificate: serve HTTPS."),
    tls_key: Path = typer.Option(None, help="PEM private key of --tls-cert."),
    tls_self_signed: bool = typer.Option(False, help="Make (once) and use a certificate for 127.0.0.1/localhost."),
    workers: int = typer.Option(1, min=1, help="Server processes sharing the port (each runs a dispatcher when MISSIVE_DISPATCH_IN_SERVE)."),
    dispatch_process: bool = typer.Option(
        None, "--dispatch-process/--no-dispatch-process",
        help="Run the dispatcher in a process of its own beside the API's: two cores (MISSIVE_DISPATCH_PROCESS)."),
) -> None:
    """Run the API server (with the dispatcher in the same process, unless turned off)."""
    import uvicorn

    from missive.api.app import create_app
    from missive.api.read_deadlines import ReadDeadlinesProtocol
    from missive.observability.logs import configure_logging

    settings = Settings()
    if dispatch_process is not None:
        settings.dispatch_process = dispatch_process
    configure_logging(settings)
    if settings.dispatch_process and workers > 1:
        typer.echo("--dispatch-process runs with one server process: run `missive dispatch` beside --workers instead",
                   err=True)
        raise typer.Exit(2)
    created = with_engine(account_store.create_first_account)
    if created is not None:
        typer.echo("Created the first account. Keep these; the secret is not shown again:")
        emit({"api_key": created.api_key, "api_secret": created.api_secret, "signature_secret": created.signature_secret}, False)
        scheme = "https" if tls_cert or tls_self_signed else "http"
        typer.echo(f"Console: {scheme}://{_url_host(host or settings.host)}:{port or settings.port}/console "
                   "(sign in with the api_key and api_secret above)")
    if tls_self_signed:
        from missive.tls import self_signed

        tls_cert, tls_key = self_signed(settings.data_dir / "tls")
        typer.echo(f"TLS certificate: {tls_cert.resolve()} (trust it with REQUESTS_CA_BUNDLE or curl --cacert)")
    if (tls_cert is None) != (tls_key is None):
        typer.echo("--tls-cert and --tls-key go together", err=True)
        raise typer.Exit(2)
    options: dict[str, Any] = {
        "host": host or settings.host,
        "port": port or settings.port,
        "loop": "uvloop",
        # httptools, with each answer's head and body written at once, and a deadline
        # on reading each request's head and body.
        "http": functools.partial(
            ReadDeadlinesProtocol,
            header_timeout=settings.request_header_timeout,
            body_timeout=settings.request_body_timeout,
        ),
        "access_log": False,
        # Logging is ours (configure_logging): uvicorn's records go through the same handler.
        "log_config": None,
        "log_level": settings.log_level.lower(),
        "ssl_certfile": str(tls_cert) if tls_cert else None,
        "ssl_keyfile": str(tls_key) if tls_key else None,
        "timeout_graceful_shutdown": 10,
    }
    if workers > 1:
        from missive.observability.metrics import use_multiprocess_dir

        # Before the workers start: they inherit it, and each metric lands in a file there.
        use_multiprocess_dir(settings.data_dir)
        # uvicorn's parent process binds the port, starts (and restarts) the workers and
        # stops them on SIGTERM/SIGINT; each worker builds its app with app_from_env.
        uvicorn.run("missive.api.app:app_from_env", factory=True, workers=workers, **options)
        return
    # uvicorn re-raises the signal that stopped it once shutdown is done; with these
    # handlers installed that ends in a clean exit 0 instead of death by SIGTERM.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda *_: None)
    tune_gc()
    uvicorn.run(create_app(settings), **options)


def _url_host(host: str) -> str:
    """A listening address as a browser reaches it: all interfaces by this machine's
    loopback, an IPv6 address in brackets."""
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


@app.command("migrate")
def migrate_command() -> None:
    """Apply the database migrations (serve does this at start too)."""
    with_engine(lambda engine: asyncio.sleep(0))
    typer.echo("database is up to date")


@account_cli.command("create")
def account_create(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Create an account; its api_secret is printed once and only its hash is kept."""
    created = with_engine(account_store.create_account)
    emit({"api_key": created.api_key, "api_secret": created.api_secret, "signature_secret": created.signature_secret}, as_json)


@account_cli.command("update")
def account_update(
    api_key: str = typer.Option(..., help="The account to change."),
    status_url: str = typer.Option(None, help="Status webhook URL for Basic-auth messages ('' clears)."),
    inbound_url: str = typer.Option(None, help="Inbound webhook URL for Basic-auth messages ('' clears)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Set the account's own webhook URLs (used by messages sent with Basic auth)."""
    check_webhook_urls(status_url, inbound_url)
    found = with_engine(lambda engine: account_store.update_webhooks(engine, api_key, status_url, inbound_url))
    if not found:
        typer.echo(f"no account with api_key {api_key}", err=True)
        raise typer.Exit(1)
    emit({"api_key": api_key, "updated": True}, as_json)


@app_cli.command("create")
def app_create(
    name: str = typer.Option(..., help="The application's name."),
    status_url: str = typer.Option(None, help="Where status webhooks go."),
    inbound_url: str = typer.Option(None, help="Where inbound messages go."),
    public_key_file: Path = typer.Option(None, help="PEM RSA public key; a key pair is generated when absent."),
    api_key: str = typer.Option(None, help="The owning account (needed when there are several)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Create an application; a generated private key is printed once and never stored."""
    check_webhook_urls(status_url, inbound_url)
    private_key = None
    if public_key_file is not None:
        public_key = public_key_file.read_text()
        try:
            credentials.load_public_key(public_key)
        except ValueError as exc:
            typer.echo(f"{public_key_file}: {exc}", err=True)
            raise typer.Exit(2) from None
    else:
        pair = credentials.new_rsa_keypair()
        public_key, private_key = pair.public_pem, pair.private_pem
    fields = app_store.ApplicationFields(
        name=name, public_key=public_key, status_url=status_url, inbound_url=inbound_url
    )

    async def work(engine: AsyncEngine) -> dict:
        return await app_store.create_application(engine, await account_id_for(engine, api_key), fields)

    try:
        row = with_engine(work)
    except LookupError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    out: dict[str, Any] = {"id": row["id"], "name": row["name"]}
    if private_key:
        out["private_key"] = private_key
    emit(out, as_json)


@app.command()
def dispatch(
    metrics_port: int = typer.Option(
        None, help="Serve /health, /ready and /metrics on this port (MISSIVE_DISPATCH_METRICS_PORT; none by default)."
    ),
    metrics_host: str = typer.Option(None, help="Address of --metrics-port (MISSIVE_DISPATCH_METRICS_HOST, default 127.0.0.1)."),
) -> None:
    """Run only the dispatcher (outbox, timers, webhooks), e.g. beside API-only servers."""
    from missive.dispatch.runner import run_dispatcher

    settings = Settings()
    if metrics_port is not None:
        settings.dispatch_metrics_port = metrics_port
    if metrics_host is not None:
        settings.dispatch_metrics_host = metrics_host
    tune_gc()
    import uvloop

    # The same event loop as `serve` (uvicorn's "uvloop"): asyncio's own costs the
    # dispatcher more per message in its loop's Python (py-spy on the peers' harness).
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run_dispatcher(settings))


@channel_cli.command("list")
def channel_list(
    api_key: str = typer.Option(None, help="The account (needed when there are several)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List the channel links of an account."""
    from missive.api.channels import link_view

    views = [link_view(row) for row in for_account(api_key, link_store.list_links)]
    if as_json:
        typer.echo(json.dumps(views))
        return
    for view in views:
        typer.echo(f"{view['id']}  {view['kind']:<8} {view['channel']:<14} {view['name']}{'  (default)' if view['default'] else ''}")


@channel_cli.command("remove")
def channel_remove(
    link_id: str = typer.Argument(...),
    api_key: str = typer.Option(None, help="The account (needed when there are several)."),
) -> None:
    """Remove a channel link; its channel falls back to another link or the sandbox."""
    if not for_account(api_key, lambda engine, account_id: link_store.delete_link(engine, account_id, link_id)):
        fail(f"no channel link {link_id}")
    typer.echo(f"removed {link_id}")


@sandbox_cli.command("inbound")
def sandbox_inbound(
    channel: str = typer.Option(..., help="sms, messenger or viber_service."),
    sender: str = typer.Option(..., "--from", help="The user's number or id."),
    to: str = typer.Option("sandbox", help="Your number, page id or service id."),
    text: str = typer.Option(None, help="Text content."),
    image_url: str = typer.Option(None, help="An image by URL."),
    audio_url: str = typer.Option(None, help="An audio clip by URL."),
    video_url: str = typer.Option(None, help="A video by URL."),
    file_url: str = typer.Option(None, help="A file by URL."),
    location: str = typer.Option(None, help="LAT,LONG"),
    app_id: str = typer.Option(None, "--app", help="Deliver to this application's inbound URL."),
    api_key: str = typer.Option(None, help="The account (needed when there are several)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Make the sandbox receive a message from a user, as a provider would."""
    from missive.api.errors import ProblemError
    from missive.api.sandbox import parse_inbound
    from missive.webhooks.outbox import WebhookTargets

    body: dict[str, Any] = {"channel": channel, "from": sender, "to": to, "application_id": app_id}
    for key, url in (("image", image_url), ("audio", audio_url), ("video", video_url), ("file", file_url)):
        if url:
            body[key] = {"url": url}
    if text:
        body["text"] = text
    if location:
        lat, _, long = location.partition(",")
        try:
            body["location"] = {"lat": float(lat), "long": float(long)}
        except ValueError:
            fail("--location must be LAT,LONG")
    try:
        parsed = parse_inbound(body)
    except ProblemError as problem:
        fail("; ".join(f"{p.name}: {p.reason}" for p in problem.invalid_parameters))

    async def work(engine: AsyncEngine) -> dict:
        account_id = await account_id_for(engine, api_key)
        if parsed.application_id and await app_store.get_application(engine, parsed.application_id, account_id) is None:
            raise LookupError(f"no application {parsed.application_id} in this account")
        return await record_inbound(engine, WebhookTargets(), parsed.event(), account_id, parsed.application_id)

    try:
        row = with_engine(work)
    except LookupError as exc:
        fail(str(exc))
    emit({"message_uuid": row["uuid"]}, as_json)


# Each link kind's `missive channel add KIND` lives in its own module.
from missive import cli_links  # noqa: E402,F401
from missive.cli_accounts import register as register_account_commands  # noqa: E402
from missive.cli_secrets import secrets_cli  # noqa: E402

app.add_typer(secrets_cli, name="secrets")
register_account_commands(account_cli)


def main() -> None:
    app(prog_name="missive")


if __name__ == "__main__":
    sys.exit(main())

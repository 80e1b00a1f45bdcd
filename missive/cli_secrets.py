"""`missive secrets`: the key that encrypts provider credentials at rest.

    missive secrets new-key          print a fresh key (for MISSIVE_SECRET_KEY)
    missive secrets rotate [--json]  encrypt every link's secrets with a new key

With the key file (MISSIVE_SECRET_KEY unset), `rotate` makes the new key itself: it is
written to the file first, in front of the old ones, so that every process can read
both while the links are encrypted again in one transaction; then the old keys are
dropped. Running processes read the file again when it changes.

With MISSIVE_SECRET_KEY set, Missive cannot change the operator's environment, so the
new key must be given (`--new-key`, or MISSIVE_NEW_SECRET_KEY to keep it out of `ps`),
and afterwards MISSIVE_SECRET_KEY must be set to it in every process. Processes still
running with only the old key cannot read the links until then; to rotate without that
gap, first deploy MISSIVE_SECRET_KEY=NEW,OLD everywhere, then rotate, then drop OLD.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import typer

from missive.cli_support import emit, fail
from missive.config import Settings
from missive.secrets_box import (
    KEY_FILE,
    Keyring,
    SecretKeyError,
    attach,
    key_id,
    new_key,
    parse_keys,
    write_key_file,
)
from missive.store.db import make_engine, migrate
from missive.store.links import reseal_all

secrets_cli = typer.Typer(help="The key encrypting provider credentials at rest.", no_args_is_help=True)


@secrets_cli.command("new-key")
def new_key_command() -> None:
    """Print a fresh key: urlsafe base64 of 32 random bytes."""
    typer.echo(new_key())


@secrets_cli.command("rotate")
def rotate(
    given: str = typer.Option(None, "--new-key", envvar="MISSIVE_NEW_SECRET_KEY", show_envvar=True,
                              help="The new key (needed when MISSIVE_SECRET_KEY is set; see `missive secrets new-key`)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Encrypt every channel link's secrets again with a new key, in one transaction."""
    settings = Settings()
    from_env = bool(settings.secret_key.get_secret_value().strip())
    if from_env and not given:
        fail("MISSIVE_SECRET_KEY is set: give the new key with --new-key or MISSIVE_NEW_SECRET_KEY "
             "(`missive secrets new-key` makes one), then set MISSIVE_SECRET_KEY to it")
    try:
        new = parse_keys(given, "--new-key")[0] if given else base64.urlsafe_b64decode(new_key())
        old = Keyring.from_settings(settings).keys
    except ValueError as exc:
        fail(str(exc))
    path = settings.data_dir / KEY_FILE
    if from_env:
        keyring = Keyring([new, *old])
    else:
        # On disk before any value is encrypted with it; the old keys stay readable.
        write_key_file(path, [new, *(k for k in old if k != new)])
        keyring = Keyring(path=path)
    try:
        counts = asyncio.run(_reseal(settings, keyring))
    except SecretKeyError as exc:
        fail(f"nothing changed: {exc}")
    if not from_env:
        write_key_file(path, [new])
    emit({"key_id": key_id(new), **counts}, as_json)
    if from_env:
        typer.echo("Now set MISSIVE_SECRET_KEY to the new key in the environment of every Missive process and "
                   "restart them: processes with only the old key cannot read the links.", err=True)
    else:
        typer.echo(f"The new key is in {Path(path).resolve()}; the old one was removed. Back the file up.", err=True)


async def _reseal(settings: Settings, keyring: Keyring) -> dict[str, int]:
    engine = make_engine(settings)
    attach(engine, keyring)
    try:
        await migrate(engine)
        return await reseal_all(engine)
    finally:
        await engine.dispose()

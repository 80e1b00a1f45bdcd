"""`missive channel add KIND`: one command per kind of provider link."""

from __future__ import annotations

import re

import typer

from missive.cli_support import add_link, channel_add_cli

PRICE_HELP = ("What a message costs, reported in its status webhooks' `usage`: AMOUNT CURRENCY, "
              "per SMS part (other channels: per message) or with /message per message whatever its "
              "length: \"0.0333 EUR\", \"0.05 EUR/message\".")


@channel_add_cli.command("sandbox")
def add_sandbox(
    channel: str = typer.Option(..., help="API channel carried: sms, messenger or viber_service."),
    name: str = typer.Option(None, help="A name for the link."),
    app_id: str = typer.Option(None, "--app", help="Only for this application."),
    tps: float = typer.Option(None, help="Messages per second at most."),
    default: bool = typer.Option(False, "--default", help="The account's default link for the channel."),
    delivered_after: float = typer.Option(None, help="Seconds until `delivered`."),
    read_after: float = typer.Option(None, help="Seconds until `read`."),
    price: str = typer.Option(None, help=PRICE_HELP),
    api_key: str = typer.Option(None, help="The account (needed when there are several)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The simulated provider, with its own receipt delays or rate."""
    add_link("sandbox", channel, name, {"delivered_after": delivered_after, "read_after": read_after, "price": _price(price)},
             app_id, tps, default, api_key, as_json)


@channel_add_cli.command("messenger")
def add_messenger(
    page_id: str = typer.Option(..., help="The Facebook page id."),
    page_token: str = typer.Option(..., help="The page access token (stored, never shown)."),
    app_secret: str = typer.Option(..., help="The Facebook app secret: checks webhook signatures (stored, never shown)."),
    verify_token: str = typer.Option(..., help="The token of the webhook subscription handshake."),
    price: str = typer.Option(None, help=PRICE_HELP),
    name: str = typer.Option(None, help="A name for the link."),
    app_id: str = typer.Option(None, "--app", help="Only for this application."),
    tps: float = typer.Option(None, help="Messages per second at most."),
    default: bool = typer.Option(False, "--default", help="The account's default link for Messenger."),
    api_key: str = typer.Option(None, help="The account (needed when there are several)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """A Facebook page, sending through the Graph API and receiving on /inbound/messenger."""
    add_link("messenger", "messenger", name,
             {"page_id": page_id, "page_token": page_token, "app_secret": app_secret, "verify_token": verify_token,
              "price": _price(price)},
             app_id, tps, default, api_key, as_json)


@channel_add_cli.command("whatsapp")
def add_whatsapp(
    phone_number_id: str = typer.Option(..., help="The Cloud API phone-number id of the business number."),
    waba_id: str = typer.Option(..., help="The WhatsApp Business Account id."),
    access_token: str = typer.Option(..., help="The Cloud API access token (stored, never shown)."),
    app_secret: str = typer.Option(..., help="The Meta app secret: checks webhook signatures (stored, never shown)."),
    verify_token: str = typer.Option(..., help="The token of the webhook subscription handshake (stored, never shown)."),
    phone_number: str = typer.Option(None, help="The business number, E.164 digits: messages `from` it use this link."),
    name: str = typer.Option(None, help="A name for the link."),
    app_id: str = typer.Option(None, "--app", help="Only for this application."),
    tps: float = typer.Option(None, help="Messages per second at most."),
    default: bool = typer.Option(False, "--default", help="The account's default link for WhatsApp."),
    api_key: str = typer.Option(None, help="The account (needed when there are several)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """A WhatsApp Business number on Meta's Cloud API, sending from its phone-number id."""
    add_link("whatsapp", "whatsapp", name,
             {"phone_number_id": phone_number_id, "waba_id": waba_id, "access_token": access_token,
              "app_secret": app_secret, "verify_token": verify_token, "phone_number": phone_number},
             app_id, tps, default, api_key, as_json)


@channel_add_cli.command("viber")
def add_viber(
    service_id: str = typer.Option(..., help="The Viber service (bot) id: the `from` of its messages."),
    auth_token: str = typer.Option(..., help="The service's auth token (stored, never shown)."),
    sender_name: str = typer.Option(None, help="The sender name shown with messages."),
    sender_avatar: str = typer.Option(None, help="The sender avatar URL."),
    price: str = typer.Option(None, help=PRICE_HELP),
    name: str = typer.Option(None, help="A name for the link."),
    app_id: str = typer.Option(None, "--app", help="Only for this application."),
    tps: float = typer.Option(None, help="Messages per second at most."),
    default: bool = typer.Option(False, "--default", help="The account's default link for Viber."),
    api_key: str = typer.Option(None, help="The account (needed when there are several)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """A Viber service, sending through Viber's REST API; with MISSIVE_PUBLIC_URL set, its
    callbacks are registered with Viber (set_webhook) at /inbound/viber/SERVICE_ID."""
    import asyncio

    from missive.api.inbound_viber import register_webhook
    from missive.channels.base import SendError
    from missive.cli_support import fail
    from missive.config import Settings

    row = add_link("viber", "viber_service", name,
                   {"service_id": service_id, "auth_token": auth_token, "sender_name": sender_name,
                    "sender_avatar": sender_avatar, "price": _price(price)},
                   app_id, tps, default, api_key, as_json)
    settings = Settings()
    if settings.public_url:
        try:
            url = asyncio.run(register_webhook(settings, row))
        except SendError as error:
            fail(f"link stored, but Viber refused the webhook: {error.reason}")
        typer.echo(f"webhook registered with Viber: {url}", err=True)


@channel_add_cli.command("sms")
def add_sms(
    host: str = typer.Option(..., help="The SMSC's host."),
    port: int = typer.Option(..., help="The SMSC's SMPP port."),
    system_id: str = typer.Option(..., help="The SMPP system_id (up to 15 characters)."),
    password: str = typer.Option(..., help="The SMPP password (up to 8; stored, never shown)."),
    system_type: str = typer.Option("", help="The SMPP system_type, if the SMSC wants one."),
    binds: int = typer.Option(1, help="bind_transceiver sessions to keep open."),
    window: int = typer.Option(10, help="submit_sm awaiting their answer, per session."),
    tls: bool = typer.Option(False, "--tls", help="SMPP over TLS."),
    tls_no_verify: bool = typer.Option(False, "--tls-no-verify", help="Accept any certificate (a self-signed SMSC)."),
    receipt_ids: str = typer.Option("as_submitted", help="Receipt ids as submit_sm_resp gave them (as_submitted), "
                                    "in hex for decimal ones (hex), or in decimal for hex ones (decimal)."),
    source_ton: int = typer.Option(None, help="Source TON (default: 5 for alphanumeric senders, 1 for numbers)."),
    source_npi: int = typer.Option(None, help="Source NPI (default: 0 for alphanumeric senders, 1 for numbers)."),
    sender: list[str] = typer.Option(None, "--sender", help="Route messages from this sender here (repeatable)."),
    prefix: list[str] = typer.Option(None, "--prefix", help="Route messages to numbers starting so here (repeatable)."),
    entity_id_tag: str = typer.Option("0x1400", help="The TLV tag of sms.entity_id (India's DLT PE_ID)."),
    content_id_tag: str = typer.Option("0x1401", help="The TLV tag of sms.content_id (India's DLT template id)."),
    dlt_tlv_format: str = typer.Option("cstring", help="Those TLVs NUL-terminated (cstring) or not (octets)."),
    price: str = typer.Option(None, help=PRICE_HELP),
    name: str = typer.Option(None, help="A name for the link."),
    app_id: str = typer.Option(None, "--app", help="Only for this application."),
    tps: float = typer.Option(None, help="SMS parts per second at most."),
    default: bool = typer.Option(False, "--default", help="The account's default link for SMS."),
    api_key: str = typer.Option(None, help="The account (needed when there are several)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """An SMSC reached over SMPP 3.4: sends, delivery receipts and inbound SMS."""
    config = {"host": host, "port": port, "system_id": system_id, "password": password, "system_type": system_type,
              "binds": binds, "window": window, "tls": tls, "tls_verify": not tls_no_verify,
              "source_ton": source_ton, "source_npi": source_npi, "senders": sender or [], "prefixes": prefix or [],
              "receipt_ids": receipt_ids, "entity_id_tag": _tag(entity_id_tag, "--entity-id-tag"),
              "content_id_tag": _tag(content_id_tag, "--content-id-tag"), "dlt_tlv_format": dlt_tlv_format,
              "price": _price(price)}
    add_link("sms", "sms", name, config, app_id, tps, default, api_key, as_json)


def _tag(value: str, option: str) -> int:
    """A TLV tag as written in SMSC documentation: 0x1400, or 5120."""
    try:
        return int(value, 0)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a number (0x1400 or 5120)", param_hint=option) from None


def _price(value: str | None) -> dict[str, str] | None:
    """--price "0.0333 EUR" or "0.05 EUR/message" as the links' `price` setting (checked,
    with the rest of the link, like `POST /v1/channels`)."""
    if value is None:
        return None
    found = re.fullmatch(r"\s*(\S+)\s+([A-Za-z]{3})\s*(?:/\s*(part|message))?\s*", value)
    if found is None:
        raise typer.BadParameter(f"{value!r} is not AMOUNT CURRENCY[/part|/message] (0.0333 EUR)", param_hint="--price")
    return {"amount": found[1], "currency": found[2].upper(), "per": found[3] or "part"}

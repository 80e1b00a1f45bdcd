"""Every channel kind Missive has, in one place, and the channel names of the API.

A kind is a class with: `kind` (its name in `missive channel add KIND`), `carries` (the
API channel names it can carry), `secrets` (config keys never logged or returned),
`Config` (the pydantic model of its link config), and `send`/`close`.
"""

from __future__ import annotations

from pydantic import BaseModel

from missive.channels.base import Channel
from missive.channels.messenger import MessengerChannel
from missive.channels.sandbox import SandboxChannel
from missive.channels.sms import SmsChannel
from missive.channels.viber import ViberChannel
from missive.channels.whatsapp import WhatsappChannel
from missive.config import Settings

# The API's channel names (what a message's `channel` says).
CHANNEL_NAMES = ("sms", "messenger", "viber_service", "whatsapp")

KINDS: dict[str, type] = {
    SandboxChannel.kind: SandboxChannel,
    ViberChannel.kind: ViberChannel,
    MessengerChannel.kind: MessengerChannel,
    WhatsappChannel.kind: WhatsappChannel,
    SmsChannel.kind: SmsChannel,
}

# Which API channel names each kind can carry.
CARRIES: dict[str, tuple[str, ...]] = {kind: cls.carries for kind, cls in KINDS.items()}


def build_channels(settings: Settings) -> dict[str, Channel]:
    """One instance of every kind; instances keep their connections between sends."""
    return {kind: cls(settings) for kind, cls in KINDS.items()}


def secret_keys(kind: str) -> tuple[str, ...]:
    cls = KINDS.get(kind)
    return tuple(getattr(cls, "secrets", ())) if cls else ()


def config_model(kind: str) -> type[BaseModel]:
    return KINDS[kind].Config  # type: ignore[no-any-return]

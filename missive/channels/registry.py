"""Every channel kind Missive has, in one place, and the channel names of the API."""

from __future__ import annotations

from missive.channels.base import Channel
from missive.channels.sandbox import SandboxChannel

# The API's channel names (what a message's `channel` says).
CHANNEL_NAMES = ("sms", "messenger", "viber_service")

# Kinds of provider link, by the name used in `missive channel add KIND`.
KINDS: dict[str, type] = {
    SandboxChannel.kind: SandboxChannel,
}

# Which API channel names each kind can carry.
CARRIES: dict[str, tuple[str, ...]] = {
    SandboxChannel.kind: CHANNEL_NAMES,
}


def build_channels() -> dict[str, Channel]:
    """One instance of every kind; instances keep their connections between sends."""
    return {kind: cls() for kind, cls in KINDS.items()}


def secret_keys(kind: str) -> tuple[str, ...]:
    cls = KINDS.get(kind)
    return tuple(getattr(cls, "secrets", ())) if cls else ()

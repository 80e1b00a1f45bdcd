"""The sandbox: a simulated provider for every channel, used until a real one is linked.

It answers `submitted` at once and promises `delivered` (and `read` on Messenger, Viber
and WhatsApp) after configurable delays. The last four characters of `to` pick a failure:

    ...0001  rejected at once (error 1020)
    ...0002  submitted, then undeliverable (error 1260)
    ...0003  submitted, and nothing more
    ...0004  fails retryably on the first two attempts, then behaves normally
    ...0005  WhatsApp: the user's 24-hour window is closed, so a free-form message is
             rejected (error 1340, the reason dispatch/whatsapp_rules.py gives); a
             template goes as to any other recipient

Link config: {"delivered_after": 1.0, "read_after": 2.0, "log": "/path/sends.log"}.
With `log`, every send appends "uuid attempt" to that file: the provider's own record,
used to count what reached it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from missive.channels.base import (
    ChannelLink,
    FollowUp,
    OutboundMessage,
    Rejected,
    SendResult,
    Unavailable,
)
from missive.channels.whatsapp import needs_window
from missive.config import Settings
from missive.dispatch.whatsapp_rules import CLOSED, OUTSIDE_WINDOW
from missive.ids import time_ordered_id
from missive.observability import exchanges

READ_RECEIPT_CHANNELS = ("messenger", "viber_service", "whatsapp")
DEFAULT_DELIVERED_AFTER = 1.0
DEFAULT_READ_AFTER = 2.0


def _delay(config: dict[str, Any], key: str, default: float) -> float:
    value = config.get(key, default)
    return float(value) if isinstance(value, (int, float)) and value >= 0 else default


class SandboxConfig(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    delivered_after: float | None = Field(None, ge=0, le=86400)
    read_after: float | None = Field(None, ge=0, le=86400)


def _noted(message: OutboundMessage, what: str, **detail: Any) -> None:
    """The sandbox's own line in the message's provider log."""
    if exchanges.current() is not None:
        exchanges.record("out", "sandbox", f"sandbox {what}", {
            "channel": message.channel, "message_type": message.message_type, "to": message.to,
            "from": message.sender, "attempt": message.attempt, **detail})


class SandboxChannel:
    kind: ClassVar[str] = "sandbox"
    carries: ClassVar[tuple[str, ...]] = ("sms", "messenger", "viber_service", "whatsapp")
    secrets: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type[BaseModel]] = SandboxConfig

    def __init__(self, settings: Settings | None = None) -> None:
        self._logs: dict[str, Any] = {}

    async def send(self, message: OutboundMessage, link: ChannelLink) -> SendResult:
        self._record(message, link.config.get("log"))
        magic = message.to[-4:]
        if magic == "0001":
            _noted(message, "rejected it (error 1020: recipients ending in 0001)")
            raise Rejected(1020, "Invalid params: the sandbox rejects recipients ending in 0001")
        if magic == "0004" and message.attempt <= 2:
            _noted(message, f"failed attempt {message.attempt} (recipients ending in 0004 fail twice, then pass)")
            raise Unavailable("the sandbox fails recipients ending in 0004 on their first two attempts")
        if magic == "0005" and message.channel == "whatsapp" and needs_window(message.message_type, message.body):
            raise Rejected(OUTSIDE_WINDOW[0], CLOSED)
        delivered_after = _delay(link.config, "delivered_after", DEFAULT_DELIVERED_AFTER)
        read_after = _delay(link.config, "read_after", DEFAULT_READ_AFTER)
        ref = f"sandbox-{time_ordered_id()}"
        if magic == "0002":
            follow_ups: tuple[FollowUp, ...] = (
                FollowUp(delivered_after, "undeliverable", 1260, "Destination unreachable"),
            )
        elif magic == "0003":
            follow_ups = ()
        else:
            follow_ups = (FollowUp(delivered_after, "delivered"),)
            if message.channel in READ_RECEIPT_CHANNELS:
                # read_after below delivered_after makes the receipts arrive out of order, as
                # real providers sometimes do; the status model keeps the later one.
                follow_ups += (FollowUp(read_after, "read"),)
        if exchanges.current() is not None:
            promised = ", ".join(f"{f.status} in {f.after:g} s" for f in follow_ups) or "nothing more"
            _noted(message, f"accepted it as {ref}: {promised}", ref=ref)
        return SendResult(provider_ref=ref, follow_ups=follow_ups)

    def _record(self, message: OutboundMessage, path: object) -> None:
        if not isinstance(path, str) or not path:
            return
        handle = self._logs.get(path)
        if handle is None:
            # Kept open for the channel's life (closed in close()): one line per send.
            handle = self._logs[path] = Path(path).open("a", buffering=1)  # noqa: SIM115
        handle.write(f"{message.uuid} {message.attempt}\n")

    async def close(self) -> None:
        for handle in self._logs.values():
            handle.close()
        self._logs.clear()

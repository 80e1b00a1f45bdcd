"""The channel seam: what every channel implements, and the errors a send can raise.

    SendError                   the dispatcher asks only `error.retryable`
      Rejected(code, reason)    refused for good -> status `rejected`
      Undeliverable(code, reason)  the provider cannot reach the user -> `undeliverable`
      Misconfigured(reason)     the link cannot work as configured -> `rejected` (1030)
      Unavailable(reason)       provider down, 5xx, timeout -> retried with backoff
      Throttled(retry_after)    provider says slow down -> retried, link slowed
      Elsewhere(reason)         this process holds no session of the link -> handed back
                                at once for another dispatcher, not counted as a try

A channel never touches storage or the queue: it turns a message into provider calls
and provider callbacks into events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol


@dataclass(frozen=True)
class ChannelLink:
    """Which provider account carries a channel, with that account's credentials."""

    id: str
    kind: str
    channel: str
    config: dict[str, Any]
    tps: float | None = None
    # Whose link it is: where messages that arrive on it go (SMPP sessions push them).
    account_id: str | None = None
    application_id: str | None = None


@dataclass(frozen=True)
class OutboundMessage:
    uuid: str
    channel: str
    message_type: str
    to: str
    sender: str
    body: dict[str, Any]
    # 1 for the first try: providers that dedupe by attempt, and the sandbox, use it.
    attempt: int = 1

    @property
    def text(self) -> str | None:
        return self.body.get("text")


@dataclass(frozen=True)
class FollowUp:
    """A status the provider has promised to report later (the sandbox's simulated receipts)."""

    after: float
    status: str
    error_code: int | None = None
    error_reason: str | None = None


@dataclass(frozen=True)
class SendResult:
    provider_ref: str
    follow_ups: tuple[FollowUp, ...] = ()
    # Every reference a receipt may carry (one per SMS part); provider_ref when empty.
    all_refs: tuple[str, ...] = ()


@dataclass(frozen=True)
class StatusEvent:
    provider_ref: str
    status: str
    error_code: int | None = None
    error_reason: str | None = None
    # Channel fields for the v1 status webhook (WhatsApp's `whatsapp.conversation`).
    details: dict[str, Any] | None = None


@dataclass(frozen=True)
class InboundEvent:
    channel: str
    to: str
    sender: str
    message_type: str
    payload: dict[str, Any] = field(default_factory=dict)
    provider_ref: str | None = None


@dataclass(frozen=True)
class Receipt:
    """A receipt for one provider reference (an SMS part): `refs` are the ways the
    provider may have written it (an SMSC id in decimal or hex), the exact one first."""

    refs: tuple[str, ...]
    status: str
    error_code: int | None = None
    error_reason: str | None = None
    # The deliver_sm it came in, readable (observability.exchanges.Exchange), for the
    # provider log of the message it names; None when provider logs are off.
    exchange: Any = field(default=None, compare=False)


@dataclass(frozen=True)
class InboundPart:
    """One part of a multipart inbound message (SMS concatenation), kept until all arrive."""

    to: str
    sender: str
    concat_ref: int
    total: int
    seq: int
    data_coding: int
    payload: bytes


# What a channel with its own connections (SMPP) hands to the dispatcher: the future is
# done once the events are stored (or failed with why not), and the channel answers the
# provider only then, so an event is stored before it is acknowledged.
EventSink = Callable[[ChannelLink, list["Receipt | InboundEvent | InboundPart"]], asyncio.Future[None]]


class SendError(Exception):
    retryable: ClassVar[bool] = False
    code: int = 1030
    reason: str = "Internal error"

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason or self.reason)
        if reason:
            self.reason = reason


class Rejected(SendError):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class Undeliverable(SendError):
    """The provider says it cannot reach this user: final, status `undeliverable`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class Misconfigured(SendError):
    code = 1030


class Unavailable(SendError):
    retryable = True
    code = 1331
    reason = "Provider error"


class Throttled(SendError):
    retryable = True
    code = 1000
    reason = "Throttled"

    def __init__(self, retry_after: float | None = None, reason: str | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Elsewhere(SendError):
    """The link's sessions are held by other dispatcher processes (SMPP binds are shared
    out among dispatchers and never exceed the link's count)."""

    retryable = True
    code = 1331
    reason = "No session of the link in this process"


class Channel(Protocol):
    kind: ClassVar[str]
    # Config keys that hold credentials: never logged, never returned by the API.
    secrets: ClassVar[tuple[str, ...]]

    async def send(self, message: OutboundMessage, link: ChannelLink) -> SendResult: ...

    async def close(self) -> None: ...

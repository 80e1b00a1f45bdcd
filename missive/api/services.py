"""What the request handlers share: settings, engine, authenticator and the group writer."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request

from missive.auth import Authenticator
from missive.config import Settings
from missive.store.writer import GroupWriter
from missive.webhooks.outbox import WebhookTargets

if TYPE_CHECKING:
    from missive.dispatch.child import DispatchProcess
    from missive.dispatch.worker import Dispatcher


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    auth: Authenticator
    writer: GroupWriter
    # The in-process dispatcher, woken when a message is accepted (None with `dispatch_in_serve` off).
    dispatcher: Dispatcher | None = None
    targets: WebhookTargets = field(default_factory=WebhookTargets)
    # Where the API reads the time (tests of expiry inject their own).
    clock: Callable[[], float] = time.time
    # The dispatcher in a child process (`serve --dispatch-process`), else None.
    child: DispatchProcess | None = None

    def messages_accepted(self) -> None:
        """Wake the dispatcher that will send what was just accepted, if it is ours."""
        if self.dispatcher is not None:
            self.dispatcher.notify()
        elif self.child is not None:
            self.child.notify()

    def webhooks_stored(self) -> None:
        """Wake the webhook sender of our dispatcher, if there is one."""
        if self.dispatcher is not None:
            self.dispatcher.webhooks.wake.set()
        elif self.child is not None:
            self.child.webhooks_stored()


def services(request: Request) -> Services:
    # An attribute of the app (set by its lifespan) rather than of `app.state`, whose
    # lookups go through a Python __getattr__: every request makes this one.
    return request.scope["app"].services  # type: ignore[no-any-return]

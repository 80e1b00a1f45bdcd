"""The ASGI application: `create_app(settings)`, and `app_from_env()` for uvicorn's workers."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from missive import console
from missive.api import (
    accounts,
    applications,
    channels,
    direct,
    docs,
    health,
    inbound_messenger,
    inbound_viber,
    inbound_whatsapp,
    media,
    messages,
    numbers,
    provider_logs,
    sandbox,
    workflows,
)
from missive.api.errors import (
    ERRORS,
    ProblemError,
    on_client_gone,
    on_http_exception,
    on_problem,
    on_unexpected,
    problem_response,
)
from missive.api.services import Services
from missive.auth import Authenticator
from missive.config import Settings
from missive.config_watch import ConfigWatch
from missive.dispatch.child import DispatchProcess
from missive.dispatch.worker import Dispatcher
from missive.observability import metrics
from missive.observability.context import start_request
from missive.store.db import make_engine, migrate
from missive.store.faults import FAULT_TYPES
from missive.store.tables import messages as messages_table
from missive.store.tables import outbox, timers
from missive.store.tables import workflows as workflows_table
from missive.store.writer import GroupWriter, Rows


class TrailingSlash:
    """`/v1/messages/` is `/v1/messages` (an empty `?` is already dropped by the server).

    Every request passes here first, so this is also where it gets its trace id: no
    middleware layer of its own on the accept path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            start_request()
            path = scope["path"]
            if len(path) > 1 and path.endswith("/"):
                scope = dict(scope, path=path.rstrip("/") or "/")
        await self.app(scope, receive, send)


# Exception type -> the handler of its answer, for Starlette and for `direct.serve`.
EXCEPTION_HANDLERS: dict[Any, direct.Handler] = {
    ProblemError: on_problem,
    HTTPException: on_http_exception,
    ClientDisconnect: on_client_gone,
    # Database faults (503/507) answered here, not re-raised past the answer as the
    # catch-all's are: the server would then drop the connection, unread body and all.
    **dict.fromkeys(FAULT_TYPES, on_unexpected),
    Exception: on_unexpected,
}


_NUL_PATH = ProblemError(404, f"{ERRORS}#not-found", "Not Found", "No resource has a NUL character in its path.")


class Missive(Starlette):
    """Starlette, with the send endpoints served before its middleware (api/direct.py)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "\x00" in scope["path"]:
            # Nothing is named with a NUL (PostgreSQL text cannot hold one): not found,
            # before a route hands the name to a query that would fail on it.
            await problem_response(_NUL_PATH)(scope, receive, send)
            return
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = messages.SENDS.get(scope["path"])
            if endpoint is not None:
                scope["app"] = self
                await direct.serve(endpoint, EXCEPTION_HANDLERS, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _count_accepted(batch: list[Rows]) -> None:
    metrics.accepted([message for rows in batch for message in rows.get(messages_table, ())])


def create_app(settings: Settings, clock: Callable[[], float] = time.time) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = make_engine(settings)
        await migrate(engine)
        writer = GroupWriter(
            engine, [workflows_table, messages_table, outbox, timers], settings.write_batch_max, on_committed=_count_accepted
        )
        writer.start()
        dispatcher = Dispatcher(engine, settings, clock) if settings.dispatch_in_serve and not settings.dispatch_process else None
        child = DispatchProcess(settings) if settings.dispatch_process else None
        # An API-only process follows the configuration version itself; with a dispatcher,
        # the dispatcher's watcher serves both.
        watch = ConfigWatch(engine) if dispatcher is None else None
        # Also an attribute of the app, read by `services(request)` on every request; the
        # probes read `app.state.services`, as in the dispatcher's ops app.
        app.state.services = app.services = Services(  # type: ignore[attr-defined]
            settings, engine, Authenticator(engine, settings), writer, dispatcher, clock=clock, child=child
        )
        if dispatcher is not None:
            dispatcher.start()
        if child is not None:
            await child.start()
        if watch is not None:
            watch.start()
        metrics.process_started()
        try:
            yield
        finally:
            if dispatcher is not None:
                await dispatcher.stop()
            if child is not None:
                await child.stop()
            if watch is not None:
                await watch.stop()
            await writer.stop()
            await engine.dispose()
            metrics.process_stopped()

    app = Missive(
        routes=[*messages.routes, *provider_logs.routes, *accounts.routes, *applications.routes, *channels.routes, *numbers.routes, *sandbox.routes, *inbound_messenger.routes, *inbound_viber.routes, *inbound_whatsapp.routes, *media.routes, *workflows.routes, *docs.routes, *health.routes, *console.routes],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.add_middleware(TrailingSlash)
    return app


def app_from_env() -> Starlette:
    """The factory each worker of `missive serve --workers N` calls (uvicorn imports it by
    name in a fresh process): settings from the environment, logs set up again."""
    from missive.cli import tune_gc
    from missive.observability.logs import configure_logging

    settings = Settings()
    configure_logging(settings)
    app = create_app(settings)
    tune_gc()
    return app

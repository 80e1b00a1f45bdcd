"""`missive dispatch`: the dispatcher alone, stopped cleanly by SIGTERM or SIGINT.

With a metrics port it also serves /health, /ready and /metrics (missive.api.health),
so that a dispatcher running apart from the API can be probed and scraped: its own
counters (sends, send latency, webhook attempts, SMPP binds, rate-limit waits) live in
its memory, where no API process's /metrics can see them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

import uvicorn

from missive.api.health import ops_app
from missive.config import Settings
from missive.dispatch.child import read_wakes
from missive.dispatch.worker import Dispatcher
from missive.observability.logs import configure_logging
from missive.store.db import make_engine, migrate

log = logging.getLogger("missive.dispatch")


class _OpsServer(uvicorn.Server):
    """uvicorn without its signal handling: SIGTERM stops the dispatcher first, here."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run_dispatcher(settings: Settings) -> None:
    configure_logging(settings)
    engine = make_engine(settings)
    await migrate(engine)
    dispatcher = Dispatcher(engine, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ops: _OpsServer | None = None
    serving: asyncio.Task[None] | None = None
    if settings.dispatch_metrics_port:
        config = uvicorn.Config(
            ops_app(settings, engine), host=settings.dispatch_metrics_host, port=settings.dispatch_metrics_port,
            lifespan="off", access_log=False, log_config=None, log_level=settings.log_level.lower(),
        )
        ops = _OpsServer(config)
        serving = asyncio.create_task(ops.serve(), name="missive-ops-http")
    dispatcher.start()
    wakes = None
    if settings.dispatch_woken_by_stdin:  # the child of `serve --dispatch-process`
        wakes = await read_wakes(dispatcher.notify, dispatcher.webhooks.wake.set, stop.set)
    log.info("dispatcher %s running", dispatcher.sessions.id)
    await stop.wait()
    if wakes is not None:
        wakes.close()
    await dispatcher.stop()
    if ops is not None and serving is not None:
        ops.should_exit = True
        await serving
    await engine.dispose()

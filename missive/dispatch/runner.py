"""`missive dispatch`: the dispatcher alone, stopped cleanly by SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

from missive.config import Settings
from missive.dispatch.worker import Dispatcher
from missive.observability.logs import configure_logging
from missive.store.db import make_engine, migrate


async def run_dispatcher(settings: Settings) -> None:
    configure_logging(settings)
    engine = make_engine(settings)
    await migrate(engine)
    dispatcher = Dispatcher(engine, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    dispatcher.start()
    logging.getLogger("missive.dispatch").info("dispatcher %s running", dispatcher.sessions.id)
    await stop.wait()
    await dispatcher.stop()
    await engine.dispose()

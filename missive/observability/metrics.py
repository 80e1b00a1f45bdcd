"""Prometheus metrics: what each process counts, and the text served at /metrics.

One process (`missive serve`): the metrics live in its memory. Several workers
(`missive serve --workers N`): `use_multiprocess_dir` runs in the parent before the
workers start and points PROMETHEUS_MULTIPROC_DIR at DATA_DIR/metrics; prometheus_client
then keeps every worker's values in files there, and whichever worker answers a scrape
adds them all up. The variable must be set before prometheus_client is imported, which
holds in the workers: they are fresh interpreters that inherit the environment.

Label values are channel names, statuses, webhook kinds and link names: never an
address, a number or anything a user typed.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import prometheus_client
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from missive.observability.queues import queue_families

# The classic text format, which every Prometheus version reads.
log = logging.getLogger("missive.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

prometheus_client.disable_created_metrics()

MESSAGES_ACCEPTED = Counter(
    "missive_messages_accepted", "Messages accepted by the API (answered 202), by channel.", ["channel"]
)
MESSAGES_SENT = Counter(
    "missive_messages_sent",
    "Send attempts finished, by channel and result: submitted, rejected, undeliverable or retry.",
    ["channel", "result"],
)
MESSAGE_STATUSES = Counter(
    "missive_message_statuses", "Status changes recorded, by channel and status.", ["channel", "status"]
)
SEND_LATENCY = Histogram(
    "missive_send_latency_seconds",
    "Time a channel took to hand a message to its provider (the provider call), by channel.",
    ["channel"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
WEBHOOK_ATTEMPTS = Counter("missive_webhook_attempts", "Webhook POSTs made, by kind.", ["kind"])
WEBHOOK_FAILURES = Counter(
    "missive_webhook_failures", "Webhook POSTs that got no 2xx answer (error, timeout or other status), by kind.", ["kind"]
)
SMPP_BINDS_UP = Gauge(
    "missive_smpp_binds_up", "SMPP binds currently bound, by link.", ["link"], multiprocess_mode="livesum"
)
RATE_LIMIT_WAITS = Counter(
    "missive_rate_limit_waits", "Sends that waited for their link's rate limit, by link.", ["link"]
)
RATE_LIMIT_WAIT_SECONDS = Counter(
    "missive_rate_limit_wait_seconds", "Time sends spent waiting for their link's rate limit, by link.", ["link"]
)
PROCESSES = Gauge(
    "missive_server_processes", "Server processes answering requests (the workers of `serve --workers N`).",
    multiprocess_mode="livesum",
)


@functools.lru_cache(maxsize=4096)
def _child(metric: Any, *labels: str) -> Any:
    """`metric.labels(...)`, looked up once per label set (it validates and locks)."""
    return metric.labels(*labels)


# -- what the code counts (one call per event) --------------------------------------------


def accepted(messages: Any) -> None:
    """Count the message rows just stored (a batch of accepts: one step per channel)."""
    for channel, count in collections.Counter(row["channel"] for row in messages).items():
        _child(MESSAGES_ACCEPTED, channel).inc(count)


def sent(channel: str, result: str) -> None:
    _child(MESSAGES_SENT, channel, result).inc()


def status_recorded(channel: str, status: str) -> None:
    _child(MESSAGE_STATUSES, channel, status).inc()


async def timed_send(channel: str, sending: Any) -> Any:
    """Await a channel's send, observing how long it took (failed sends included)."""
    started = time.perf_counter()
    try:
        return await sending
    finally:
        _child(SEND_LATENCY, channel).observe(time.perf_counter() - started)


def sends_took(channel: str, seconds: float, count: int) -> None:
    """`count` sends that went out together, in `seconds`."""
    child = _child(SEND_LATENCY, channel)
    for _ in range(count):
        child.observe(seconds)


def webhook_attempt(kind: str, ok: bool) -> None:
    _child(WEBHOOK_ATTEMPTS, kind).inc()
    if not ok:
        _child(WEBHOOK_FAILURES, kind).inc()


def smpp_bind(bind_name: str, up: bool) -> None:
    """A bind named `<link>-<n>` (see SmppPool) came up or went down."""
    _child(SMPP_BINDS_UP, bind_name.rsplit("-", 1)[0]).inc(1 if up else -1)


def rate_limited(link: str, seconds: float) -> None:
    _child(RATE_LIMIT_WAITS, link).inc()
    _child(RATE_LIMIT_WAIT_SECONDS, link).inc(seconds)


# -- processes ------------------------------------------------------------------------------


def use_multiprocess_dir(data_dir: Path) -> Path:
    """Empty DATA_DIR/metrics and make the processes started from now on share it."""
    directory = (data_dir / "metrics").resolve()
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory


def process_started() -> None:
    PROCESSES.inc()
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        # A worker that died without shutting down (and was restarted by uvicorn) left
        # its live gauges behind: drop them, or binds and processes would count it still.
        for path in Path(directory).glob("gauge_live*_*.db"):
            pid = int(path.stem.rsplit("_", 1)[1])
            if pid != os.getpid() and not _alive(pid):
                multiprocess.mark_process_dead(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_stopped() -> None:
    PROCESSES.dec()
    if os.environ.get(MULTIPROC_ENV):
        # Drops this process's live gauges (binds up, processes) from the sums.
        multiprocess.mark_process_dead(os.getpid())


# -- the scrape -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _registry() -> Any:
    if not os.environ.get(MULTIPROC_ENV):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


class _Families:
    def __init__(self, families: list[Any]) -> None:
        self._families = families

    def collect(self) -> list[Any]:
        return self._families


async def render(engine: AsyncEngine, now: float) -> bytes:
    """The text of a scrape: this process's (or all workers') metrics, then the queue
    gauges (left out, with a warning logged, when the database does not answer)."""
    try:
        queues = await queue_families(engine, now)
    except Exception as exc:  # noqa: BLE001 - the other metrics are still worth serving
        log.warning("queue gauges not read: %s", exc)
        queues = []
    return generate_latest(_registry()) + generate_latest(_Families(queues))  # type: ignore[arg-type]

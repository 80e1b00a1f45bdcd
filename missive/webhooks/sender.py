"""Delivers the webhook outbox: signed POSTs, retried with backoff for at least a day.

Concurrency is bounded twice: in total, and per target (an application, or an account
for Basic-auth messages). A target at its bound is left out of the next claims, so one
slow receiver fills only its own slots and never holds up the others.

Every attempt goes only where the outbound URL policy allows (missive/url_guard.py);
a refused URL is a failed attempt, with the reason, retried like any other. Redirects are
not followed: a 3xx is a failed attempt. Of the answer only the status counts; at most
`http_client.BODY_LIMIT` bytes of the body are read (so that the connection can be reused), and the
whole attempt takes at most `webhook_timeout` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from missive.cache import TTLCache
from missive.config import Settings
from missive.observability import metrics
from missive.store.bulk import write_at_once
from missive.store.claims import claim_due, release
from missive.store.tables import accounts, webhook_attempts, webhook_outbox
from missive.store.writer import Batcher
from missive.url_guard import AddressGuard, RefusedAddress
from missive.url_safety import policy_for
from missive.waiting import Outage, wait_any
from missive.webhooks.http_client import HttpError, WebhookClient
from missive.webhooks.outbox import WebhookTargets
from missive.webhooks.signing import sign

log = logging.getLogger("missive.webhooks")


@dataclass(frozen=True)
class Attempt:
    webhook_id: str
    at: float
    duration_ms: float
    status_code: int | None
    error: str | None
    attempts: int
    created_at: float

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def next_delay(attempts: int, base: float, cap: float) -> float:
    """Exponential backoff with +-20% jitter, so retries of many webhooks spread out."""
    return min(cap, base * 2 ** max(0, attempts - 1)) * random.uniform(0.8, 1.2)


class WebhookSender:
    def __init__(self, engine: AsyncEngine, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._settings = settings
        self._clock = clock
        self._client: WebhookClient | None = None
        self._results: Batcher[Attempt] = Batcher(engine, self._record, name="webhook-results", one_statement=True)
        self._in_flight: Counter[str] = Counter()
        # Leased rows of targets at their bound, started as their slots free up.
        self._waiting: dict[str, deque[dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._secrets = TTLCache(clock, ttl=30.0)
        self._guard = AddressGuard(policy_for(settings))
        self._running = False
        # Whether due rows may be waiting in the outbox beyond what this process holds.
        self._backlog = True
        # Targets a claim left out as full: their rows may wait in the outbox, but claiming
        # is of no use until their queue here has drained (see `_finished`).
        self._blocked: set[str] = set()
        self._late: list[str] = []
        self.wake = asyncio.Event()
        # The node its claims name (missive/node.py), set by the dispatcher at its start.
        self.node: str | None = None

    async def run(self, stopping: asyncio.Event) -> None:
        self._client = WebhookClient(self._guard, self._settings.webhook_timeout, self._settings.webhook_max_in_flight)
        self._results.start()
        self._running = True
        try:
            outage = Outage(log, "claiming webhooks")
            while not stopping.is_set():
                try:
                    claimed = await self._claim()
                    outage.recovered()
                except Exception as exc:  # noqa: BLE001 - the database may come back: try again
                    outage.failed(exc)
                    claimed = 0
                if claimed and self._backlog:
                    # Cut short by the room: more rows are due; let a batch gather.
                    await asyncio.sleep(self._settings.claim_linger)
                else:
                    # Nothing left that a claim could take now: wait for a wake (rows
                    # written unleased, a full receiver drained) or the next poll.
                    await wait_any(stopping, self.wake, self._settings.poll_interval)
                    self.wake.clear()
        finally:
            await self._drain()

    async def _drain(self) -> None:
        self._running = False
        # Rows waiting here for a busy receiver would otherwise stay leased (not sent by
        # anyone) until their lease ran out, long after a restart.
        waiting = [row["id"] for rows in self._waiting.values() for row in rows]
        self._waiting.clear()
        await release(self._engine, webhook_outbox.c.id, waiting, "waiting webhooks")
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self._settings.shutdown_timeout)
        await self._results.stop()
        if self._client is not None:
            await self._client.close()

    async def _claim(self) -> int:
        """Lease due webhooks; start those whose target has a free slot and keep up to one
        more round per target waiting locally, so a busy target's rows are not claimed
        and handed back over and over."""
        per_target = self._settings.webhook_per_target
        held = {t: self._in_flight[t] + len(self._waiting.get(t, ())) for t in set(self._in_flight) | set(self._waiting)}
        # Only requests in progress count against the total: rows waiting for a busy
        # target's slots (at most `per_target` per target) must not take the room of
        # targets that answer, or a few slow receivers would hold up everyone.
        room = self._settings.webhook_max_in_flight - sum(self._in_flight.values())
        if room <= 0:
            self._backlog = True
            return 0
        full = [t for t, n in held.items() if n >= 2 * per_target]
        conditions: list[Any] = [webhook_outbox.c.state == "pending"]
        if full:
            conditions.append(webhook_outbox.c.target.not_in(full))
        async with self._engine.begin() as conn:
            rows = await claim_due(
                conn, webhook_outbox, webhook_outbox.c.id, self._clock(), self._settings.lease_seconds, room, *conditions,
                by=self.node,
            )
        overflow = []
        for row in rows:
            target = row["target"]
            if self._in_flight[target] < per_target:
                self._start(row)
            elif held.get(target, 0) < 2 * per_target:
                self._waiting.setdefault(target, deque()).append(row)
                held[target] = held.get(target, 0) + 1
            else:
                overflow.append(row["id"])
                full.append(target)
        await release(self._engine, webhook_outbox.c.id, overflow, "claimed webhooks")
        # Rows left in the outbox for later claims: those of other targets when this claim
        # was cut short by the room (a finished delivery claims again), and those of full
        # targets, left out or handed back, which wait for the target's queue here to
        # drain (`_finished` wakes the claims then). Claiming after each of a full target's
        # deliveries would find nothing of it, or take and hand back its rows every time.
        self._backlog = len(rows) >= room
        self._blocked.update(full)
        return len(rows) - len(overflow)

    def admits(self, target: str, pending: int) -> bool:
        """Whether a new webhook row for `target` may be written leased to this process
        (`pending` more of its rows are on their way from the same transaction): while
        its receiver's slots and one round of waiting rows are not all taken."""
        held = self._in_flight[target] + len(self._waiting.get(target, ())) + pending
        return self._running and held < 2 * self._settings.webhook_per_target

    def adopt(self, committed: WebhookTargets) -> None:
        """Start (or queue for their receiver's slots) the rows a committed transaction
        wrote leased to this process; wake the claims for the others."""
        if not self._running:
            # Stopped meanwhile: handed back by `release_late`, not left leased.
            self._late.extend(row["id"] for row in committed.leased)
            committed.leased = []
        for row in committed.leased:
            target = row["target"]
            if self._in_flight[target] < self._settings.webhook_per_target:
                self._start(row)
            else:
                self._waiting.setdefault(target, deque()).append(row)
        if committed.unleased:
            self._backlog = True
            self.wake.set()

    async def release_late(self) -> None:
        """Hand back rows adopted after the sender stopped (results committed during the
        shutdown), so that they go out at once after a restart."""
        late, self._late = self._late, []
        await release(self._engine, webhook_outbox.c.id, late, "webhooks")

    def _start(self, row: dict[str, Any]) -> None:
        self._in_flight[row["target"]] += 1
        task = asyncio.create_task(self._deliver(row))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _finished(self, target: str) -> None:
        self._in_flight[target] -= 1
        if self._in_flight[target] <= 0:
            del self._in_flight[target]
        waiting = self._waiting.get(target)
        if waiting:
            self._start(waiting.popleft())
            if not waiting:
                del self._waiting[target]
        if target in self._blocked and target not in self._waiting:
            self._blocked.discard(target)
            self.wake.set()

    async def _signing(self, account_id: str) -> tuple[str, str]:
        hit, cached = self._secrets.get(account_id)
        if hit:
            return cached  # type: ignore[no-any-return]
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(accounts.c.api_key, accounts.c.signature_secret).where(accounts.c.id == account_id))).one()
        self._secrets.put(account_id, (row.api_key, row.signature_secret))
        return row.api_key, row.signature_secret

    async def _deliver(self, row: dict[str, Any]) -> None:
        started = time.perf_counter()
        status_code, error = None, None
        try:
            refused = self._guard.refusal(row["url"])
            if refused:
                error = f"refused: {refused}"
            else:
                status_code, error = await self._post(row)
        except RefusedAddress as exc:
            error = f"refused: {exc}"
        except TimeoutError:
            error = f"TimeoutError: no answer within {self._settings.webhook_timeout:g} s"
        except (HttpError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        except Exception as exc:  # noqa: BLE001 - recorded on the row, retried
            log.warning("webhook %s: %s", row["id"], exc)
            error = f"{type(exc).__name__}"
        attempt = Attempt(row["id"], self._clock(), (time.perf_counter() - started) * 1000, status_code, error, row["attempts"] + 1, row["created_at"])
        metrics.webhook_attempt(row["kind"], attempt.ok)
        try:
            await self._results.submit(attempt)
        except Exception as exc:  # noqa: BLE001 - the lease runs out and the webhook is retried
            log.warning("webhook %s: result not recorded: %s", row["id"], exc)
        finally:
            # The slot frees only once the result is recorded: what a crash can deliver
            # twice stays bounded by the in-flight limits.
            self._finished(row["target"])
        if self._backlog:
            self.wake.set()

    async def _post(self, row: dict[str, Any]) -> tuple[int, str | None]:
        body = row["payload"].encode()
        api_key, secret = await self._signing(row["account_id"])
        token = sign(body, secret, api_key, row["application_id"])
        assert self._client is not None
        answer = await self._client.post(
            row["url"], body,
            {"Content-Type": "application/json", "Authorization": f"Bearer {token}", "User-Agent": "Missive"},
        )
        if 300 <= answer.status < 400:
            return answer.status, f"HTTP {answer.status}: redirects are not followed (Location: {answer.location or ''})"
        return answer.status, None

    async def _record(self, conn: AsyncConnection, attempts: list[Attempt]) -> None:
        records = [
            {"webhook_id": a.webhook_id, "at": a.at, "status_code": a.status_code, "error": a.error, "duration_ms": a.duration_ms}
            for a in attempts
        ]
        updates = []
        for a in attempts:
            if a.ok:
                state, due = "delivered", a.at
            elif a.at - a.created_at >= self._settings.webhook_retry_for:
                state, due = "failed", a.at
            else:
                state, due = "pending", a.at + next_delay(a.attempts, self._settings.webhook_backoff_base, self._settings.webhook_backoff_cap)
            updates.append(
                {
                    "id": a.webhook_id,
                    "state": state,
                    "due_at": due,
                    "attempts": a.attempts,
                    "last_error": a.error or (None if a.ok else f"HTTP {a.status_code}"),
                    "last_status_code": a.status_code,
                    "delivered_at": a.at if a.ok else None,
                }
            )
        # One statement on PostgreSQL, in autocommit (`one_statement=True` in __init__).
        await write_at_once(conn, [(webhook_attempts, records)], [(webhook_outbox, "id", updates, ("claimed_until",))])

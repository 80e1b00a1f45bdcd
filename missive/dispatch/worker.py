"""The dispatcher: claims due outbox rows, sends them through their channel, records
what happened; fires due timers (promised statuses); runs the webhook sender.

It runs inside `missive serve` by default, and alone as `missive dispatch`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from missive.channels.base import (
    Channel,
    ChannelLink,
    Elsewhere,
    OutboundMessage,
    SendError,
    Throttled,
    Unavailable,
    Undeliverable,
)
from missive.channels.registry import build_channels
from missive.config import Settings
from missive.dispatch import viber_rules
from missive.dispatch.link_events import apply_link_events, event_lock_names
from missive.dispatch.outcomes import Outcome, lock_names_of, write_outcomes
from missive.dispatch.ratelimit import RateLimiter
from missive.dispatch.recording import record_statuses
from missive.dispatch.retry import RetryPolicy
from missive.dispatch.routing import LinkRouter
from missive.dispatch.sessions import SessionKeeper
from missive.observability import context, metrics
from missive.sms.gsm import count_parts
from missive.store import rates
from missive.store.claims import claim_due, release
from missive.store.faults import classify, describe
from missive.store.locks import lock_names
from missive.store.rows import as_dicts
from missive.store.statuses import StatusChange
from missive.store.tables import messages, outbox, timers
from missive.store.writer import Batcher
from missive.waiting import Outage, wait_any
from missive.webhooks.outbox import WebhookTargets
from missive.webhooks.sender import WebhookSender
from missive.workflows import engine as workflows

log = logging.getLogger("missive.dispatch")

# What a link's own connections pushed (receipts, inbound messages), to be stored.
Pushed = tuple[ChannelLink, list[Any]]

CLAIM_BATCH = 256
# How long a message another dispatcher must send waits before it is claimable again.
ELSEWHERE_DELAY = 0.2


class Dispatcher:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        channels: dict[str, Channel] | None = None,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._clock = clock
        self._channels = channels if channels is not None else build_channels(settings)
        for channel in self._channels.values():
            if hasattr(channel, "sink"):
                channel.sink = self._link_events
        self._router = LinkRouter(engine, settings, clock)
        self._limiter = RateLimiter(self._reserve)
        self.sessions = SessionKeeper(engine, settings, self._channels, clock)
        self._policy = RetryPolicy(settings.dispatch_backoff_base, settings.dispatch_backoff_cap, settings.dispatch_max_attempts)
        self.webhooks = WebhookSender(engine, settings, clock)
        self._targets = WebhookTargets(clock)
        # Send results, and what SMPP sessions push (receipts, inbound SMS), many per
        # transaction; a pushed PDU is acknowledged to the SMSC once its batch has
        # committed. Both in one queue: a receipt that follows its submit_sm_resp then
        # lands in the same transaction as the send result, or a later one, and finds it.
        self._results: Batcher[Outcome | Pushed] = Batcher(
            engine, self._commit, name="dispatch-results", on_committed=self.webhooks.adopt)
        self.wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        # Messages being accepted in this process that it will send without a claim.
        self._reserved = 0
        self._late: list[str] = []

    def start(self) -> None:
        self._results.start()
        self._loops = [
            asyncio.create_task(self._outbox_loop(), name="missive-outbox"),
            asyncio.create_task(self._timer_loop(), name="missive-timers"),
            asyncio.create_task(self.webhooks.run(self._stopping), name="missive-webhooks"),
            asyncio.create_task(self.sessions.run(self._stopping), name="missive-sessions"),
        ]

    async def stop(self) -> None:
        """Stop claiming, let in-flight sends and webhooks finish (within the shutdown timeout)."""
        self._stopping.set()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self._settings.shutdown_timeout)
        await asyncio.wait(self._loops, timeout=self._settings.shutdown_timeout + 1)
        await self._results.stop()
        await self.webhooks.release_late()
        await self._release_late()
        for channel in self._channels.values():
            await channel.close()

    def notify(self) -> None:
        self.wake.set()

    # -- messages accepted in this process: sent at once, no claim ---------------------

    def reserve(self) -> float | None:
        """Room to send a message this process is accepting as soon as it is committed:
        the lease its outbox row is written with, or None (the row is left for claims)."""
        if not self._loops or self._stopping.is_set():
            return None
        if len(self._tasks) + self._reserved >= self._settings.dispatch_max_in_flight:
            return None
        self._reserved += 1
        return self._clock() + self._settings.lease_seconds

    def adopt(self, message: dict[str, Any] | None) -> None:
        """Send a reserved message whose rows have committed (None: they did not)."""
        self._reserved -= 1
        if message is None:
            return
        if self._stopping.is_set():
            # Not sent here: handed back in `stop`, rather than leased past a restart.
            self._late.append(message["uuid"])
            return
        self._start_send(message, 1)

    def _start_send(self, message: dict[str, Any], attempt: int) -> None:
        task = asyncio.create_task(self._send(message, attempt))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _leasing(self) -> WebhookTargets:
        """Webhook targets for one transaction of this dispatcher: the webhooks it writes
        go straight to this process's sender once committed (no claim), while the
        sender has room for them."""
        return self._targets.leasing(self._clock() + self._settings.lease_seconds, self.webhooks.admits)

    async def _commit(self, conn: AsyncConnection, items: list[Outcome | Pushed]) -> WebhookTargets:
        """Send results first, then what links pushed, in one transaction; the locks both
        need taken first, together, in one sorted statement."""
        targets = self._leasing()
        outcomes = [item for item in items if isinstance(item, Outcome)]
        pushed = [item for item in items if not isinstance(item, Outcome)]
        await lock_names(conn, lock_names_of(outcomes) + event_lock_names(pushed))
        if outcomes:
            await write_outcomes(conn, targets, outcomes)
        if pushed:
            await apply_link_events(conn, targets, pushed, self._clock())
        return targets

    # -- outbox ---------------------------------------------------------------------

    async def _outbox_loop(self) -> None:
        outage = Outage(log, "claiming the outbox")
        while not self._stopping.is_set():
            try:
                claimed = await self._claim_outbox()
                outage.recovered()
            except Exception as exc:  # noqa: BLE001 - the database may come back
                outage.failed(exc)
                claimed = 0
            if not claimed:
                await wait_any(self._stopping, self.wake, self._settings.poll_interval)
                self.wake.clear()
            elif claimed < CLAIM_BATCH:
                # A short pause lets rows gather, so that claims and result commits come
                # in batches rather than one transaction per accepted message.
                await asyncio.sleep(self._settings.claim_linger)

    async def _release_late(self) -> None:
        late, self._late = self._late, []
        await release(self._engine, outbox.c.message_uuid, late, "accepted messages")

    async def _claim_outbox(self) -> int:
        room = self._settings.dispatch_max_in_flight - len(self._tasks) - self._reserved
        if room <= 0:
            await asyncio.sleep(0.01)
            return 0
        now = self._clock()
        room = min(room, CLAIM_BATCH)
        # The room is held while the claim runs: messages accepted meanwhile (`reserve`)
        # must not take the same slots, or more than the in-flight limit would be sent
        # and unrecorded at once (what a crash then sends twice).
        self._reserved += room
        try:
            async with self._engine.begin() as conn:
                rows = await claim_due(conn, outbox, outbox.c.message_uuid, now, self._settings.lease_seconds, room)
                found = await _messages(conn, [r["message_uuid"] for r in rows])
        finally:
            self._reserved -= room
        for row in rows:
            message = found.get(row["message_uuid"])
            if message is not None:
                self._start_send(message, row["attempts"] + 1)
        return len(rows)

    async def _send(self, message: dict[str, Any], attempt: int) -> None:
        context.message_uuid.set(message["uuid"])  # this task's log lines are about this message
        outcome = await self._attempt(message, attempt)
        metrics.sent(message["channel"], outcome.change.status if outcome.change else "retry")
        try:
            await self._results.submit(outcome)
        except Exception as exc:  # noqa: BLE001 - the lease runs out and the send is retried
            log.warning("message %s: result not recorded: %s", message["uuid"], describe(exc))

    async def _attempt(self, message: dict[str, Any], attempt: int) -> Outcome:
        uuid = message["uuid"]
        now = self._clock()
        if _expired(message, now):
            return Outcome(uuid, now, StatusChange(uuid, "undeliverable", now, error_code=1360, error_reason="TTL was activated"))
        link: ChannelLink | None = None
        try:
            link = await self._router.route(message)
            channel = self._channels.get(link.kind)
            if channel is None:
                raise Unavailable(f"no channel of kind {link.kind!r} in this process")
            to = await self._recipient(message, link)
            outbound = OutboundMessage(
                uuid=uuid, channel=message["channel"], message_type=message["message_type"],
                to=to, sender=message["from_addr"], body=message["body"], attempt=attempt,
            )
            await self._wait_turn(uuid, link, _units(message))
            result = await metrics.timed_send(message["channel"], channel.send(outbound, link))
        except SendError as error:
            return self._failed(uuid, attempt, error, link.id if link else None)
        except Exception as exc:
            if classify(exc) is None:
                log.exception("message %s: channel raised", uuid)
            else:  # routing or the Viber rules could not read the database: retried
                log.warning("message %s: not sent, the database failed: %s", uuid, describe(exc))
            return self._failed(uuid, attempt, Unavailable(f"{type(exc).__name__}"), None)
        now = self._clock()
        refs = tuple((link.kind, ref) for ref in (result.all_refs or (result.provider_ref,)))
        return Outcome(
            uuid, now, StatusChange(uuid, "submitted", now, provider_ref=result.provider_ref), result.follow_ups, refs
        )

    async def _recipient(self, message: dict[str, Any], link: ChannelLink) -> str:
        """The provider's address for `to`, after the rules that need what Missive knows
        of the provider's users (Viber: learned numbers, subscriptions, first message a
        transaction). Raises the send error of a refusal."""
        if link.kind != "viber":
            return str(message["to_addr"])
        async with self._engine.connect() as conn:
            refusal = await viber_rules.check(conn, message, link)
            if refusal is not None:
                raise refusal
            return await viber_rules.recipient(conn, message, link)

    async def _wait_turn(self, uuid: str, link: ChannelLink, units: int) -> None:
        """Wait for the link's rate to allow this message. A wait longer than half the
        lease first extends the claim, so that no other dispatcher sends it meanwhile."""
        wait = await self._limiter.delay(link.id, link.tps, units)
        if wait <= 0:
            return
        if wait > self._settings.lease_seconds / 2:
            async with self._engine.begin() as conn:
                await conn.execute(update(outbox).where(outbox.c.message_uuid == uuid)
                                   .values(claimed_until=self._clock() + wait + self._settings.lease_seconds))
        await asyncio.sleep(wait)

    async def _reserve(self, key: str, rate: float, units: float) -> float:
        """Take from a link's bucket shared by every dispatcher; the seconds to wait."""
        async with self._engine.begin() as conn:
            return await rates.take(conn, key, rate, units, self._clock())

    def _failed(self, uuid: str, attempt: int, error: SendError, link_id: str | None) -> Outcome:
        now = self._clock()
        if isinstance(error, Elsewhere):
            # Not a try: back in the queue at once (after a beat, so that the dispatchers
            # holding the link's sessions claim it first) and look for a slot here.
            self.sessions.wake.set()
            return Outcome(uuid, now, retry_at=now + ELSEWHERE_DELAY, attempts=attempt - 1, error=str(error))
        if isinstance(error, Throttled) and link_id:
            self._limiter.slow_down(link_id, error.retry_after or self._settings.dispatch_backoff_base)
        delay = self._policy.delay(attempt, error)
        if delay is not None:
            return Outcome(uuid, now, retry_at=now + delay, attempts=attempt, error=str(error))
        status = "undeliverable" if error.retryable or isinstance(error, Undeliverable) else "rejected"
        return Outcome(uuid, now, StatusChange(uuid, status, now, error_code=error.code, error_reason=error.reason))

    # -- channels with their own connections (SMPP) ----------------------------------

    async def _link_events(self, link: ChannelLink, events: list[Any]) -> None:
        await self._results.submit((link, events))

    # -- timers -----------------------------------------------------------------------

    async def _timer_loop(self) -> None:
        outage = Outage(log, "firing timers")
        while not self._stopping.is_set():
            try:
                fired = await self._fire_timers()
                outage.recovered()
            except Exception as exc:  # noqa: BLE001 - the database may come back
                outage.failed(exc)
                fired = 0
            if not fired:
                await wait_any(self._stopping, None, min(self._settings.poll_interval, 0.1))

    async def _fire_timers(self) -> int:
        now = self._clock()
        async with self._engine.begin() as conn:
            rows = await claim_due(conn, timers, timers.c.id, now, self._settings.lease_seconds, 1000)
        if not rows:
            return 0
        # What the timers do and their removal commit together: a crash cannot fire a
        # timer twice, nor fail a workflow step over twice. They act in due order, so
        # that a status due before an expiry counts for the workflow.
        targets = self._leasing()
        async with self._engine.begin() as conn:
            for kind, group in itertools.groupby(rows, key=lambda r: r["kind"]):
                if kind == "workflow":
                    for row in group:
                        await workflows.on_expiry(conn, targets, row, self._clock())
                else:
                    await record_statuses(conn, targets, [_promised(r) for r in group], self._clock())
            await conn.execute(delete(timers).where(timers.c.id.in_([r["id"] for r in rows])))
        self.webhooks.adopt(targets)
        return len(rows)


def _promised(timer: dict[str, Any]) -> StatusChange:
    """The status a provider promised (a timer of kind `status`)."""
    payload = timer["payload"]
    return StatusChange(
        timer["message_uuid"], payload["status"], timer["due_at"], payload.get("provider_ref"),
        payload.get("error_code"), payload.get("error_reason"),
    )


def _expired(message: dict[str, Any], now: float) -> bool:
    """A Viber message not sent within its ttl is dropped rather than sent late."""
    ttl = (message["body"].get("viber_service") or {}).get("ttl") if message["channel"] == "viber_service" else None
    return isinstance(ttl, (int, float)) and now > message["created_at"] + ttl


def _units(message: dict[str, Any]) -> int:
    """What a message costs against a link's rate: its parts for SMS, else one."""
    text = message["body"].get("text")
    if message["channel"] != "sms" or not isinstance(text, str):
        return 1
    return count_parts(text, (message["body"].get("sms") or {}).get("encoding_type"))


async def _messages(conn: AsyncConnection, uuids: list[str]) -> dict[str, dict[str, Any]]:
    if not uuids:
        return {}
    rows = as_dicts(await conn.execute(select(messages).where(messages.c.uuid.in_(uuids))))
    return {row["uuid"]: row for row in rows}

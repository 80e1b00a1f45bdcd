"""The dispatcher: claims due outbox rows, sends them through their channel, records
what happened; fires due timers (promised statuses); runs the webhook sender.

It runs inside `missive serve` by default, and alone as `missive dispatch`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from sqlalchemy import delete, true, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from missive import node as nodes
from missive.cache import GENERATION, TTLCache
from missive.channels.base import (
    Channel,
    ChannelLink,
    Elsewhere,
    OutboundMessage,
    Rejected,
    SendError,
    SendResult,
    Throttled,
    Unavailable,
    Undeliverable,
)
from missive.channels.registry import build_channels
from missive.config import Settings
from missive.config_watch import ConfigWatch
from missive.dispatch import viber_rules, whatsapp_rules
from missive.dispatch.link_events import apply_link_events, event_lock_names
from missive.dispatch.outcomes import Outcome, lock_names_of, with_logs, write_outcomes
from missive.dispatch.ratelimit import RateLimiter
from missive.dispatch.recording import record_statuses
from missive.dispatch.retry import RetryPolicy
from missive.dispatch.routing import LinkRouter
from missive.dispatch.send_window import SendWindow
from missive.dispatch.sessions import SessionKeeper
from missive.observability import context, exchanges, metrics
from missive.sms.gsm import count_parts
from missive.store import provider_logs, rates
from missive.store.accounts import is_sending
from missive.store.claims import claim_due, release, take_back
from missive.store.faults import classify, describe
from missive.store.locks import lock_names
from missive.store.media import prune_loop as prune_media
from missive.store.rows import rows_in
from missive.store.statuses import StatusChange
from missive.store.tables import messages, outbox, timers, webhook_outbox
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
# The most SMS sent together (`Dispatcher._send_together`): their results are recorded
# once the last is answered, and a share of 256 (26 round trips of a window of 10) took
# long enough for the SMSC's receipts of its first messages to come before their results.
SHARE_MAX = 64
# A message of a disabled (or deleted) account: not sent, final. The hosted API's code
# for an api_key "barred from submitting messages".
ACCOUNT_BARRED = 1060


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
        # Follows the configuration version for this process's caches (config_watch.py).
        self.config = ConfigWatch(engine)
        self._router = LinkRouter(engine, settings, clock)
        # Whether each account's messages may be sent (not disabled), by account id.
        self._sending = TTLCache(clock)
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
        # Messages being sent (claimed or adopted, their result not yet recorded), and
        # those of them waiting for the end of this turn of the loop to start together.
        self._busy = 0
        self._queued: list[tuple[dict[str, Any], int]] = []
        # Set when a dispatcher that had no room to claim has half of it again.
        self._room = asyncio.Event()
        self._full = False
        # Messages being accepted in this process that it will send without a claim.
        self._reserved = 0
        self._late: list[str] = []
        self._window = SendWindow(settings.dispatch_max_in_flight)
        # Which sends' exchanges with providers are logged (MISSIVE_PROVIDER_LOGS).
        self._provider_logs = exchanges.Policy(settings.provider_logs)
        # This process's identity in its data directory (missive/node.py), taken at start.
        self.node: nodes.Node | None = None
        self._resumed: asyncio.Task[None] | None = None

    @property
    def node_id(self) -> str | None:
        return self.node.id if self.node else None

    def start(self) -> None:
        self.node = nodes.take(self._settings.data_dir)
        # The same identity for the SMPP bind slots: a restart holds its binds again at
        # once rather than after its previous life's slot leases.
        self.sessions.id = self.webhooks.node = self.node.id
        self.config.start()
        # A link added or removed is bound or unbound now, not at the next round.
        GENERATION.on_change(self.sessions.wake.set)
        self._results.start()
        self._resumed = asyncio.create_task(self._resume(), name="missive-resume")
        self._loops = [
            asyncio.create_task(prune_media(self._engine, self._settings.media_prune_interval, self._stopping, self._clock),
                                name="missive-media"),
            asyncio.create_task(self._outbox_loop(), name="missive-outbox"),
            asyncio.create_task(self._timer_loop(), name="missive-timers"),
            asyncio.create_task(self._webhook_loop(), name="missive-webhooks"),
            asyncio.create_task(self.sessions.run(self._stopping), name="missive-sessions"),
            asyncio.create_task(provider_logs.prune_loop(self._engine, self._settings.provider_log_days * 86400,
                                                         self._stopping, self._clock), name="missive-provider-logs"),
        ]

    async def _resume(self) -> None:
        """Hand back the leases this node's previous life died holding, before anything
        is claimed or leased in this one: they are claimed again at once, not when their
        lease runs out. Should that fail, they run out as they would have."""
        assert self.node is not None
        try:
            taken = await take_back(self._engine, self.node.id, (outbox, true()), (timers, true()),
                                    (webhook_outbox, webhook_outbox.c.state == "pending"))
        except Exception as exc:  # noqa: BLE001 - the leases run out instead
            log.warning("taking back the leases of node %s failed: %s", self.node.id, describe(exc))
            return
        if taken:
            log.info("node %s: took back %d leases of its previous life", self.node.id, taken)

    async def _webhook_loop(self) -> None:
        assert self._resumed is not None
        await self._resumed
        await self.webhooks.run(self._stopping)

    async def stop(self) -> None:
        """Stop claiming, let in-flight sends and webhooks finish (within the shutdown timeout)."""
        self._stopping.set()
        self._start_queued()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self._settings.shutdown_timeout)
        await asyncio.wait(self._loops, timeout=self._settings.shutdown_timeout + 1)
        await self._results.stop()
        await self.webhooks.release_late()
        await self._release_late()
        for channel in self._channels.values():
            await channel.close()
        GENERATION.forget(self.sessions.wake.set)
        await self.config.stop()
        if self.node is not None:
            self.node.close()

    def notify(self) -> None:
        self.wake.set()

    # -- messages accepted in this process: sent at once, no claim ---------------------

    def reserve(self) -> float | None:
        """Room to send a message this process is accepting as soon as it is committed:
        the lease its outbox row is written with, or None (the row is left for claims)."""
        if self._resumed is None or not self._resumed.done() or self._stopping.is_set():
            return None
        if self._busy + self._reserved >= self._room_limit():
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

    def _room_limit(self) -> int:
        """Messages held at once (claimed or reserved, not yet recorded): the in-flight
        limit, and no more than two windows' worth, so that claimed messages do not wait
        for the window past their lease."""
        return min(self._settings.dispatch_max_in_flight, 2 * self._window.capacity)

    def _start_send(self, message: dict[str, Any], attempt: int) -> None:
        """Send `message` with the others started in this turn of the loop (a claim's
        batch, or the messages of one accept commit)."""
        self._busy += 1
        self._queued.append((message, attempt))
        if len(self._queued) == 1:
            asyncio.get_running_loop().call_soon(self._start_queued)

    def _start_queued(self) -> None:
        queued, self._queued = self._queued, []
        if queued:
            self._spawn(self._send_batch(queued))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _sent(self, count: int) -> None:
        """`count` messages sent and their results recorded (or given up on)."""
        self._busy -= count
        if self._full and self._busy + self._reserved <= self._room_limit() // 2:
            self._full = False
            self._room.set()

    async def _send_alone(self, message: dict[str, Any], attempt: int, link: ChannelLink | None = None) -> None:
        try:
            await self._send(message, attempt, link)
        finally:
            self._sent(1)

    def _leasing(self) -> WebhookTargets:
        """Webhook targets for one transaction of this dispatcher: the webhooks it writes
        go straight to this process's sender once committed (no claim), while the
        sender has room for them."""
        return self._targets.leasing(self._clock() + self._settings.lease_seconds, self.node_id, self.webhooks.admits)

    async def _commit(self, conn: AsyncConnection, items: list[Outcome | Pushed]) -> WebhookTargets:
        """Send results first, then what links pushed, in one transaction; the locks both
        need taken first, together, in one sorted statement."""
        targets = self._leasing()
        outcomes = [item for item in items if isinstance(item, Outcome)]
        pushed = [item for item in items if not isinstance(item, Outcome)]
        await lock_names(conn, itertools.chain(lock_names_of(outcomes), event_lock_names(pushed)))
        if outcomes:
            await write_outcomes(conn, targets, outcomes)
        if pushed:
            await apply_link_events(conn, targets, pushed, self._clock(), self._provider_logs)
        return targets

    # -- outbox ---------------------------------------------------------------------

    async def _outbox_loop(self) -> None:
        assert self._resumed is not None
        await self._resumed
        outage = Outage(log, "claiming the outbox")
        while not self._stopping.is_set():
            try:
                claimed = await self._claim_outbox()
                outage.recovered()
            except Exception as exc:  # noqa: BLE001 - the database may come back
                outage.failed(exc)
                claimed = 0
            if claimed < 0:
                # No room: claim again as soon as half of it is free. Waiting for the
                # poll interval held a busy dispatcher to ~2,000 messages a second.
                await wait_any(self._stopping, self._room, self._settings.poll_interval)
                self._room.clear()
            elif not claimed:
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
        room = self._room_limit() - self._busy - self._reserved
        if room <= 0:
            self._room.clear()
            self._full = True
            return -1
        now = self._clock()
        room = min(room, CLAIM_BATCH)
        # The room is held while the claim runs: messages accepted meanwhile (`reserve`)
        # must not take the same slots, or more than the in-flight limit would be sent
        # and unrecorded at once (what a crash then sends twice).
        self._reserved += room
        try:
            async with self._engine.begin() as conn:
                rows = await claim_due(conn, outbox, outbox.c.message_uuid, now, self._settings.lease_seconds, room,
                                       by=self.node_id)
                found = await _messages(conn, [r["message_uuid"] for r in rows])
        finally:
            self._reserved -= room
        for row in rows:
            message = found.get(row["message_uuid"])
            if message is not None:
                self._start_send(message, row["attempts"] + 1)
        return len(rows)

    async def _send_batch(self, queued: list[tuple[dict[str, Any], int]]) -> None:
        """Send what started together, each routed here once. SMS on an SMPP link without
        a rate go out together, link by link (`_send_together`); every other message
        alone (`_send`), with its link when `_routed` found it.

        One task, window entry, provider exchange and result for each message, as
        `_send` has them, were most of a dispatcher's CPU for an SMS: ~110 us of ~360
        (py-spy, peers' harness, docs/benchmarks.md)."""
        # Routing reads links as of each message's accept at least (see `_attempt`): the
        # messages accepted before the configuration was last read go at once, the
        # others once it is read again. Waiting for the newest of a batch held every
        # message of it, and on PostgreSQL, where that read waits for a connection under
        # load, doubled the time from accept to delivery (bench/scaling.py).
        checked = self.config.checked_at
        ready = [item for item in queued if item[0]["created_at"] <= checked]
        later = [item for item in queued if item[0]["created_at"] > checked]
        unstarted = len(queued)
        try:
            for part in (ready, later):
                if part is later and later:
                    await self.config.fresh_since(max(message["created_at"] for message, _ in later))
                together: dict[str, tuple[ChannelLink, list[tuple[dict[str, Any], int]]]] = {}
                for message, attempt in part:
                    link = await self._routed(message)
                    if link is None or link.tps or not hasattr(self._channels.get(link.kind), "send_many"):
                        self._spawn(self._send_alone(message, attempt, link))
                        unstarted -= 1
                    else:
                        together.setdefault(link.id, (link, []))[1].append((message, attempt))
                for link, items in together.values():
                    self._spawn(self._send_together(link, items))
                    unstarted -= len(items)
        except BaseException:
            self._sent(unstarted)
            raise

    async def _routed(self, message: dict[str, Any]) -> ChannelLink | None:
        """The link that carries a message on the plain path: not expired, its account
        known to be sending, its links as of its accept (the caller waited for them);
        None for anything else (`_attempt` then does and says what applies)."""
        if _expired(message, self._clock()):
            return None
        hit, sending = self._sending.get(message["account_id"])
        if not (hit and sending):
            return None
        try:
            return await self._router.route(message)
        except Exception:  # noqa: BLE001 - no link, or the links unreadable: `_attempt` says so
            return None

    async def _send_together(self, link: ChannelLink, items: list[tuple[dict[str, Any], int]]) -> None:
        """Send `items` on `link` in shares, each as soon as the window has room for one
        message: the rest of the share joins it while there is room (`SendWindow.take`)."""
        start = 0
        try:
            while start < len(items):
                await self._window.enter(items[start][0]["uuid"])
                end = start + 1
                while end < len(items) and end - start < SHARE_MAX and self._window.take(items[end][0]["uuid"]):
                    end += 1
                self._spawn(self._send_share(link, items[start:end]))
                start = end
        except BaseException:
            self._sent(len(items) - start)
            raise

    async def _send_share(self, link: ChannelLink, items: list[tuple[dict[str, Any], int]]) -> None:
        """Send messages in the window together; record their outcomes as `_send` does."""
        channel = self._channels[link.kind]
        try:
            recorders = [exchanges.Recorder(message["uuid"], message["account_id"])
                         if self._provider_logs.wants(message["uuid"]) else None for message, _ in items]
            for recorder in recorders:
                if recorder is not None:
                    recorder.on_link(link.id, link.config, channel.secrets)
            outbound = [
                OutboundMessage(uuid=message["uuid"], channel=message["channel"], message_type=message["message_type"],
                                to=str(message["to_addr"]), sender=message["from_addr"], body=message["body"],
                                attempt=attempt)
                for message, attempt in items
            ]
            started = time.perf_counter()
            try:
                results = await channel.send_many(outbound, link, recorders)  # type: ignore[attr-defined]
            except Exception as exc:  # noqa: BLE001 - a fault of the channel: each message has it
                results = [exc] * len(items)
            metrics.sends_took("sms", time.perf_counter() - started, len(items))
            outcomes = []
            for (message, attempt), result, recorder in zip(items, results, recorders, strict=True):
                uuid = message["uuid"]
                if isinstance(result, SendResult):
                    outcome = self._submitted(uuid, result, link)
                elif isinstance(result, SendError):
                    outcome = self._failed(uuid, attempt, result, link)
                else:
                    outcome = self._broken(uuid, attempt, result)
                outcome = with_logs(outcome, recorder)
                metrics.sent("sms", outcome.change.status if outcome.change else "retry")
                outcomes.append(outcome)
        except BaseException:
            now = time.monotonic()
            for message, _ in items:
                self._window.leave(message["uuid"], None, now)
            self._sent(len(items))
            raise
        answered = time.monotonic()
        committed = [self._results.enqueue(outcome) for outcome in outcomes]
        for outcome, done in zip(outcomes, committed, strict=True):
            try:
                await self._record(outcome, done, answered)
            finally:
                self._sent(1)

    async def _send(self, message: dict[str, Any], attempt: int, routed: ChannelLink | None = None) -> None:
        uuid = message["uuid"]
        context.message_uuid.set(uuid)  # this task's log lines are about this message
        recorder = exchanges.Recorder(uuid, message["account_id"]) if self._provider_logs.wants(uuid) else None
        try:
            with exchanges.recording(recorder):
                outcome = with_logs(await self._attempt(message, attempt, routed), recorder)
        except BaseException:
            self._window.leave(uuid, None, time.monotonic())
            raise
        metrics.sent(message["channel"], outcome.change.status if outcome.change else "retry")
        answered = time.monotonic()
        await self._record(outcome, self._results.enqueue(outcome), answered)

    async def _record(self, outcome: Outcome, committed: asyncio.Future[None], answered: float) -> None:
        """Wait for `outcome` to be committed (`committed`, from the results batcher),
        then let the window know how long after the provider's answer (`answered`)."""
        uuid = outcome.message_uuid
        try:
            await committed
        except Exception as exc:  # noqa: BLE001 - see below
            self._window.leave(uuid, None, time.monotonic())
            if classify(exc) is not None:  # the lease runs out and the send is retried
                log.warning("message %s: result not recorded: %s", uuid, describe(exc))
                return
            # The result itself cannot be written (the batcher committed the others
            # without it): sent again, it would fail again for ever.
            await self._unrecordable(uuid, exc)
            return
        now = time.monotonic()
        self._window.leave(uuid, now - answered, now)

    async def _unrecordable(self, uuid: str, exc: Exception) -> None:
        """Record a message whose send result cannot be written as `undeliverable`
        (1030, with why), its outbox row removed: Missive can no longer follow it (its
        provider references are not stored, so no receipt finds it). Should even that
        fail, the outbox row alone is removed. Either way it is not sent again."""
        reason = f"Internal error: the result of the send could not be recorded ({describe(exc)})"
        log.error("message %s: %s; recorded as undeliverable", uuid, reason)
        now = self._clock()
        try:
            await self._results.submit(Outcome(uuid, now, StatusChange(uuid, "undeliverable", now, error_code=1030,
                                                                       error_reason=reason)))
            return
        except Exception as again:  # noqa: BLE001 - logged; the outbox row goes below
            if classify(again) is not None:
                log.warning("message %s: its failure not recorded: %s", uuid, describe(again))
                return
            log.error("message %s: its failure not recorded either (%s); its outbox row is removed", uuid,
                      describe(again))
        try:
            async with self._engine.begin() as conn:
                await conn.execute(delete(outbox).where(outbox.c.message_uuid == uuid))
        except Exception as last:  # noqa: BLE001 - the lease runs out and the send is retried
            log.warning("message %s: outbox row not removed: %s", uuid, describe(last))

    async def _attempt(self, message: dict[str, Any], attempt: int, routed: ChannelLink | None = None) -> Outcome:
        """Send `message`; `routed`, its link when `_send_batch` routed it already."""
        uuid = message["uuid"]
        now = self._clock()
        if _expired(message, now):
            return Outcome(uuid, now, StatusChange(uuid, "undeliverable", now, error_code=1360, error_reason="TTL was activated"))
        link: ChannelLink | None = None
        try:
            if not await self._account_sends(message["account_id"]):
                raise Rejected(ACCOUNT_BARRED, "Partner account barred: the account is disabled, its messages are not sent")
            # Routing reads links as of the message's accept at least: a link added
            # before it carries it, one removed before it does not.
            if routed is None:
                await self.config.fresh_since(message["created_at"])
            link = routed or await self._router.route(message)
            channel = self._channels.get(link.kind)
            if channel is None:
                raise Unavailable(f"no channel of kind {link.kind!r} in this process")
            if (recorder := exchanges.current()) is not None:
                recorder.on_link(link.id, link.config, channel.secrets)
            to = await self._recipient(message, link)
            outbound = OutboundMessage(
                uuid=uuid, channel=message["channel"], message_type=message["message_type"],
                to=to, sender=message["from_addr"], body=message["body"], attempt=attempt,
            )
            await self._wait_turn(uuid, link, message)
            # Out of the window once its result is committed (`_send`).
            await self._window.enter(uuid)
            result = await metrics.timed_send(message["channel"], channel.send(outbound, link))
        except SendError as error:
            return self._failed(uuid, attempt, error, link)
        except Exception as exc:
            return self._broken(uuid, attempt, exc)
        return self._submitted(uuid, result, link)

    def _submitted(self, uuid: str, result: SendResult, link: ChannelLink) -> Outcome:
        now = self._clock()
        return Outcome(
            uuid, now, StatusChange(uuid, "submitted", now, provider_ref=result.provider_ref), result.follow_ups,
            (link.id, link.kind), result.all_refs or (result.provider_ref,),
        )

    def _broken(self, uuid: str, attempt: int, exc: Exception) -> Outcome:
        """A send that raised something other than a send error: retried."""
        if classify(exc) is None:
            log.error("message %s: channel raised", uuid, exc_info=exc)
        else:  # routing or the Viber rules could not read the database: retried
            log.warning("message %s: not sent, the database failed: %s", uuid, describe(exc))
        return self._failed(uuid, attempt, Unavailable(f"{type(exc).__name__}"), None)

    async def _account_sends(self, account_id: str) -> bool:
        hit, sending = self._sending.get(account_id)
        if hit:
            return bool(sending)
        return bool(await self._sending.load(account_id, lambda: is_sending(self._engine, account_id)))

    async def _recipient(self, message: dict[str, Any], link: ChannelLink) -> str:
        """The provider's address for `to`, after the rules that need what Missive knows
        of the provider's users (Viber: learned numbers, subscriptions, first message a
        transaction). Raises the send error of a refusal."""
        if link.kind == "whatsapp":  # the 24-hour window, the wamid a reply names
            return await whatsapp_rules.prepare(self._engine, message, link, self._clock())
        if link.kind != "viber":
            return str(message["to_addr"])
        async with self._engine.connect() as conn:
            refusal = await viber_rules.check(conn, message, link)
            if refusal is not None:
                raise refusal
            return await viber_rules.recipient(conn, message, link)

    async def _wait_turn(self, uuid: str, link: ChannelLink, message: dict[str, Any]) -> None:
        """Wait for the link's rate to allow this message. A wait longer than half the
        lease first extends the claim, so that no other dispatcher sends it meanwhile."""
        # Its parts are counted only against a rate (encoding a text costs ~10 us).
        wait = await self._limiter.delay(link.id, link.tps, _units(message) if link.tps else 1)
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

    def _failed(self, uuid: str, attempt: int, error: SendError, link: ChannelLink | None) -> Outcome:
        now = self._clock()
        if isinstance(error, Elsewhere):
            # Not a try: back in the queue at once (after a beat, so that the dispatchers
            # holding the link's sessions claim it first) and look for a slot here.
            self.sessions.wake.set()
            return Outcome(uuid, now, retry_at=now + ELSEWHERE_DELAY, attempts=attempt - 1, error=str(error))
        if isinstance(error, Throttled) and link:
            self._limiter.slow_down(link.id, error.retry_after or self._settings.dispatch_backoff_base)
        delay = self._policy.delay(attempt, error)
        if delay is not None:
            return Outcome(uuid, now, retry_at=now + delay, attempts=attempt, error=str(error))
        status = "undeliverable" if error.retryable or isinstance(error, Undeliverable) else "rejected"
        # The link that refused it, if one was chosen: webhooks and GET name it.
        return Outcome(uuid, now, StatusChange(uuid, status, now, error_code=error.code, error_reason=error.reason),
                       link=(link.id, link.kind) if link else None)

    # -- channels with their own connections (SMPP) ----------------------------------

    def _link_events(self, link: ChannelLink, events: list[Any]) -> asyncio.Future[None]:
        return self._results.enqueue((link, events))

    # -- timers -----------------------------------------------------------------------

    async def _timer_loop(self) -> None:
        assert self._resumed is not None
        await self._resumed
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
            rows = await claim_due(conn, timers, timers.c.id, now, self._settings.lease_seconds, 1000, by=self.node_id)
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
    """A message not sent within its ttl is dropped rather than sent late: Viber's
    `viber_service.ttl`, an SMS's `ttl` (the SMSC is given what is left of it)."""
    body = message["body"]
    if message["channel"] == "viber_service":
        ttl = (body.get("viber_service") or {}).get("ttl")
    else:
        ttl = body.get("ttl") if message["channel"] == "sms" else None
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
    rows = await rows_in(conn, messages, _MESSAGE_COLUMNS, "uuid", uuids)
    return {row["uuid"]: row for row in rows}


_MESSAGE_COLUMNS = tuple(column.name for column in messages.c)

"""SMPP 3.4 client sessions (ESME side) on asyncio: binds kept alive, a window, receipts.

smpplib only encodes and decodes the PDUs (see `smpp_pdus`): its own client is blocking
sockets and a thread per session, so the transport, the window of outstanding
submit_sm, the keep-alive and the reconnects are written here.

`submit` fails with SmppError when the SMSC answers a non-zero command_status
(`retryable` for the statuses SMPP 3.4 makes temporary, see RETRYABLE), and with
SessionDown when there is no bind, the connection drops or no response comes in time:
the message may or may not have reached the SMSC, and the caller retries.

A deliver_sm (receipt or inbound message) is answered only after the handler returns,
so nothing is acknowledged before it is safe. The deliver_sm read together (what one read
of the socket brought) go to the handler together, which says of each whether it is
stored; one that is not, or all of them when the handler raises, get ESME_RX_T_APPN back
to the SMSC, which delivers them again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from smpplib.exceptions import UnknownCommandError

from missive.observability import metrics
from missive.sms import smpp_pdus as pdus
from missive.sms.smpp_link import Link, Response
from missive.sms.smpp_link import SessionDown as SessionDown  # re-exported, as RETRYABLE
from missive.sms.smpp_pdus import RETRYABLE as RETRYABLE  # re-exported: the callers' one import
from missive.sms.smpp_pdus import BindRefused, DeliverSm, SmppError

log = logging.getLogger("missive.smpp")

# How long close() waits for running deliver handlers and for the unbind_resp.
CLOSE_WAIT = 2.0


@dataclass(frozen=True)
class BindConfig:
    host: str
    port: int
    system_id: str
    password: str = field(repr=False)  # never logged, never in a repr
    system_type: str = ""
    tls: bool = False
    window: int = 10
    enquire_link_interval: float = 30.0
    response_timeout: float = 10.0
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    connect_timeout: float = 10.0
    tls_verify: bool = True  # off for an SMSC with a self-signed certificate

    def __post_init__(self) -> None:
        # SMPP 3.4 sizes, NUL included; smpplib would cut longer values silently.
        for name, limit in (("system_id", 16), ("password", 9), ("system_type", 13)):
            if len(getattr(self, name)) >= limit:
                raise ValueError(f"{name} is at most {limit - 1} characters in SMPP 3.4")


# Takes the deliver_sm read together; says of each, in order, whether it is stored.
DeliverHandler = Callable[[list[DeliverSm]], Awaitable[list[bool]]]
# What one read of the socket takes at most. Bytes of a PDU not whole yet wait for the
# next read; the framing refuses a command_length past MAX_PDU, so at most that and one
# read are ever kept.
READ_SIZE = 64 * 1024


def backoff(failures: int, low: float, high: float) -> float:
    """Exponential from `low`, capped at `high`, jittered over the upper half of it."""
    cap = min(high, low * 2 ** min(failures, 30))
    return random.uniform(max(low, cap / 2), cap)


class SmppBind:
    """One bind_transceiver session kept alive: connect (TCP or TLS), bind, enquire_link
    every interval (no response within response_timeout = dead), answer the SMSC's
    enquire_link and unbind, reconnect with jittered exponential backoff after a drop, an
    unbind or a refused bind; at most `window` submit_sm outstanding."""

    def __init__(self, config: BindConfig, on_deliver: DeliverHandler, name: str = "bind-0") -> None:
        self.config = config
        self.name = name
        self.last_error: str | None = None
        self._on_deliver = on_deliver
        self._sequence = pdus.Sequence()
        self._link: Link | None = None
        self._bound = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"smpp-{self.name}")

    @property
    def bound(self) -> bool:
        return self._link is not None and self._link.bound

    @property
    def load(self) -> int | None:
        """Outstanding plus queued submits, or None when not bound."""
        return self._link.load if self._link is not None and self._link.bound else None

    async def wait_bound(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._bound.wait(), timeout)
        return self.bound

    async def submit(self, params: dict[str, Any]) -> str:
        """Send one submit_sm and return the SMSC's message_id."""
        return (await self.submit_timed(params))[0]

    async def submit_timed(self, params: dict[str, Any]) -> tuple[str, float]:
        """`submit`, and when its submit_sm_resp was read (time.time()): a deliver_sm read
        just after it may be handled before the waiting send resumes."""
        data = pdus.encode_submit(0, params)  # bad fields fail here, before any waiting
        link = await self._ready_link()
        await link.take_slot()
        try:
            status, resp, read_at = await self._request(link, "submit_sm", data=data)
        finally:
            link.release()
        if status != pdus.ESME_ROK:
            if status == pdus.ESME_RINVBNDSTS:
                link.shut("the SMSC says we are not bound")
            raise SmppError(status)
        return str(resp), read_at

    async def submit_many(self, datas: list[bytes]) -> list[tuple[str, float] | Exception]:
        """Several submit_sm (encoded, any sequence number), each as the window allows,
        and one wait for all their answers: for each, (message_id, read_at) as
        `submit_timed` returns, or the error it raises (SmppError, SessionDown).

        The dispatcher sends its batches of SMS through here: a future, a timer and a
        task for each submit, as `submit_timed` has them, were a fifth of its CPU a
        message. The wait for the answers ends `response_timeout` after the last write."""
        results: list[tuple[str, float] | Exception | None] = [None] * len(datas)
        try:
            link = await self._ready_link()
        except SessionDown as down:
            return [down] * len(datas)
        answers = _Answers(link, results)
        sequences: list[int] = []
        failure: SessionDown | None = None
        try:
            for i, data in enumerate(datas):
                await link.take_slot()
                sequence = self._sequence.next_sequence()
                link.pending[sequence] = _Answer(answers, i)
                sequences.append(sequence)
                answers.out += 1
                link.write(pdus.resequence(data, sequence))
            answers.writing = False
            if answers.out:
                await asyncio.wait_for(answers.done, self.config.response_timeout)
        except TimeoutError:
            pass
        except SessionDown as down:
            failure = down
        finally:
            # What is still unanswered (the session down, no answer in time, the wait
            # cancelled) ends in that error and gives its slot in the window back.
            for sequence in sequences:
                answer = link.pending.pop(sequence, None)
                if answer is not None and not answer.done():
                    answer.set_exception(failure or SessionDown(
                        f"no submit_sm_resp (sequence {sequence}) within {self.config.response_timeout}s"))
        for i, result in enumerate(results):
            if result is None:  # not written: the session went down first
                results[i] = SessionDown(link.reason or f"{self.name} is down")
            elif isinstance(result, tuple) and result[0] == pdus.ESME_RINVBNDSTS:
                link.shut("the SMSC says we are not bound")
        return [_submitted(result) for result in results]  # type: ignore[arg-type]

    async def close(self) -> None:
        """Unbind gracefully (waiting briefly for unbind_resp) and stop reconnecting."""
        self._stopping.set()
        if self._deliveries:
            await asyncio.wait(self._deliveries, timeout=CLOSE_WAIT)
        link = self._link
        if link is not None and link.bound:
            with contextlib.suppress(SessionDown, TimeoutError):
                await self._request(link, "unbind", min(CLOSE_WAIT, self.config.response_timeout))
            link.shut("closed")
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self._deliveries):
            task.cancel()
        await asyncio.gather(*self._deliveries, return_exceptions=True)

    async def _ready_link(self) -> Link:
        if self._stopping.is_set():
            raise SessionDown(f"{self.name} is closed")
        if not self.bound and not await self.wait_bound(self.config.response_timeout):
            raise SessionDown(f"{self.name} not bound: {self.last_error or 'connecting'}")
        assert self._link is not None
        return self._link

    async def _request(self, link: Link, name: str, timeout: float | None = None,
                       data: bytes | None = None, **fields: Any) -> Response:
        """Send a request (`data` if given, else encoded from `fields`) and await its response."""
        sequence = self._sequence.next_sequence()
        data = pdus.resequence(data, sequence) if data else pdus.encode(name, sequence, **fields)
        timeout = self.config.response_timeout if timeout is None else timeout
        future = link.expect(sequence)
        try:
            await link.send(data)
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise SessionDown(f"no {name}_resp (sequence {sequence}) within {timeout}s") from None
        finally:
            link.pending.pop(sequence, None)

    # -- the session --------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while not self._stopping.is_set():
            bound_at: float | None = None
            link: Link | None = None
            reader: asyncio.Task[None] | None = None
            try:
                link = await self._connect()
                self._link = link
                reader = loop.create_task(self._read(link), name=f"smpp-{self.name}-read")
                status, _, _ = await self._request(
                    link, "bind_transceiver", system_id=self.config.system_id, password=self.config.password,
                    system_type=self.config.system_type,
                )
                if status != pdus.ESME_ROK:
                    raise BindRefused(status)
                link.bound, bound_at = True, loop.time()
                metrics.smpp_bind(self.name, True)
                self._bound.set()
                log.info("%s bound to %s:%d as %s", self.name, self.config.host, self.config.port, self.config.system_id)
                await self._keep_alive(link)
                self.last_error = link.reason
            except (OSError, TimeoutError, SessionDown, BindRefused) as exc:
                self.last_error = str(exc) or type(exc).__name__
            except Exception as exc:  # a bug must not end the reconnecting
                log.exception("%s: session failed", self.name)
                self.last_error = repr(exc)
            finally:
                if bound_at is not None:
                    metrics.smpp_bind(self.name, False)
                self._bound.clear()
                self._link = None
                if link is not None:
                    link.shut(self.last_error or "session ended")
                if reader is not None:
                    reader.cancel()
                    await asyncio.gather(reader, return_exceptions=True)
            if self._stopping.is_set():
                break
            # A session that stayed up a while starts the backoff over; a flapping one does not.
            if bound_at is not None and loop.time() - bound_at >= self.config.reconnect_max:
                failures = 0
            delay = backoff(failures, self.config.reconnect_min, self.config.reconnect_max)
            failures += 1
            log.warning("%s down (%s); reconnecting in %.2fs", self.name, self.last_error, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _connect(self) -> Link:
        context: ssl.SSLContext | None = None
        if self.config.tls:
            context = ssl.create_default_context()
            if not self.config.tls_verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.config.host, self.config.port, ssl=context,
                                        server_hostname=self.config.host if context else None),
                self.config.connect_timeout,
            )
        except TimeoutError:
            raise SessionDown(f"connect to {self.config.host}:{self.config.port} timed out") from None
        return Link(reader, writer, self.config.window)

    async def _keep_alive(self, link: Link) -> None:
        """enquire_link every interval until the link closes; a missing response kills it."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(link.closed.wait(), self.config.enquire_link_interval)
                return
            await self._request(link, "enquire_link")

    async def _read(self, link: Link) -> None:
        """Every whole PDU of each read of the socket, in order; the deliver_sm among
        them handed over together. Two `readexactly` a PDU, and a task and a wait for the
        results batch each deliver_sm, were ~12% of a dispatcher's CPU on the peers'
        harness, where a read brings tens of submit_sm_resp and receipts."""
        pending = b""
        try:
            while not link.closed.is_set():
                chunk = await link.reader.read(READ_SIZE)
                if not chunk:
                    link.shut("connection closed by the SMSC")
                    return
                data = pending + chunk if pending else chunk
                delivers: list[pdus.DeliverSm] = []
                start, end = 0, len(data)
                while end - start >= pdus.HEADER_SIZE:
                    length, command_id, status, sequence = pdus.header_at(data, start)
                    if not pdus.HEADER_SIZE <= length <= pdus.MAX_PDU:
                        link.shut(f"absurd command_length {length}: stream out of step")
                        return
                    if end - start < length:
                        break
                    deliver = self._received(link, data[start:start + length], command_id, status, sequence)
                    if deliver is not None:
                        delivers.append(deliver)
                    start += length
                pending = data[start:]
                if delivers:
                    task = asyncio.get_running_loop().create_task(self._deliver(link, delivers))
                    self._deliveries.add(task)
                    task.add_done_callback(self._deliveries.discard)
        except (ConnectionError, OSError) as exc:
            link.shut(f"connection lost: {exc!r}")
        except SessionDown:
            pass  # a write on a link already shut
        except Exception as exc:
            log.exception("%s: reading failed", self.name)
            link.shut(f"reading failed: {exc!r}")

    def _received(self, link: Link, data: bytes, command_id: int, status: int, sequence: int) -> pdus.DeliverSm | None:
        """Handle one PDU; a deliver_sm is returned, to be handed over with the others
        of its read."""
        # A message's own PDUs first, through the direct codec (see smpp_pdus).
        if command_id == pdus.SUBMIT_SM_RESP:
            self._settle(link, command_id, status, sequence, pdus.submit_resp_id(data))
            return None
        if command_id == pdus.DELIVER_SM:
            try:
                return pdus.decode_deliver_sm(data, self.name)
            except (ValueError, IndexError) as exc:
                log.warning("%s: undecodable deliver_sm (seq %d): %r", self.name, sequence, exc)
                link.write(pdus.encode("generic_nack", sequence, status=pdus.ESME_RINVCMDLEN))
                return None
        is_response = bool(command_id & pdus.RESPONSE_BIT)
        try:
            pdu = pdus.decode(data)
        except Exception as exc:
            unknown = isinstance(exc, UnknownCommandError)
            log.warning("%s: %s PDU 0x%08X (seq %d): %r", self.name, "unknown" if unknown else "undecodable",
                        command_id, sequence, exc)
            if not is_response:
                nack = pdus.ESME_RINVCMDID if unknown else pdus.ESME_RINVCMDLEN
                link.write(pdus.encode("generic_nack", sequence, status=nack))
                return None
            pdu = None  # a response still settles its request, by its status
        if is_response:
            self._settle(link, command_id, status, sequence, pdu)
            return None
        name = pdu.command
        if name == "enquire_link":
            link.write(pdus.encode("enquire_link_resp", sequence))
        elif name == "unbind":
            link.write(pdus.encode("unbind_resp", sequence))
            link.shut("unbound by the SMSC")  # written first: shut flushes
        elif name == "alert_notification":
            pass  # has no response, and we keep no availability state
        else:
            link.write(pdus.encode("generic_nack", sequence, status=pdus.ESME_RINVCMDID))
        return None

    def _settle(self, link: Link, command_id: int, status: int, sequence: int, decoded: Any) -> None:
        """A response settles the request of its sequence number."""
        if command_id == pdus.GENERIC_NACK and not status:
            status = pdus.ESME_RUNKNOWNERR  # a nack is never a success
        future = link.pending.get(sequence)
        if future is not None and not future.done():
            future.set_result((status, decoded, time.time()))
        elif command_id == pdus.GENERIC_NACK:
            log.warning("%s: generic_nack %s for sequence %d", self.name, pdus.status_name(status), sequence)

    async def _deliver(self, link: Link, delivers: list[pdus.DeliverSm]) -> None:
        try:
            stored = await self._on_deliver(delivers)
            if len(stored) != len(delivers):
                raise ValueError(f"the handler answered for {len(stored)} of {len(delivers)} deliver_sm")
        except Exception:
            log.exception("%s: deliver_sm handler failed (seq %d, %d PDU(s)); asking for redelivery",
                          self.name, delivers[0].sequence_number, len(delivers))
            stored = [False] * len(delivers)
        try:
            for deliver, ok in zip(delivers, stored, strict=True):
                status = pdus.ESME_ROK if ok else pdus.ESME_RX_T_APPN
                await link.send(pdus.encode_response(pdus.DELIVER_SM, deliver.sequence_number, status))
        except SessionDown:
            log.warning("%s: deliver_sm seq %d (%d PDU(s)) handled but the link is gone; the SMSC will redeliver",
                        self.name, delivers[0].sequence_number, len(delivers))


class _Answers:
    """The answers one `submit_many` waits for; `done` once the last one written came."""

    __slots__ = ("link", "results", "out", "writing", "done")

    def __init__(self, link: Link, results: list[Any]) -> None:
        self.link = link
        self.results = results
        self.out = 0  # written and not answered
        self.writing = True  # more submits to write: answers so far do not end the wait
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def settle(self, index: int, value: Any) -> None:
        if self.results[index] is not None:
            return
        self.results[index] = value
        self.link.release()
        self.out -= 1
        if not self.out and not self.writing and not self.done.done():
            self.done.set_result(None)


class _Answer:
    """Where the response of one submit of a `submit_many` goes: in `Link.pending`, in
    place of a future (the session settles it, `Link.shut` fails it, as a future)."""

    __slots__ = ("answers", "index")

    def __init__(self, answers: _Answers, index: int) -> None:
        self.answers, self.index = answers, index

    def done(self) -> bool:
        return self.answers.results[self.index] is not None

    def set_result(self, response: Response) -> None:
        self.answers.settle(self.index, response)

    def set_exception(self, error: BaseException) -> None:
        self.answers.settle(self.index, error)

    def exception(self) -> BaseException | None:
        result = self.answers.results[self.index]
        return result if isinstance(result, BaseException) else None


def _submitted(result: Response | Exception) -> tuple[str, float] | Exception:
    if isinstance(result, Exception):
        return result
    status, message_id, read_at = result
    return SmppError(status) if status != pdus.ESME_ROK else (str(message_id), read_at)


class SmppPool:
    """K binds of one link; a submit goes to the bound session with the fewest outstanding."""

    def __init__(self, config: BindConfig, binds: int, on_deliver: DeliverHandler, name: str) -> None:
        self.config = config
        self.name = name
        self._on_deliver = on_deliver
        self.binds = [SmppBind(config, on_deliver, f"{name}-{i}") for i in range(binds)]

    async def resize(self, binds: int) -> None:
        """Open or close binds until there are `binds` (the others stay up)."""
        while len(self.binds) < binds:
            bind = SmppBind(self.config, self._on_deliver, f"{self.name}-{len(self.binds)}")
            self.binds.append(bind)
            bind.start()
        extra, self.binds = self.binds[binds:], self.binds[:binds]
        await asyncio.gather(*(bind.close() for bind in extra))

    def start(self) -> None:
        for bind in self.binds:
            bind.start()

    @property
    def bound_count(self) -> int:
        return sum(bind.bound for bind in self.binds)

    async def wait_bound(self, timeout: float) -> bool:
        """True as soon as any bind is bound."""
        if self.bound_count:
            return True
        waits = [asyncio.ensure_future(bind.wait_bound(timeout)) for bind in self.binds]
        try:
            for finished in asyncio.as_completed(waits):
                if await finished:
                    return True
            return False
        finally:
            for wait in waits:
                wait.cancel()

    async def submit(self, params: dict[str, Any]) -> str:
        return (await self.submit_timed(params))[0]

    async def submit_timed(self, params: dict[str, Any]) -> tuple[str, float]:
        """`Bind.submit_timed` on the least loaded bound session."""
        if not self.bound_count and not await self.wait_bound(self.config.response_timeout):
            last = next((b.last_error for b in self.binds if b.last_error), None) or "connecting"
            raise SessionDown(f"{self.name}: no bound session: {last}")
        loads = [(load, i) for i, bind in enumerate(self.binds) if (load := bind.load) is not None]
        if not loads:
            raise SessionDown(f"{self.name}: no bound session")
        # Least loaded first; ties drawn at random, so an idle pool spreads its submits too.
        _, _, best = min((load, random.random(), i) for load, i in loads)
        return await self.binds[best].submit_timed(params)

    async def submit_many(self, datas: list[bytes]) -> list[tuple[str, float] | Exception]:
        """`Bind.submit_many`, the submits shared among the bound sessions in turn."""
        if not self.bound_count and not await self.wait_bound(self.config.response_timeout):
            last = next((b.last_error for b in self.binds if b.last_error), None) or "connecting"
            return [SessionDown(f"{self.name}: no bound session: {last}")] * len(datas)
        bound = [bind for bind in self.binds if bind.bound]
        if len(bound) <= 1 or len(datas) <= 1:
            return await (bound[0] if bound else self.binds[0]).submit_many(datas)
        shares = await asyncio.gather(*(bind.submit_many(datas[i::len(bound)]) for i, bind in enumerate(bound)))
        results: list[tuple[str, float] | Exception] = [SessionDown("")] * len(datas)
        for i, share in enumerate(shares):
            results[i::len(bound)] = share
        return results

    async def close(self) -> None:
        await asyncio.gather(*(bind.close() for bind in self.binds))

"""The asyncio SMPP session against the fake SMSC (real SMPP 3.4 in node): bind and
submit, the window, error statuses, refused binds and backoff, drops and unbinds,
enquire_link, deliver_sm acknowledged only after the handler, a pool of binds, TLS.
A few protocol edges the simulator never produces run against a raw asyncio server.

Each test is synchronous and runs its own event loop; the simulator's control calls
block, so inside the loop they go through `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from missive.sms import smpp_pdus as pdus
from missive.sms.smpp_link import Link
from missive.sms.smpp_session import (
    BindConfig,
    DeliverSm,
    SessionDown,
    SmppBind,
    SmppError,
    SmppPool,
    backoff,
)
from missive.tls import self_signed
from tests.fakes.fake_smsc import FakeSMSC
from tests.fakes.serving import free_port

PASSWORD = "pw-8char"
UCS2_WITH_UDH = bytes([5, 0, 3, 0x2A, 2, 1]) + "é\x00€".encode("utf-16-be")


@pytest.fixture(scope="module")
def simulator() -> Iterator[FakeSMSC]:
    with FakeSMSC() as smsc:
        yield smsc


@pytest.fixture()
def smsc(simulator: FakeSMSC) -> FakeSMSC:
    simulator.reset()
    simulator.configure(credentials={"missive": PASSWORD}, redeliver_ms=100)
    return simulator


def config(port: int, **overrides: Any) -> BindConfig:
    settings: dict[str, Any] = dict(reconnect_min=0.05, reconnect_max=0.2, response_timeout=2.0)
    return BindConfig("127.0.0.1", port, "missive", PASSWORD, **{**settings, **overrides})


def message(text: bytes = b"hello", **fields: Any) -> dict[str, Any]:
    return {"source_addr": "Acme", "source_addr_ton": 5, "destination_addr": "447700900000",
            "dest_addr_ton": 1, "dest_addr_npi": 1, "short_message": text, **fields}


async def ignore(delivers: list[DeliverSm]) -> list[bool]:
    return [True] * len(delivers)


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 10))


async def until(predicate: Callable[[dict[str, Any]], bool], smsc: FakeSMSC) -> dict[str, Any]:
    return await asyncio.to_thread(smsc.wait_for, predicate, 5.0)


def test_bind_submit_close(smsc: FakeSMSC, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "missive.smpp")
    smsc.configure(resp_id_format="hex", next_message_id=0xABC0)

    async def body() -> None:
        bind = SmppBind(config(smsc.port), ignore, name="main")
        bind.start()
        assert await bind.wait_bound(5) and bind.bound
        assert await bind.submit(message(UCS2_WITH_UDH, esm_class=0x40, data_coding=8)) == "ABC0"
        assert await bind.submit(message()) == "ABC1"
        await bind.close()
        assert not bind.bound
        with pytest.raises(SessionDown):
            await bind.submit(message())

    run(body)
    state = smsc.state()
    first = state["submits"][0]
    # The octets went out exactly as given: no re-encoding of UDH or UCS-2.
    assert bytes.fromhex(first["short_message"]) == UCS2_WITH_UDH
    assert (first["esm_class"], first["data_coding"], first["source_addr"]) == (0x40, 8, "Acme")
    assert (first["dest_addr_ton"], first["destination_addr"]) == (1, "447700900000")
    assert [b["ok"] for b in state["binds"]] == [True] and state["binds"][0]["command"] == "bind_transceiver"
    assert state["bound"] == 0  # unbound on close, and not reconnected
    assert PASSWORD not in caplog.text and PASSWORD not in repr(config(1))


def test_bad_fields_fail_before_sending() -> None:
    with pytest.raises(ValueError, match="unknown submit_sm fields"):
        pdus.encode_submit(1, message(destination="x"))
    with pytest.raises(TypeError):
        pdus.encode_submit(1, message("text"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at most 254"):
        pdus.encode_submit(1, message(b"x" * 255))


def test_config_rejects_what_smpp_cannot_carry() -> None:
    with pytest.raises(ValueError, match="password is at most 8"):
        BindConfig("127.0.0.1", 2775, "missive", "123456789")


def test_window_is_respected(smsc: FakeSMSC) -> None:
    smsc.configure(submit_delay_ms=60)

    async def body() -> None:
        bind = SmppBind(config(smsc.port, window=3), ignore)
        bind.start()
        assert await bind.wait_bound(5)
        ids = await asyncio.gather(*(bind.submit(message()) for _ in range(12)))
        assert len(set(ids)) == 12
        await bind.close()

    run(body)
    assert smsc.state()["max_outstanding"] == 3


def test_error_statuses(smsc: FakeSMSC) -> None:
    smsc.configure(errors=[{"status": 0x58, "count": 1}, {"status": 0x14, "count": 1},
                           {"status": 0x0B, "count": 1}, {"status": 0x45, "count": 1}])

    async def body() -> None:
        bind = SmppBind(config(smsc.port), ignore)
        bind.start()
        assert await bind.wait_bound(5)
        seen = []
        for _ in range(4):
            with pytest.raises(SmppError) as error:
                await bind.submit(message())
            seen.append((error.value.status, error.value.name, error.value.retryable))
        assert seen == [(0x58, "ESME_RTHROTTLED", True), (0x14, "ESME_RMSGQFUL", True),
                        (0x0B, "ESME_RINVDSTADR", False), (0x45, "ESME_RSUBMITFAIL", False)]
        assert bind.bound and await bind.submit(message())  # the session is still fine
        await bind.close()

    run(body)


def test_refused_bind_backs_off_then_binds(smsc: FakeSMSC) -> None:
    smsc.configure(refuse_bind=True)

    async def body() -> None:
        bind = SmppBind(config(smsc.port, reconnect_min=0.05, reconnect_max=0.4, response_timeout=0.3), ignore)
        bind.start()
        assert not await bind.wait_bound(0.9)
        times = [b["time"] for b in (await asyncio.to_thread(smsc.state))["binds"]]
        assert "ESME_RBINDFAIL" in (bind.last_error or "")
        with pytest.raises(SessionDown, match="ESME_RBINDFAIL"):
            await bind.submit(message())
        # Backing off: 0.05, ~0.1, ~0.2, then 0.2-0.4 - not a bind every 50 ms (18 of them).
        assert 4 <= len(times) <= 8
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert gaps[0] < 0.15 and gaps[-1] >= 0.15
        await asyncio.to_thread(smsc.configure, refuse_bind=False)
        assert await bind.wait_bound(2)
        assert await bind.submit(message())
        await bind.close()

    run(body)


def test_drop_fails_in_flight_and_waiting_submits_then_recovers(smsc: FakeSMSC) -> None:
    smsc.configure(submit_delay_ms=300)

    async def body() -> None:
        bind = SmppBind(config(smsc.port, window=4), ignore)
        bind.start()
        assert await bind.wait_bound(5)
        # 4 in flight, 3 waiting for a slot: every one of them must fail, none may hang.
        submits = [asyncio.ensure_future(bind.submit(message())) for _ in range(7)]
        await until(lambda s: len(s["submits"]) == 4, smsc)
        await asyncio.to_thread(smsc.drop)
        results = await asyncio.gather(*submits, return_exceptions=True)
        assert all(isinstance(r, SessionDown) for r in results), results
        assert await bind.wait_bound(2)
        await asyncio.to_thread(smsc.configure, submit_delay_ms=0)
        assert await bind.submit(message())
        await bind.close()

    run(body)
    assert len(smsc.state()["binds"]) == 2


def test_drop_on_submit_then_recovers(smsc: FakeSMSC) -> None:
    smsc.configure(drop_after=2)

    async def body() -> None:
        bind = SmppBind(config(smsc.port), ignore)
        bind.start()
        assert await bind.wait_bound(5)
        assert await bind.submit(message())
        with pytest.raises(SessionDown):
            await bind.submit(message())
        assert await bind.submit(message())  # waits for the rebind, within response_timeout
        await bind.close()

    run(body)


def test_smsc_unbind_reconnects(smsc: FakeSMSC) -> None:
    async def body() -> None:
        bind = SmppBind(config(smsc.port), ignore)
        bind.start()
        assert await bind.wait_bound(5)
        await asyncio.to_thread(smsc.unbind)
        await until(lambda s: len(s["binds"]) == 2 and s["bound"] == 1, smsc)
        assert bind.last_error == "unbound by the SMSC"
        assert await bind.submit(message())
        await bind.close()

    run(body)


def test_enquire_link_every_interval(smsc: FakeSMSC) -> None:
    async def body() -> None:
        bind = SmppBind(config(smsc.port, enquire_link_interval=0.1), ignore)
        bind.start()
        assert await bind.wait_bound(5)
        await asyncio.sleep(0.55)
        assert bind.bound
        await bind.close()

    run(body)
    assert 3 <= smsc.state()["enquire_links"] <= 6


def test_deliver_sm_answered_after_the_handler(smsc: FakeSMSC) -> None:
    smsc.configure(receipts={"mode": "none"})
    received: list[DeliverSm] = []
    release = asyncio.Event()

    async def handler(delivers: list[DeliverSm]) -> list[bool]:
        await release.wait()
        received.extend(delivers)
        return [True] * len(delivers)

    async def body() -> None:
        bind = SmppBind(config(smsc.port), handler, name="rx")
        bind.start()
        assert await bind.wait_bound(5)
        answer = asyncio.ensure_future(asyncio.to_thread(smsc.deliver, "447700900001", "Missive", "hi €", "ucs2"))
        state = await until(lambda s: len(s["delivers"]) == 1, smsc)
        await asyncio.sleep(0.1)
        assert (await asyncio.to_thread(smsc.state))["delivers"][0]["status"] is None  # not yet answered
        release.set()
        assert (await answer)["statuses"] == [0]
        assert state["delivers"][0]["attempt"] == 1
        await bind.close()

    run(body)
    [mo] = received
    assert (mo.source_addr, mo.destination_addr, mo.data_coding, mo.session) == ("447700900001", "Missive", 8, "rx")
    assert mo.short_message == "hi €".encode("utf-16-be") and mo.receipted_message_id is None


def test_failing_handler_gets_redelivery(smsc: FakeSMSC) -> None:
    calls: list[DeliverSm] = []

    async def handler(delivers: list[DeliverSm]) -> list[bool]:
        calls.extend(delivers)
        if len(calls) == 1:
            raise RuntimeError("storage unavailable")
        return [True] * len(delivers)

    async def body() -> None:
        bind = SmppBind(config(smsc.port), handler)
        bind.start()
        assert await bind.wait_bound(5)
        message_id = await bind.submit(message(registered_delivery=1))
        state = await until(lambda s: any(d["status"] == 0 for d in s["delivers"]), smsc)
        assert [(d["attempt"], d["status"]) for d in state["delivers"]] == [(1, 0x64), (2, 0)]
        assert [c.receipted_message_id for c in calls] == [message_id, message_id]
        assert calls[1].message_state == 2 and calls[1].esm_class == 0x04
        assert b"stat:DELIVRD" in calls[1].short_message
        await bind.close()

    run(body)


def test_deliver_sm_read_together_go_to_the_handler_together_and_fail_alone(smsc: FakeSMSC) -> None:
    # Six parts sent at once; the first call holds the event loop (as a busy dispatcher
    # does), so the other five wait in the socket and come in one read: handed over
    # together, each answered for itself. The one the handler could not store (part 3,
    # the first time) alone is sent again.
    smsc.configure(receipts={"mode": "none"})
    calls: list[list[int]] = []

    async def handler(delivers: list[DeliverSm]) -> list[bool]:
        seqs = [d.short_message[5] for d in delivers]  # the UDH's part number
        if not calls:
            time.sleep(0.3)
        calls.append(seqs)
        first_time = sum(seq == 3 for call in calls for seq in call) == 1
        return [not (seq == 3 and first_time) for seq in seqs]

    async def body() -> None:
        bind = SmppBind(config(smsc.port), handler, name="rx")
        bind.start()
        assert await bind.wait_bound(5)
        await asyncio.to_thread(smsc.deliver, "447700900001", "Missive", "abcdefghijkl", parts=6)
        state = await until(lambda s: sum(d["status"] == 0 for d in s["delivers"]) == 6, smsc)
        answers = sorted((d["short_message"][-12:], d["attempt"], d["status"]) for d in state["delivers"])
        assert [a for a in answers if a[2] != 0] == [a for a in answers if a[1] == 1 and a[2] == 0x64]
        assert len([a for a in answers if a[2] == 0x64]) == 1
        await bind.close()

    run(body)
    assert sorted(seq for call in calls for seq in call) == [1, 2, 3, 3, 4, 5, 6]
    assert len(calls) < 6 and max(len(call) for call in calls) > 1  # read together, handed over together
    assert calls[-1] == [3]  # the redelivery, alone


def test_pool_spreads_submits(smsc: FakeSMSC) -> None:
    smsc.configure(submit_delay_ms=50)

    async def body() -> None:
        pool = SmppPool(config(smsc.port, window=4), 2, ignore, name="link")
        pool.start()
        assert await pool.wait_bound(5)
        while pool.bound_count < 2:  # the second bind_transceiver_resp may still be on its way
            await asyncio.sleep(0.01)
        ids = await asyncio.gather(*(pool.submit(message()) for _ in range(16)))
        assert len(set(ids)) == 16
        await pool.close()
        assert pool.bound_count == 0

    run(body)
    state = smsc.state()
    per_session: dict[int, int] = {}
    for submit in state["submits"]:
        per_session[submit["session"]] = per_session.get(submit["session"], 0) + 1
    assert sorted(per_session.values()) == [8, 8]
    assert state["max_outstanding"] <= 4


def encoded(text: bytes = b"hello") -> bytes:
    return pdus.encode_submit(0, message(text))


def test_submit_many_answers_each_in_order_within_the_window(smsc: FakeSMSC) -> None:
    smsc.configure(submit_delay_ms=30, errors=[{"status": 0x0B, "count": 1}])

    async def body() -> None:
        bind = SmppBind(config(smsc.port, window=3), ignore)
        bind.start()
        assert await bind.wait_bound(5)
        results = await bind.submit_many([encoded(b"m%d" % i) for i in range(12)])
        assert isinstance(results[0], SmppError) and results[0].name == "ESME_RINVDSTADR"
        ids = [result[0] for result in results[1:]]  # type: ignore[index]
        assert len(set(ids)) == 11 and all(isinstance(result, tuple) for result in results[1:])
        assert bind.load == 0  # every slot of the window given back
        await bind.close()

    run(body)
    state = smsc.state()
    assert state["max_outstanding"] == 3
    # Each answer is its own submit's: the texts went out in order, ids given in order.
    texts = [bytes.fromhex(s["short_message"]) for s in state["submits"]]
    assert texts == [b"m%d" % i for i in range(12)]


def test_submit_many_after_a_drop_fails_what_is_unanswered_and_recovers(smsc: FakeSMSC) -> None:
    smsc.configure(submit_delay_ms=300)

    async def body() -> None:
        bind = SmppBind(config(smsc.port, window=4), ignore)
        bind.start()
        assert await bind.wait_bound(5)
        batch = asyncio.ensure_future(bind.submit_many([encoded() for _ in range(7)]))
        await until(lambda s: len(s["submits"]) == 4, smsc)
        await asyncio.to_thread(smsc.drop)
        results = await batch
        assert all(isinstance(r, SessionDown) for r in results), results
        assert await bind.wait_bound(2)
        await asyncio.to_thread(smsc.configure, submit_delay_ms=0)
        assert all(isinstance(r, tuple) for r in await bind.submit_many([encoded() for _ in range(5)]))
        await bind.close()

    run(body)


def test_submit_many_without_answers_in_time_frees_the_window(smsc: FakeSMSC) -> None:
    smsc.configure(submit_delay_ms=900)

    async def body() -> None:
        bind = SmppBind(config(smsc.port, window=2, response_timeout=0.3), ignore)
        bind.start()
        assert await bind.wait_bound(5)
        late = await bind.submit_many([encoded() for _ in range(2)])
        assert all(isinstance(r, SessionDown) and "no submit_sm_resp" in str(r) for r in late), late
        assert bind.load == 0
        await asyncio.to_thread(smsc.configure, submit_delay_ms=0)
        # The late answers come meanwhile and settle nothing; the window is whole again.
        answered = await bind.submit_many([encoded() for _ in range(4)])
        assert all(isinstance(r, tuple) for r in answered), answered
        await bind.close()

    run(body)


def test_pool_shares_submit_many_among_its_binds(smsc: FakeSMSC) -> None:
    async def body() -> None:
        pool = SmppPool(config(smsc.port, window=4), 2, ignore, name="link")
        pool.start()
        assert await pool.wait_bound(5)
        while pool.bound_count < 2:
            await asyncio.sleep(0.01)
        results = await pool.submit_many([encoded(b"m%d" % i) for i in range(10)])
        assert len({r[0] for r in results}) == 10  # type: ignore[index]
        await pool.close()

    run(body)
    state = smsc.state()
    by_text = {bytes.fromhex(s["short_message"]): s["message_id"] for s in state["submits"]}
    sessions = {s["session"] for s in state["submits"]}
    assert len(sessions) == 2 and len(by_text) == 10


class CountingWriter:
    """asyncio's StreamWriter, counting the writes that reach its transport."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer, self.writes = writer, 0
        self.transport = writer.transport

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.writer.write(data)

    def close(self) -> None:
        self.writer.close()

    async def drain(self) -> None:
        await self.writer.drain()


def test_writes_of_one_loop_turn_go_out_together() -> None:
    async def body() -> None:
        received = bytearray()
        done = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while len(received) < 3 * 17:
                received.extend(await reader.read(1024))
            done.set()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        counting = CountingWriter(writer)
        link = Link(reader, counting, 10)  # type: ignore[arg-type]
        for sequence in (1, 2, 3):
            link.write(pdus.encode_response(pdus.DELIVER_SM, sequence))
        assert counting.writes == 0  # not yet: at the end of this turn
        await asyncio.wait_for(done.wait(), 5)
        assert counting.writes == 1
        assert [struct.unpack(">I", received[i + 12:i + 16])[0] for i in (0, 17, 34)] == [1, 2, 3]
        link.shut("done")
        server.close()

    run(body)


def test_tls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with FakeSMSC(tls=(str(key), str(cert))) as smsc:

        async def body() -> None:
            bind = SmppBind(config(smsc.port, tls=True, tls_verify=False), ignore)
            bind.start()
            assert await bind.wait_bound(5)
            assert await bind.submit(message())
            await bind.close()

            strict = SmppBind(config(smsc.port, tls=True, response_timeout=0.3), ignore)
            strict.start()
            assert not await strict.wait_bound(0.3)
            assert "CERTIFICATE_VERIFY_FAILED" in (strict.last_error or "")
            await strict.close()

        run(body)


def test_nothing_listening_is_session_down() -> None:
    async def body() -> None:
        bind = SmppBind(config(free_port(), response_timeout=0.2), ignore)
        bind.start()
        with pytest.raises(SessionDown, match="not bound"):
            await bind.submit(message())
        await bind.close()

    run(body)


def test_backoff_bounds() -> None:
    for failures in range(12):
        delay = backoff(failures, 0.5, 30.0)
        assert 0.5 <= delay <= 30.0
        assert delay >= min(30.0, 0.5 * 2**failures) / 2
    assert backoff(0, 0.5, 30.0) == 0.5


# -- protocol edges, against a raw server ------------------------------------------------


class RawSMSC:
    """Accepts binds and then does what the test says; records what it reads."""

    def __init__(self, after_bind: Callable[[asyncio.StreamWriter], None], answer_enquire: bool = True) -> None:
        self.after_bind, self.answer_enquire = after_bind, answer_enquire
        self.connections = 0
        self.received: list[tuple[int, int, int]] = []  # (command_id, status, sequence)

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readexactly(16)
                length, command_id, status, sequence = struct.unpack(">LLLL", head)
                await reader.readexactly(length - 16)
                self.received.append((command_id, status, sequence))
                if command_id == 0x09:
                    writer.write(pdus.encode("bind_transceiver_resp", sequence, system_id="RAW"))
                    self.after_bind(writer)
                elif command_id == 0x15 and self.answer_enquire:
                    writer.write(pdus.encode("enquire_link_resp", sequence))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def test_missing_enquire_link_resp_reconnects() -> None:
    async def body() -> None:
        async with (raw := RawSMSC(lambda w: None, answer_enquire=False)) as port:
            bind = SmppBind(config(port, enquire_link_interval=0.1, response_timeout=0.2), ignore)
            bind.start()
            assert await bind.wait_bound(2)
            while raw.connections < 2:
                await asyncio.sleep(0.02)
            assert "enquire_link_resp" in (bind.last_error or "")
            await bind.close()

    run(body)


def test_smsc_requests_answered_unknown_nacked_absurd_length_drops() -> None:
    def misbehave(writer: asyncio.StreamWriter) -> None:
        writer.write(pdus.encode("enquire_link", 76))  # the SMSC's own keep-alive
        writer.write(struct.pack(">LLLL", 16, 0x00000111, 0, 77))  # no such command
        broken = pdus.encode("deliver_sm", 78, source_addr="1", short_message=b"x") + b"\x04\x27\x00"
        writer.write(struct.pack(">L", len(broken)) + broken[4:])  # a truncated TLV
        writer.write(struct.pack(">LLLL", 1 << 20, 0x00000004, 0, 79))  # out of step

    async def body() -> None:
        async with (raw := RawSMSC(misbehave)) as port:
            bind = SmppBind(config(port), ignore)
            bind.start()
            assert await bind.wait_bound(2)
            while raw.connections < 2:
                await asyncio.sleep(0.02)
            assert "absurd command_length" in (bind.last_error or "")
            await bind.close()
        assert (0x80000015, 0, 76) in raw.received  # enquire_link_resp
        assert (0x80000000, 0x03, 77) in raw.received  # generic_nack ESME_RINVCMDID
        assert (0x80000000, 0x02, 78) in raw.received  # generic_nack ESME_RINVCMDLEN

    run(body)

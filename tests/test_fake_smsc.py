"""The fake SMSC speaks real SMPP 3.4: checked with smpplib as the client, the same
library Missive uses to encode its PDUs."""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import smpplib.client
import smpplib.exceptions
import smpplib.smpp

from tests.fakes.fake_smsc import FakeSMSC


@pytest.fixture(scope="module")
def running_smsc() -> Iterator[FakeSMSC]:
    with FakeSMSC() as smsc:
        yield smsc


@pytest.fixture
def smsc(running_smsc: FakeSMSC) -> FakeSMSC:
    running_smsc.reset()
    return running_smsc


@contextmanager
def connected(smsc: FakeSMSC, ssl_context: ssl.SSLContext | None = None) -> Iterator[smpplib.client.Client]:
    client = smpplib.client.Client(smsc.host, smsc.port, timeout=5, ssl_context=ssl_context,
                                   allow_unknown_opt_params=True)
    client.connect()
    try:
        yield client
    finally:
        client.disconnect()


def submit(client: smpplib.client.Client, short_message: bytes = b"Hello", **fields: object) -> smpplib.command.Command:
    fields = {"source_addr_ton": 5, "source_addr": "Missive", "dest_addr_ton": 1, "dest_addr_npi": 1,
              "destination_addr": "447700900001", "short_message": short_message, **fields}
    client.send_pdu(smpplib.smpp.make_pdu("submit_sm", client=client, **fields))
    resp = client.read_pdu()
    assert resp.command == "submit_sm_resp"
    return resp


def answer(client: smpplib.client.Client, pdu: smpplib.command.Command, status: int = 0) -> None:
    resp = smpplib.smpp.make_pdu("deliver_sm_resp", client=client, status=status)
    resp.sequence = pdu.sequence
    client.send_pdu(resp)


def test_submit_gets_an_id_and_then_a_receipt(smsc: FakeSMSC) -> None:
    with connected(smsc) as client:
        client.bind_transceiver(system_id="missive", password="pw", system_type="VMA")
        resp = submit(client, b"Hello world", registered_delivery=1)
        assert resp.status == 0
        message_id = resp.message_id.decode()
        assert message_id.isdigit()

        receipt = client.read_pdu()
        assert receipt.command == "deliver_sm"
        assert receipt.esm_class == 0x04
        assert receipt.source_addr == b"447700900001" and receipt.destination_addr == b"Missive"
        text = receipt.short_message.decode()
        assert text.startswith(f"id:{message_id} sub:001 dlvrd:001 submit date:")
        assert text.endswith(" stat:DELIVRD err:000 text:Hello world")
        assert receipt.receipted_message_id == message_id.encode()
        assert receipt.message_state == 2
        answer(client, receipt)

        state = smsc.wait_for(lambda s: s["delivers"] and s["delivers"][0]["status"] == 0)
        assert state["bound"] == 1
        assert state["binds"] == [{"session": state["binds"][0]["session"], "command": "bind_transceiver",
                                   "system_id": "missive", "system_type": "VMA", "ok": True, "status": 0,
                                   "time": state["binds"][0]["time"]}]
        [sub] = state["submits"]
        assert sub["message_id"] == int(message_id)
        assert (sub["source_addr"], sub["source_addr_ton"], sub["destination_addr"], sub["dest_addr_ton"]) == (
            "Missive", 5, "447700900001", 1)
        assert bytes.fromhex(sub["short_message"]) == b"Hello world"
        assert state["delivers"][0]["kind"] == "receipt"
        assert state["delivers"][0]["message_id"] == int(message_id)


def test_message_octets_are_recorded_exactly_as_sent(smsc: FakeSMSC) -> None:
    udh_part = bytes([5, 0, 3, 0x2A, 2, 1]) + "Привет".encode("utf-16-be")
    with connected(smsc) as client:
        client.bind_transmitter(system_id="missive", password="pw")
        submit(client, udh_part, esm_class=0x40, data_coding=8)
        submit(client, b"", message_payload=b"\x00\x1b\x65 unpacked GSM")
        state = smsc.state()
    first, second = state["submits"]
    assert (first["esm_class"], first["data_coding"]) == (0x40, 8)
    assert bytes.fromhex(first["short_message"]) == udh_part
    assert first["message_payload"] is None
    assert second["short_message"] == ""
    assert bytes.fromhex(second["message_payload"]) == b"\x00\x1b\x65 unpacked GSM"
    assert state["delivers"] == []  # no registered_delivery, no receipt


@pytest.mark.parametrize(("settings", "password", "status"), [
    ({"refuse_bind": True}, "pw", 0x0D),
    ({"credentials": {"missive": "secret"}}, "wrong", 0x0E),
])
def test_binds_can_be_refused(smsc: FakeSMSC, settings: dict, password: str, status: int) -> None:
    smsc.configure(**settings)
    with connected(smsc) as client, pytest.raises(smpplib.exceptions.PDUError) as refused:
        client.bind_transceiver(system_id="missive", password=password)
    assert refused.value.args[1] == status
    state = smsc.state()
    assert [(b["system_id"], b["ok"], b["status"]) for b in state["binds"]] == [("missive", False, status)]
    assert state["bound"] == 0


def test_scripted_errors_then_hex_ids(smsc: FakeSMSC) -> None:
    smsc.configure(errors=[{"status": 0x58, "count": 1}, {"status": 0x14, "count": 1}],
                   resp_id_format="hex", next_message_id=0xABC)
    with connected(smsc) as client:
        client.bind_transceiver(system_id="missive", password="pw")
        assert submit(client).status == 0x58
        assert submit(client).status == 0x14
        ok = submit(client)
        assert (ok.status, ok.message_id) == (0, b"ABC")
    assert [(s["status"], s["message_id"]) for s in smsc.submits()] == [(0x58, None), (0x14, None), (0, 0xABC)]


def test_concatenated_mo_with_redelivery(smsc: FakeSMSC) -> None:
    smsc.configure(redeliver_ms=50)
    with connected(smsc) as client, ThreadPoolExecutor(1) as pool:
        client.bind_receiver(system_id="missive", password="pw")
        sent = pool.submit(smsc.deliver, "447700900001", "Missive", "[1€]abcd", parts=2, reverse=True)
        last, first = client.read_pdu(), client.read_pdu()
        answer(client, last, status=0x08)  # refused: it comes again
        answer(client, first)
        again = client.read_pdu()
        answer(client, again)
        assert sent.result(timeout=5) == {"sent": 2, "queued": 0, "statuses": [0x08, 0]}
    assert (first.esm_class, first.data_coding) == (0x40, 0)
    assert first.short_message[:6] == bytes([5, 0, 3, first.short_message[3], 2, 1])
    assert first.short_message[6:] == b"\x1b\x3c1\x1b\x65\x1b\x3e"  # "[1€]" unpacked, with escapes
    assert last.short_message[5] == 2 and last.short_message[6:] == b"abcd"
    assert again.short_message == last.short_message
    statuses = [d["status"] for d in smsc.state()["delivers"]]
    assert statuses == [0x08, 0, 0]


def test_receipts_over_tls_reach_a_later_bind(tmp_path: Path) -> None:
    key_file, cert_file = self_signed(tmp_path)
    context = ssl.create_default_context(cafile=cert_file)
    context.check_hostname = False
    with FakeSMSC(tls=(key_file, cert_file)) as smsc:
        with connected(smsc, context) as client:
            client.bind_transmitter(system_id="missive", password="pw")
            message_id = submit(client, registered_delivery=1).message_id
        smsc.wait_for(lambda s: s["queued"] == 1)  # no receiver bound: kept for later
        with connected(smsc, context) as client:
            client.bind_receiver(system_id="missive", password="pw")
            receipt = client.read_pdu()
            assert receipt.receipted_message_id == message_id


def self_signed(directory: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    key_file, cert_file = directory / "key.pem", directory / "cert.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(key_file), str(cert_file)

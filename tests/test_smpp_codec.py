"""The direct codec of submit_sm, submit_sm_resp and deliver_sm (missive.sms.smpp_pdus)
against smpplib's, which stays the reference: same bytes out, same fields in."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from missive.sms import smpp_pdus as pdus

OCTET = st.integers(0, 255)


def cstring(max_octets: int) -> st.SearchStrategy[str]:
    return st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=max_octets - 1)


SUBMIT_FIELDS = {
    "service_type": cstring(6),
    "source_addr_ton": OCTET,
    "source_addr_npi": OCTET,
    "source_addr": cstring(21),
    "dest_addr_ton": OCTET,
    "dest_addr_npi": OCTET,
    "destination_addr": cstring(21),
    "esm_class": OCTET,
    "protocol_id": OCTET,
    "priority_flag": OCTET,
    "schedule_delivery_time": st.sampled_from(["", "260101120000000+"]),
    "validity_period": st.sampled_from(["", "000001000000000R"]),
    "registered_delivery": OCTET,
    "replace_if_present_flag": OCTET,
    "data_coding": OCTET,
    "sm_default_msg_id": OCTET,
    "short_message": st.binary(max_size=pdus.MAX_SHORT_MESSAGE),
}


@st.composite
def submit_params(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.sets(st.sampled_from(sorted(SUBMIT_FIELDS))))
    return {name: draw(SUBMIT_FIELDS[name]) for name in names}


@settings(max_examples=300, deadline=None)
@given(submit_params(), st.integers(1, 0x7FFFFFFF))
def test_submit_sm_bytes_are_smpplibs(params: dict[str, Any], sequence: int) -> None:
    reference = pdus.encode("submit_sm", sequence, **{**params, "short_message": params.get("short_message") or b""})
    assert pdus.encode_submit(sequence, params) == reference


def test_submit_sm_with_a_tlv_goes_through_smpplib() -> None:
    params = {"destination_addr": "447700900000", "short_message": b"hi", "sar_msg_ref_num": 7}
    assert pdus.encode_submit(3, params) == pdus.encode("submit_sm", 3, **params)


def test_an_address_smpp_cannot_carry_is_refused_not_cut() -> None:
    with pytest.raises(ValueError, match="destination_addr"):
        pdus.encode_submit(1, {"destination_addr": "4" * 21, "short_message": b"x"})


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=64), st.integers(0, 0x7FFFFFFF))
def test_submit_sm_resp_id(message_id: str, sequence: int) -> None:
    data = pdus.encode("submit_sm_resp", sequence, message_id=message_id)
    assert pdus.submit_resp_id(data) == message_id


def test_submit_sm_resp_without_a_body() -> None:
    assert pdus.submit_resp_id(struct.pack(">LLLL", 16, pdus.SUBMIT_SM_RESP, 0x45, 9)) == ""


@given(st.integers(0, 0x7FFFFFFF), st.sampled_from([pdus.ESME_ROK, pdus.ESME_RX_T_APPN]))
def test_deliver_sm_resp_bytes_are_smpplibs(sequence: int, status: int) -> None:
    assert pdus.encode_response(pdus.DELIVER_SM, sequence, status) == pdus.encode("deliver_sm_resp", sequence, status=status)


DELIVER_TLVS = {
    "receipted_message_id": st.text(st.characters(min_codepoint=0x30, max_codepoint=0x7A), min_size=1, max_size=64),
    "message_state": st.integers(0, 8),
    "message_payload": st.binary(min_size=1, max_size=200),
    "sar_msg_ref_num": st.integers(0, 0xFFFF),
    "sar_total_segments": st.integers(1, 255),
    "sar_segment_seqnum": st.integers(1, 255),
    "user_message_reference": st.integers(0, 0xFFFF),  # read by neither side here: skipped
}


@st.composite
def deliver_fields(draw: st.DrawFn) -> dict[str, Any]:
    fields = draw(submit_params())
    fields.pop("schedule_delivery_time", None)  # NULL in a deliver_sm (SMPP 3.4, 4.6.1)
    fields.pop("validity_period", None)
    names = draw(st.sets(st.sampled_from(sorted(DELIVER_TLVS))))
    fields.update({name: draw(DELIVER_TLVS[name]) for name in names})
    if "message_payload" in fields:
        fields["short_message"] = b""  # the text goes in one or the other (smpplib enforces it)
    return fields


def reference_deliver(data: bytes) -> pdus.DeliverSm:
    """What smpplib reads from the same bytes, in our record."""
    pdu = pdus.decode(data)
    text = lambda value: value.rstrip(b"\0").decode("latin-1") if isinstance(value, bytes) else (value or "")  # noqa: E731
    return pdus.DeliverSm(
        source_addr=text(pdu.source_addr),
        destination_addr=text(pdu.destination_addr),
        esm_class=pdu.esm_class or 0,
        data_coding=pdu.data_coding or 0,
        short_message=bytes(pdu.short_message or b""),
        receipted_message_id=text(pdu.receipted_message_id) if pdu.receipted_message_id is not None else None,
        message_state=pdu.message_state,
        message_payload=bytes(pdu.message_payload) if pdu.message_payload is not None else None,
        sequence_number=pdu.sequence,
        session="bind-1",
        sar_msg_ref_num=pdu.sar_msg_ref_num,
        sar_total_segments=pdu.sar_total_segments,
        sar_segment_seqnum=pdu.sar_segment_seqnum,
    )


@settings(max_examples=300, deadline=None)
@given(deliver_fields(), st.integers(1, 0x7FFFFFFF))
def test_deliver_sm_fields_are_smpplibs(fields: dict[str, Any], sequence: int) -> None:
    data = pdus.encode("deliver_sm", sequence, **{**fields, "short_message": fields.get("short_message") or b""})
    assert pdus.decode_deliver_sm(data, "bind-1") == reference_deliver(data)


def test_a_receipt_id_tlv_without_its_nul_keeps_its_last_character() -> None:
    body = pdus.encode("deliver_sm", 5, source_addr="447700900000", esm_class=4, short_message=b"id:1 stat:DELIVRD")
    tlv = struct.pack(">HH", 0x001E, 4) + b"ABCD"  # some SMSCs leave the NUL out
    data = struct.pack(">L", len(body) + len(tlv)) + body[4:] + tlv
    assert pdus.decode_deliver_sm(data, "b").receipted_message_id == "ABCD"


@pytest.mark.parametrize("cut", [17, 20, 40, 60])
def test_a_cut_deliver_sm_does_not_decode(cut: int) -> None:
    data = pdus.encode("deliver_sm", 5, source_addr="447700900000", destination_addr="447700900001",
                       short_message=b"hello there", receipted_message_id="X1")
    with pytest.raises((ValueError, IndexError)):
        pdus.decode_deliver_sm(data[:cut], "b")

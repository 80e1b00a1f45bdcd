"""SMPP 3.4 PDUs in and out of bytes, and what their statuses mean, for `smpp_session`.

smpplib is the codec: its command classes know every field and TLV of the PDUs we use.
Three of its habits are worked around here rather than in the session:

* A PDU takes its sequence number from a `client` object (its `sequence` attribute, or
  `next_sequence()` for requests), and ignores a `sequence=` argument whenever that
  client has one. We hand it a `_Fixed` client carrying the number the session chose.
* Its TLV parser raises on a tag it does not know, or one it knows but not for this
  command, and drops the last byte of a C-string TLV sent without its NUL (some SMSCs
  do that with receipted_message_id). An SMSC's vendor TLVs must not make a receipt
  undecodable, so `_parse_tlvs` replaces it per PDU, still using smpplib's tables.
* It writes octet strings as given: short_message goes out as the caller's bytes (UDH
  and payload already encoded, data_coding and esm_class set by the caller).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from smpplib import command, command_codes, consts, smpp
from smpplib.ptypes import ostr

HEADER = struct.Struct(">LLLL")
HEADER_SIZE = 16
# Larger than any PDU an SMSC sends (a message_payload is at most 64 KiB): a length
# outside these bounds means the stream is out of step, and the connection is dropped.
MAX_PDU = 64 * 1024

ESME_ROK = consts.SMPP_ESME_ROK
ESME_RINVCMDLEN = consts.SMPP_ESME_RINVCMDLEN
ESME_RINVCMDID = consts.SMPP_ESME_RINVCMDID
ESME_RINVBNDSTS = consts.SMPP_ESME_RINVBNDSTS
ESME_RSYSERR = consts.SMPP_ESME_RSYSERR
ESME_RMSGQFUL = consts.SMPP_ESME_RMSGQFUL
ESME_RTHROTTLED = consts.SMPP_ESME_RTHROTTLED
ESME_RX_T_APPN = consts.SMPP_ESME_RX_T_APPN
ESME_RUNKNOWNERR = consts.SMPP_ESME_RUNKNOWNERR

RESPONSE_BIT = 0x80000000
GENERIC_NACK = command_codes.get_command_code("generic_nack")

_STATUS_NAMES = {
    value: name.removeprefix("SMPP_")
    for name, value in vars(consts).items()
    if name.startswith("SMPP_ESME_") and isinstance(value, int)
}
_TLV_NAMES = {code: name for name, code in consts.OPTIONAL_PARAMS.items()}
SUBMIT_FIELDS = frozenset(command.SubmitSM.params) - {"sm_length"}
MAX_SHORT_MESSAGE = 254

# Temporary by SMPP 3.4 (5.1.3), as Kannel and most SMSC documentation read them:
# throttling and a full queue clear with time; a system error is the SMSC's own trouble,
# not the message's; ESME_RX_T_APPN is the temporary application error; "incorrect bind
# status" means the SMSC lost our bind, so the session is also rebound. Every other
# status (bad address, bad data_coding, submit failed, unknown) rejects the message.
RETRYABLE = frozenset({ESME_RTHROTTLED, ESME_RMSGQFUL, ESME_RSYSERR, ESME_RX_T_APPN, ESME_RINVBNDSTS})


def status_name(status: int) -> str:
    """"ESME_RTHROTTLED" for 0x58; vendor-specific statuses (0x400-0x4FF) by number."""
    return _STATUS_NAMES.get(status, f"0x{status:08X}")


class SmppError(Exception):
    """The SMSC answered a submit_sm with a non-zero command_status."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.name = status_name(status)
        self.retryable = status in RETRYABLE
        super().__init__(f"{self.name} (0x{status:02X})")


class BindRefused(Exception):
    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(f"bind refused: {status_name(status)} (0x{status:02X})")


class Sequence:
    """Sequence numbers of one bind: 1..0x7FFFFFFF, wrapping (SMPP 3.4, 5.1.4)."""

    MAX = 0x7FFFFFFF

    def __init__(self) -> None:
        self.sequence = 0

    def next_sequence(self) -> int:
        self.sequence = self.sequence % self.MAX + 1
        return self.sequence


class _Fixed:
    """The `client` smpplib asks for a sequence number: answers with the one we chose."""

    def __init__(self, sequence: int) -> None:
        self.sequence = sequence

    def next_sequence(self) -> int:
        return self.sequence


def header(data: bytes) -> tuple[int, int, int, int]:
    """(command_length, command_id, command_status, sequence_number) of a PDU."""
    length, command_id, status, sequence = HEADER.unpack_from(data)
    return length, command_id, status, sequence


def encode(name: str, sequence: int, status: int = ESME_ROK, **fields: Any) -> bytes:
    pdu = smpp.make_pdu(name, client=_Fixed(sequence), status=status, **fields)
    return bytes(pdu.generate())


def encode_submit(sequence: int, params: dict[str, Any]) -> bytes:
    """A submit_sm from the caller's fields; a field smpplib does not know is an error."""
    unknown = set(params) - SUBMIT_FIELDS
    if unknown:
        raise ValueError(f"unknown submit_sm fields: {sorted(unknown)}")
    short_message = params.get("short_message") or b""
    if not isinstance(short_message, bytes | bytearray):
        raise TypeError("short_message must be bytes, already encoded")
    if len(short_message) > MAX_SHORT_MESSAGE:
        raise ValueError(f"short_message is {len(short_message)} octets, at most {MAX_SHORT_MESSAGE}")
    return encode("submit_sm", sequence, **{**params, "short_message": bytes(short_message)})


def resequence(data: bytes, sequence: int) -> bytes:
    """The same PDU under another sequence number (encoded before a number was due)."""
    return data[:12] + sequence.to_bytes(4, "big") + data[16:]


def decode(data: bytes) -> Any:
    """The smpplib command object of a whole PDU (header included).

    Raises smpplib's UnknownCommandError for a command it has no class for, and other
    exceptions (struct.error, ValueError, ...) for a body that does not decode.
    """
    _, command_id, _, sequence = header(data)
    pdu = smpp.make_pdu(command_codes.get_command_name(command_id), client=_Fixed(sequence))
    # An instance attribute shadows the method: smpplib's parse_params calls this one.
    pdu.parse_optional_params = lambda tlvs: _parse_tlvs(pdu, tlvs)
    pdu.parse(data)
    if getattr(pdu, "short_message", None) is not None and len(pdu.short_message) != pdu.sm_length:
        raise ValueError(f"sm_length {pdu.sm_length} but {len(pdu.short_message)} octets follow")
    return pdu


def _parse_tlvs(pdu: Any, data: bytes) -> None:
    pos = 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise ValueError("truncated TLV header")
        tag, length = struct.unpack_from(">HH", data, pos)
        value = data[pos + 4 : pos + 4 + length]
        pos += 4 + length
        if len(value) != length:
            raise ValueError(f"truncated TLV 0x{tag:04X}")
        name = _TLV_NAMES.get(tag)
        param = pdu.params.get(name) if name else None
        if param is None:
            continue  # a vendor TLV, or one not defined for this command: not ours to read
        if param.type is int:
            setattr(pdu, name, int.from_bytes(value, "big"))
        elif param.type is str:
            setattr(pdu, name, value.rstrip(b"\0"))
        elif param.type is ostr:
            setattr(pdu, name, value)


def text(value: bytes | str | None) -> str:
    """A C-octet string field as str (addresses and ids are ASCII; latin-1 never fails)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return value.rstrip(b"\0").decode("latin-1")


@dataclass(frozen=True)
class DeliverSm:
    """What the SMSC pushed: a delivery receipt or a mobile-originated message."""

    source_addr: str
    destination_addr: str
    esm_class: int
    data_coding: int
    short_message: bytes
    receipted_message_id: str | None
    message_state: int | None
    message_payload: bytes | None
    sequence_number: int
    session: str  # the name of the bind it came in on
    sar_msg_ref_num: int | None = None
    sar_total_segments: int | None = None
    sar_segment_seqnum: int | None = None


def to_deliver_sm(pdu: Any, session: str) -> DeliverSm:
    receipted = pdu.receipted_message_id
    return DeliverSm(
        source_addr=text(pdu.source_addr),
        destination_addr=text(pdu.destination_addr),
        esm_class=pdu.esm_class or 0,
        data_coding=pdu.data_coding or 0,
        short_message=bytes(pdu.short_message or b""),
        receipted_message_id=text(receipted) if receipted is not None else None,
        message_state=pdu.message_state,
        message_payload=bytes(pdu.message_payload) if pdu.message_payload is not None else None,
        sequence_number=pdu.sequence,
        session=session,
        sar_msg_ref_num=pdu.sar_msg_ref_num,
        sar_total_segments=pdu.sar_total_segments,
        sar_segment_seqnum=pdu.sar_segment_seqnum,
    )

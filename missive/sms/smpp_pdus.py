"""SMPP 3.4 PDUs in and out of bytes, and what their statuses mean, for `smpp_session`.

smpplib is the codec: its command classes know every field and TLV of the PDUs we use.
The three PDUs of every message (submit_sm out, submit_sm_resp and the deliver_sm of its
receipt in) have a direct codec here as well: smpplib builds a command object with some
forty attributes per PDU, which took an eighth of the CPU of the SMPP benchmark for
layouts of fixed order (SMPP 3.4, 4.4.1 and 4.6.1). Tests hold the two codecs to the same
bytes and fields (tests/test_smpp_codec.py). Three habits of smpplib are worked around
here rather than in the session:

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
from collections.abc import Iterator
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
SUBMIT_SM = command_codes.get_command_code("submit_sm")
SUBMIT_SM_RESP = command_codes.get_command_code("submit_sm_resp")
DELIVER_SM = command_codes.get_command_code("deliver_sm")

# The mandatory fields of submit_sm and deliver_sm up to sm_length, in order: 0 for an
# integer of one octet, n for a C-octet string of at most n octets with its NUL.
_MESSAGE_FIELDS = (
    ("service_type", 6), ("source_addr_ton", 0), ("source_addr_npi", 0), ("source_addr", 21),
    ("dest_addr_ton", 0), ("dest_addr_npi", 0), ("destination_addr", 21), ("esm_class", 0),
    ("protocol_id", 0), ("priority_flag", 0), ("schedule_delivery_time", 17), ("validity_period", 17),
    ("registered_delivery", 0), ("replace_if_present_flag", 0), ("data_coding", 0), ("sm_default_msg_id", 0),
)
_DIRECT_SUBMIT_FIELDS = frozenset(name for name, _ in _MESSAGE_FIELDS) | {"short_message"}
# The deliver_sm TLVs we read: tag -> (name, kind): "int", "cstr" (NUL dropped) or "octets".
_DELIVER_TLVS = {
    0x001E: ("receipted_message_id", "cstr"),
    0x0427: ("message_state", "int"),
    0x0424: ("message_payload", "octets"),
    0x020C: ("sar_msg_ref_num", "int"),
    0x020E: ("sar_total_segments", "int"),
    0x020F: ("sar_segment_seqnum", "int"),
}

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
    return header_at(data, 0)


def header_at(data: bytes, offset: int) -> tuple[int, int, int, int]:
    """`header` of the PDU starting at `offset` of `data`."""
    length, command_id, status, sequence = HEADER.unpack_from(data, offset)
    return length, command_id, status, sequence


def encode(name: str, sequence: int, status: int = ESME_ROK, **fields: Any) -> bytes:
    pdu = smpp.make_pdu(name, client=_Fixed(sequence), status=status, **fields)
    return bytes(pdu.generate())


def relative_time(seconds: int) -> str:
    """A relative time of SMPP 3.4 (7.1.1.2): "YYMMDDhhmmss000R", here in days, hours,
    minutes and seconds (a month or year is no fixed length); at most 99 days."""
    if not 0 < seconds < 100 * 86400:
        raise ValueError(f"a relative time of {seconds} s")
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"0000{days:02d}{hours:02d}{minutes:02d}{secs:02d}000R"


def _vendor_tlvs(tlvs: Any) -> bytes:
    """(tag, value) pairs as TLVs, written after whatever else the submit_sm carries."""
    out = bytearray()
    for tag, value in tlvs:
        if not 0 < tag <= 0xFFFF or len(value) > 0xFFFF:
            raise ValueError(f"TLV 0x{tag:04X} of {len(value)} octets")
        out += struct.pack(">HH", tag, len(value)) + value
    return bytes(out)


def encode_submit(sequence: int, params: dict[str, Any]) -> bytes:
    """A submit_sm from the caller's fields; a field smpplib does not know is an error.
    `vendor_tlvs` ((tag, octets) pairs) are TLVs smpplib has no name for, such as an
    SMSC's own (SMPP 3.4 5.3.2: 0x1400-0x3FFF are the SMSC vendors')."""
    if "vendor_tlvs" in params:
        rest = {k: v for k, v in params.items() if k != "vendor_tlvs"}
        data = encode_submit(sequence, rest) + _vendor_tlvs(params["vendor_tlvs"])
        return HEADER.pack(len(data), SUBMIT_SM, ESME_ROK, sequence) + data[HEADER_SIZE:]
    unknown = set(params) - SUBMIT_FIELDS
    if unknown:
        raise ValueError(f"unknown submit_sm fields: {sorted(unknown)}")
    short_message = params.get("short_message") or b""
    if not isinstance(short_message, bytes | bytearray):
        raise TypeError("short_message must be bytes, already encoded")
    if len(short_message) > MAX_SHORT_MESSAGE:
        raise ValueError(f"short_message is {len(short_message)} octets, at most {MAX_SHORT_MESSAGE}")
    if not params.keys() <= _DIRECT_SUBMIT_FIELDS:  # TLVs: smpplib knows them all
        return encode("submit_sm", sequence, **{**params, "short_message": bytes(short_message)})
    body = bytearray()
    for name, size in _MESSAGE_FIELDS:
        value = params.get(name)
        if not size:
            body.append(value or 0)  # ValueError past 255
            continue
        raw = value.encode("latin-1") if isinstance(value, str) else bytes(value or b"")
        if len(raw) >= size:
            raise ValueError(f"{name} is {len(raw)} octets, at most {size - 1}")
        body += raw
        body.append(0)
    body.append(len(short_message))
    body += short_message
    return HEADER.pack(HEADER_SIZE + len(body), SUBMIT_SM, ESME_ROK, sequence) + body


def encode_response(command_id: int, sequence: int, status: int = ESME_ROK) -> bytes:
    """The response to a request whose response carries an empty message_id (deliver_sm_resp,
    SMPP 3.4 4.6.2: its message_id is unused and set to NULL)."""
    return HEADER.pack(HEADER_SIZE + 1, command_id | RESPONSE_BIT, status, sequence) + b"\0"


def submit_resp_id(data: bytes) -> str:
    """The message_id of a whole submit_sm_resp ("" when the SMSC sent no body)."""
    end = data.find(b"\0", HEADER_SIZE)
    return data[HEADER_SIZE : end if end >= 0 else len(data)].decode("latin-1")


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


def _tlvs(data: bytes, pos: int = 0) -> Iterator[tuple[int, bytes]]:
    """(tag, value) of each TLV from `pos` to the end; ValueError when one is cut short."""
    while pos < len(data):
        if pos + 4 > len(data):
            raise ValueError("truncated TLV header")
        tag, length = struct.unpack_from(">HH", data, pos)
        value = data[pos + 4 : pos + 4 + length]
        pos += 4 + length
        if len(value) != length:
            raise ValueError(f"truncated TLV 0x{tag:04X}")
        yield tag, value


def _parse_tlvs(pdu: Any, data: bytes) -> None:
    for tag, value in _tlvs(data):
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


def decode_deliver_sm(data: bytes, session: str) -> DeliverSm:
    """A whole deliver_sm PDU; ValueError (or IndexError) when its body does not decode.
    TLVs other than those of `_DELIVER_TLVS` are skipped, as `_parse_tlvs` does."""
    fields: dict[str, Any] = {}
    pos = HEADER_SIZE
    for name, size in _MESSAGE_FIELDS:
        if not size:
            fields[name] = data[pos]
            pos += 1
            continue
        end = data.find(b"\0", pos, pos + size)
        if end < 0:
            raise ValueError(f"{name}: no NUL within {size} octets")
        fields[name] = data[pos:end].decode("latin-1")
        pos = end + 1
    sm_length = data[pos]
    short_message = data[pos + 1 : pos + 1 + sm_length]
    if len(short_message) != sm_length:
        raise ValueError(f"sm_length {sm_length} but {len(short_message)} octets follow")
    pos += 1 + sm_length
    tlvs: dict[str, Any] = {}
    for tag, value in _tlvs(data, pos):
        known = _DELIVER_TLVS.get(tag)
        if known is None:
            continue
        name, kind = known
        tlvs[name] = int.from_bytes(value, "big") if kind == "int" else value.rstrip(b"\0") if kind == "cstr" else value
    receipted = tlvs.get("receipted_message_id")
    return DeliverSm(
        source_addr=fields["source_addr"],
        destination_addr=fields["destination_addr"],
        esm_class=fields["esm_class"],
        data_coding=fields["data_coding"],
        short_message=bytes(short_message),
        receipted_message_id=receipted.decode("latin-1") if receipted is not None else None,
        message_state=tlvs.get("message_state"),
        message_payload=tlvs.get("message_payload"),
        sequence_number=HEADER.unpack_from(data)[3],
        session=session,
        sar_msg_ref_num=tlvs.get("sar_msg_ref_num"),
        sar_total_segments=tlvs.get("sar_total_segments"),
        sar_segment_seqnum=tlvs.get("sar_segment_seqnum"),
    )

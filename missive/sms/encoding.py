"""SMS text to SMPP short_message bytes and back: GSM 03.38 / UCS-2, UDH concatenation.

Outbound, `encode_sms` turns a text into the short_message of each part it is sent as,
with the data_coding and esm_class to send them with. Inbound, `split_udh` takes the
concatenation header off a deliver_sm, and `decode_payload` / `join_parts` turn the
payloads back into text.

Hand-written because no maintained Python library does GSM 03.38 with the extension
table + segmentation that never splits an escape or surrogate pair. Where a text is cut
is decided by `gsm.split_units` alone, so `count_parts` (what the dispatcher charges a
link) is always the number of parts sent.

GSM goes out unpacked, one septet per octet (the SMSC packs it), as SMPP 3.4 expects for
data_coding 0; UCS-2 goes out as UTF-16-BE, a character beyond the BMP as its surrogate
pair. Decoding never raises: an inbound message is whatever bytes the SMSC sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from missive.sms.gsm import (
    ESCAPE,
    GSM_BASIC,
    GSM_EXTENDED,
    GSM_SEPTETS,
    choose_encoding,
    split_units,
)

# SMPP 3.4 data_coding values (5.2.19).
DC_GSM, DC_ASCII, DC_LATIN1, DC_UCS2 = 0, 1, 3, 8
# esm_class bit 6: the short_message starts with a User Data Header (GSM 03.40 UDHI).
ESM_UDHI = 0x40

# Information Element Identifiers of GSM 03.40 9.2.3.24: concatenated short messages with
# an 8-bit reference (3 octets of data) and with a 16-bit reference (4 octets).
IEI_CONCAT_8, IEI_CONCAT_16 = 0x00, 0x08
MAX_PARTS = 255  # the total is one octet

_EXTENDED_BY_CODE = {code: ch for ch, code in GSM_EXTENDED.items()}


@dataclass(frozen=True)
class EncodedSms:
    data_coding: int  # DC_GSM (default alphabet, unpacked) or DC_UCS2
    esm_class: int  # ESM_UDHI when multipart, else 0
    parts: tuple[bytes, ...]  # each the full short_message: UDH + payload


@dataclass(frozen=True)
class Concat:
    """Which part of which concatenated message a short_message is."""

    ref: int
    total: int
    seq: int  # 1-based


def encode_sms(text: str, encoding_type: str | None = "auto", ref: int = 0) -> EncodedSms:
    """The text as the short_messages to send: one when it fits 160 septets / 70 UTF-16
    units, else parts of at most 153 / 67, each behind the UDH `05 00 03 ref total seq`.

    `encoding_type` is the Messages API's `sms.encoding_type`: `unicode` forces UCS-2;
    `text` and `auto` (or None) take GSM when every character is in it, UCS-2 otherwise.
    Raises ValueError past 255 parts, the most a one-octet total can number.
    """
    encoding = choose_encoding(text, encoding_type)
    pieces = split_units(text, encoding)
    if encoding == "gsm":
        data_coding = DC_GSM
        payloads = [b"".join(GSM_SEPTETS[ch] for ch in piece) for piece in pieces]
    else:
        # split_units has paired or replaced any surrogate code points: strict is safe.
        data_coding = DC_UCS2
        payloads = [piece.encode("utf-16-be") for piece in pieces]
    total = len(payloads)
    if total == 1:
        return EncodedSms(data_coding, 0, (payloads[0],))
    if total > MAX_PARTS:
        raise ValueError(f"text needs {total} parts, at most {MAX_PARTS} can be concatenated")
    parts = tuple(
        bytes([5, IEI_CONCAT_8, 3, ref & 0xFF, total, seq]) + payload
        for seq, payload in enumerate(payloads, start=1)
    )
    return EncodedSms(data_coding, ESM_UDHI, parts)


def split_udh(short_message: bytes, esm_class: int) -> tuple[Concat | None, bytes]:
    """The concatenation header of a short_message, if any, and the payload after its UDH.

    Without UDHI in `esm_class` the whole short_message is payload. Information elements
    other than concatenation are skipped; a concatenation element with a total of 0 or a
    sequence number outside 1..total is ignored, as GSM 03.40 says, and when one appears
    twice the last wins. A UDH longer than the data is not a UDH: (None, short_message).
    """
    if not esm_class & ESM_UDHI or not short_message:
        return None, short_message
    end = 1 + short_message[0]
    if end > len(short_message):
        return None, short_message
    concat: Concat | None = None
    pos = 1
    while pos + 2 <= end:
        iei, length = short_message[pos], short_message[pos + 1]
        data = short_message[pos + 2 : pos + 2 + length]
        pos += 2 + length
        if pos > end:
            break  # an element running past the header: ignore it
        if iei == IEI_CONCAT_8 and length == 3:
            found = Concat(data[0], data[1], data[2])
        elif iei == IEI_CONCAT_16 and length == 4:
            found = Concat(int.from_bytes(data[:2], "big"), data[2], data[3])
        else:
            continue
        if found.total and 1 <= found.seq <= found.total:
            concat = found
    return concat, short_message[end:]


def _decode_gsm(data: bytes) -> str:
    """Unpacked GSM 03.38: escape + extension code is that character, an unknown code
    is "?", a trailing escape is dropped; the top bit of each octet is ignored."""
    out: list[str] = []
    septets = [octet & 0x7F for octet in data]
    index = 0
    while index < len(septets):
        septet = septets[index]
        index += 1
        if septet != ESCAPE:
            out.append(GSM_BASIC[septet])
        elif index < len(septets):
            out.append(_EXTENDED_BY_CODE.get(septets[index], "?"))
            index += 1
    return "".join(out)


def decode_payload(data: bytes, data_coding: int) -> str:
    """The text of a short_message payload (UDH already removed). Never raises.

    0 GSM unpacked, 1 ASCII, 3 Latin-1, 8 UTF-16-BE (an odd last octet dropped, lone
    surrogates as U+FFFD); 0xF0-0xFF (message class) GSM unless bit 2 says 8-bit data;
    anything else Latin-1, which maps every octet to some character.
    """
    if data_coding == DC_GSM or ((data_coding & 0xF0) == 0xF0 and not data_coding & 0x04):
        return _decode_gsm(data)
    if data_coding == DC_ASCII:
        return data.decode("ascii", "replace")
    if data_coding == DC_UCS2:
        return data[: len(data) & ~1].decode("utf-16-be", "replace")
    return data.decode("latin-1")


def join_parts(payloads_in_seq_order: list[bytes], data_coding: int) -> str:
    """The text of a reassembled message. The payloads are joined before decoding, since
    a sender may cut a surrogate pair or an escape sequence across two parts."""
    return decode_payload(b"".join(payloads_in_seq_order), data_coding)

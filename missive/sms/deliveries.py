"""What an SMSC's deliver_sm means: a delivery receipt, an inbound SMS, or one part of a
multipart inbound SMS.

Receipts carry the SMSC message id in the `receipted_message_id` TLV or in the text
(`id:... sub:... dlvrd:... submit date:... done date:... stat:DELIVRD err:000 text:...`,
the de-facto format of SMPP 3.4 appendix B). Some SMSCs write that id in hex where
submit_sm_resp gave it in decimal (or the reverse): the link's `receipt_ids` says so.
"""

from __future__ import annotations

import re

from missive.channels.base import InboundEvent, InboundPart, Receipt
from missive.sms.encoding import decode_payload, split_udh

RECEIPT_CLASS = 0x04  # esm_class bits 2-5: SMSC delivery receipt
INTERMEDIATE_CLASS = 0x20  # intermediate delivery notification
_TYPE_MASK = 0x3C

# message_state TLV values (SMPP 3.4 5.2.28) to the stat words of the text format.
STATES = {1: "ENROUTE", 2: "DELIVRD", 3: "EXPIRED", 4: "DELETED", 5: "UNDELIV", 6: "ACCEPTD", 7: "UNKNOWN", 8: "REJECTD"}
# Final failures and the error codes of the Messages API they map to.
FAILURES = {
    "UNDELIV": (1260, "Destination unreachable"),
    "EXPIRED": (1180, "Absent Subscriber Temporary"),
    "REJECTD": (1280, "Number Blocked by Carrier"),
    "DELETED": (1330, "Unknown"),
}

_FIELD = re.compile(r"(?i)\b(id|stat|err):\s*(\S+)")


def id_forms(smsc_id: str, receipt_ids: str = "as_submitted") -> tuple[str, ...]:
    """The ways the id of a submit may be written, as a receipt gives it: the link says
    whether its SMSC writes receipt ids as submit_sm_resp gave them, or in hex for decimal
    submit ids ("hex"), or in decimal for hex ones ("decimal"). Guessing is not safe: "229"
    is the decimal id 229 and also hex for 553, and both exist on a busy link."""
    raw = smsc_id.strip()
    if receipt_ids == "hex" and re.fullmatch(r"[0-9A-Fa-f]{1,32}", raw):
        raw = str(int(raw, 16))
    elif receipt_ids == "decimal" and raw.isdigit():
        raw = format(int(raw), "X")
    return tuple(dict.fromkeys([raw, raw.lstrip("0") or "0", raw.upper(), raw.lower()]))


def scoped_ref(link_id: str, smsc_id: str) -> str:
    """How an SMSC id is stored: scoped by its link, since two SMSCs may both issue "17"."""
    return f"{link_id}:{smsc_id}"


def ref_forms(ref: str, receipt_ids: str = "as_submitted") -> tuple[str, ...]:
    """A link-scoped reference in the forms a stored submit id may take, the first being
    the one a receipt is kept under until its message is recorded."""
    link_id, _, smsc_id = ref.rpartition(":")
    return tuple(scoped_ref(link_id, form) for form in id_forms(smsc_id, receipt_ids))


def smsc_id_of(ref: str) -> str:
    return ref.rpartition(":")[2]


def is_receipt(esm_class: int, receipted_message_id: str | None) -> bool:
    return (esm_class & _TYPE_MASK) in (RECEIPT_CLASS, INTERMEDIATE_CLASS) or bool(receipted_message_id)


def parse_receipt(
    short_message: bytes, receipted_message_id: str | None, message_state: int | None, link_id: str,
    receipt_ids: str = "as_submitted",
) -> Receipt | None:
    """The receipt, or None when it is not final (ENROUTE, ACCEPTD...) or names no id."""
    stat = STATES.get(message_state or 0)
    # Both TLVs given, the text is read only for the error of a failure.
    fields = {} if receipted_message_id and stat else _fields(short_message)
    smsc_id = receipted_message_id or fields.get("id")
    stat = stat or fields.get("stat", "").upper()
    if not smsc_id:
        return None
    refs = ref_forms(scoped_ref(link_id, smsc_id), receipt_ids)
    if stat == "DELIVRD":
        return Receipt(refs, "delivered")
    if stat in FAILURES:
        code, reason = FAILURES[stat]
        err = (fields or _fields(short_message)).get("err")
        return Receipt(refs, "undeliverable", code, f"{reason} (SMSC stat {stat}" + (f", err {err})" if err else ")"))
    return None


def _fields(short_message: bytes) -> dict[str, str]:
    return {k.lower(): v for k, v in _FIELD.findall(short_message.decode("latin-1"))}


def parse_inbound(
    to: str, sender: str, esm_class: int, data_coding: int, short_message: bytes, message_payload: bytes | None,
    sar: tuple[int | None, int | None, int | None] = (None, None, None),
) -> InboundEvent | InboundPart:
    """An inbound SMS, or one part of one (UDH concatenation or the sar_* TLVs)."""
    concat, payload = split_udh(message_payload or short_message, esm_class)
    ref, total, seq = sar
    if concat is None and ref is not None and total and seq:
        concat_ref, parts, number = ref, total, seq
    elif concat is not None:
        concat_ref, parts, number = concat.ref, concat.total, concat.seq
    else:
        return text_event(to, sender, decode_payload(payload, data_coding), 1)
    if parts <= 1:
        return text_event(to, sender, decode_payload(payload, data_coding), 1)
    return InboundPart(to, sender, concat_ref, parts, number, data_coding, payload)


def text_event(to: str, sender: str, text: str, parts: int) -> InboundEvent:
    """The inbound webhook's SMS content: text, and `sms.num_messages` (a string, as the
    Messages API writes it) with the first word upper-cased as `keyword`."""
    words = text.split()
    sms = {"num_messages": str(parts)}
    if words:
        sms["keyword"] = words[0].upper()
    return InboundEvent(channel="sms", to=to, sender=sender, message_type="text", payload={"text": text, "sms": sms})

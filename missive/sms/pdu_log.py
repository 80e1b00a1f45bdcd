"""SMPP PDUs in readable form for the provider log (observability/exchanges.py):

    submit_sm Acme -> 447700900201 part 1/3: "Hello {world} [SMPP] ~ ..."
    submit_sm_resp message_id=1f2e
    deliver_sm receipt from 447700900201: id:1f2e sub:001 dlvrd:001 ... stat:DELIVRD err:000

Bind PDUs, which carry the link's password, are never logged: they belong to no message.
"""

from __future__ import annotations

import time
from typing import Any

from missive.channels.base import Receipt
from missive.observability.exchanges import Exchange
from missive.sms.encoding import decode_payload, split_udh
from missive.sms.smpp_pdus import DeliverSm

TEXT_SHOWN = 60
# The GSM 03.38 octets that are the same character in ASCII: a text of only these is
# decoded at C speed (decoding GSM in Python was most of the cost of logging an SMS).
_GSM_AS_ASCII = b"\n\r" + bytes([*range(0x20, 0x24), *range(0x25, 0x40), *range(0x41, 0x5B), *range(0x61, 0x7B)])


def _decoded(payload: bytes, data_coding: int) -> str:
    if data_coding == 0 and not payload.translate(None, _GSM_AS_ASCII):
        return payload.decode("ascii")
    return decode_payload(payload, data_coding)


def _text(short_message: bytes, esm_class: int, data_coding: int) -> tuple[str, dict[str, int] | None]:
    concat, payload = split_udh(short_message, esm_class)
    part = {"ref": concat.ref, "seq": concat.seq, "total": concat.total} if concat else None
    return _decoded(payload, data_coding), part


def _quoted(text: str) -> str:
    text = " ".join(text.split())
    return '"' + (text if len(text) <= TEXT_SHOWN else text[:TEXT_SHOWN] + "...") + '"'


def submit_sm(params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The summary and detail of a submit_sm of these parameters (smpp_pdus.encode_submit's)."""
    short_message: bytes = params.get("short_message", b"")
    text, part = _text(short_message, params.get("esm_class", 0), params.get("data_coding", 0))
    detail: dict[str, Any] = {
        key: value for key, value in params.items() if key not in ("short_message", "vendor_tlvs")
    }
    detail["short_message"] = short_message.hex()
    detail["text"] = text
    if part:
        detail["concatenation"] = part
    if params.get("vendor_tlvs"):
        detail["vendor_tlvs"] = {f"0x{tag:04x}": value.hex() for tag, value in params["vendor_tlvs"]}
    where = f" part {part['seq']}/{part['total']}" if part else ""
    summary = f"submit_sm {params.get('source_addr', '')} -> {params.get('destination_addr', '')}{where}: {_quoted(text)}"
    return summary, detail


def submit_sm_resp(message_id: str) -> tuple[str, dict[str, Any]]:
    return f"submit_sm_resp message_id={message_id}", {"command_status": "ESME_ROK", "message_id": message_id}


def submit_failed(reason: str) -> tuple[str, dict[str, Any]]:
    """What came back instead of a submit_sm_resp with ESME_ROK (an error status, or
    nothing: the session dropped or the answer did not come in time)."""
    if reason.startswith("SMSC") or "(SMSC " in reason:
        return f"submit_sm_resp error: {reason}", {"error": reason}
    return f"no submit_sm_resp: {reason}", {"error": reason}


def deliver_sm(pdu: DeliverSm, kind: str) -> Exchange:
    if kind == "receipt":
        # A receipt's text is ASCII (SMPP 3.4, appendix B), whatever data_coding says.
        text, part = pdu.short_message.decode("latin-1"), None
    else:
        text, part = _text(pdu.message_payload or pdu.short_message, pdu.esm_class, pdu.data_coding)
    detail: dict[str, Any] = {
        "sequence_number": pdu.sequence_number, "session": pdu.session, "source_addr": pdu.source_addr,
        "destination_addr": pdu.destination_addr, "esm_class": pdu.esm_class, "data_coding": pdu.data_coding,
        "short_message": pdu.short_message.hex(), "text": text,
    }
    if pdu.receipted_message_id is not None:
        detail["receipted_message_id"] = pdu.receipted_message_id
    if pdu.message_state is not None:
        detail["message_state"] = pdu.message_state
    if part:
        detail["concatenation"] = part
    summary = f"deliver_sm {kind} from {pdu.source_addr}: {' '.join(text.split())[:200]}"
    return Exchange("in", "smpp", summary, detail, time.time())


def with_pdu(receipt: Receipt, pdu: DeliverSm) -> Receipt:
    """The receipt, carrying its deliver_sm for the log of the message it names."""
    return Receipt(receipt.refs, receipt.status, receipt.error_code, receipt.error_reason, deliver_sm(pdu, "receipt"))

"""The bodies of the webhooks Missive sends, in the v1 and the beta (v0.1) shapes.

    v1:   {"message_uuid": "...", "to": "447700900000", "from": "Acme", "channel": "sms",
           "timestamp": "2026-01-01T14:00:00.000Z", "status": "rejected",
           "error": {"type": "https://developer.vonage.com/api-errors/messages#1170",
                     "title": "1170", "detail": "Invalid or missing MSISDN ...",
                     "instance": "0b9e..."},
           "sms": {"count_total": "2"}, "usage": {"currency": "EUR", "price": "0.0666"},
           "channel_link": {"id": "5f0c...", "kind": "sms"}}
    v0.1: {"message_uuid": "...", "to": {"type": "sms", "number": "447700900000"},
           "from": {"type": "sms", "number": "Acme"}, "timestamp": "...", "status": "rejected",
           "error": {"code": 1170, "reason": "..."}, "usage": {...}}
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from missive.clock import iso

BETA_CHANNEL = {"viber_service": "viber_service_msg"}
# Where the vendor documents each Messages error code (the v1 `error.type`).
ERROR_TYPE = "https://developer.vonage.com/api-errors/messages#{code}"
_INSTANCES = uuid.UUID("0b9e5d3c-8a4f-4c52-9d36-6f1e2a7c4b10")


@dataclass(frozen=True)
class StatusDetails:
    """What a status webhook says beyond the message row: its SMS parts (v1
    `sms.count_total`) and its price when its link has one (`usage`). (No provider
    Missive speaks to reports the network reached, so v1 `destination` is never sent.)"""

    parts: int | None = None
    usage: dict[str, str] | None = None


def usage(price: dict[str, Any] | None, parts: int) -> dict[str, str] | None:
    """The `usage` of a message carried by a link with this `price` setting
    ({"amount": "0.0333", "currency": "EUR", "per": "part" | "message"}): the price
    of the whole message, as a string like the vendor's."""
    if not price:
        return None
    amount = Decimal(price["amount"]) * (parts if price.get("per", "part") == "part" else 1)
    return {"currency": price["currency"], "price": format(amount, "f")}


def error_instance(message_uuid: str, status: str, at: float) -> str:
    """The v1 `error.instance`: an id of this failure, the same every time it is derived."""
    return uuid.uuid5(_INSTANCES, f"{message_uuid}/{status}/{at!r}").hex


def _v1_error(message_uuid: str, status: str, at: float, code: int, reason: str) -> dict[str, str]:
    # The vendor's schema types `title` as a string holding the code.
    return {"type": ERROR_TYPE.format(code=code), "title": str(code), "detail": reason,
            "instance": error_instance(message_uuid, status, at)}


def _beta_address(channel: str, value: str, business: bool) -> dict[str, str]:
    """`id` for page and service ids and Viber user ids, `number` for phone numbers."""
    if channel == "messenger" or (channel == "viber_service" and (business or not value.isdigit())):
        return {"type": BETA_CHANNEL.get(channel, channel), "id": value}
    return {"type": BETA_CHANNEL.get(channel, channel), "number": value}


def channel_link(message: dict[str, Any]) -> dict[str, str] | None:
    """Which link carried the message (ours, in both shapes; the vendor's webhooks have no
    such field): a link id, or `sandbox:<channel>` for the built-in sandbox. None until a
    link has taken the message (`submitted`), so on one refused before."""
    if not message.get("link_id"):
        return None
    return {"id": message["link_id"], "kind": message["link_kind"]}


def status_payload(
    message: dict[str, Any],
    status: str,
    at: float,
    error_code: int | None = None,
    error_reason: str | None = None,
    details: StatusDetails | None = None,
    version: str | None = None,
) -> dict[str, Any]:
    """A status webhook in `version` (by default the message's own `webhook_version`)."""
    channel = message["channel"]
    beta = (version or message["webhook_version"]) == "v0.1"
    details = details or StatusDetails()
    payload: dict[str, Any] = {"message_uuid": message["uuid"]}
    if beta:
        payload["to"] = _beta_address(channel, message["to_addr"], business=False)
        payload["from"] = _beta_address(channel, message["from_addr"], business=True)
    else:
        payload["to"] = message["to_addr"]
        payload["from"] = message["from_addr"]
        payload["channel"] = channel
    payload["timestamp"] = iso(at)
    payload["status"] = status
    if error_code is not None:
        if beta:
            payload["error"] = {"code": error_code, "reason": error_reason or ""}
        else:
            payload["error"] = _v1_error(message["uuid"], status, at, error_code, error_reason or "")
    if details.usage is not None:
        payload["usage"] = details.usage
    if message.get("client_ref"):
        payload["client_ref"] = message["client_ref"]
    if not beta and channel == "sms" and details.parts:
        payload["sms"] = {"count_total": str(details.parts)}
    link = channel_link(message)
    if link is not None:
        payload["channel_link"] = link
    if message.get("workflow_id"):
        if beta:
            payload["_links"] = {"workflow": {"dispatch_uuid": message["workflow_id"], "href": f"/v1/workflows/{message['workflow_id']}"}}
        else:
            payload["workflow"] = {"workflow_id": message["workflow_id"]}
    return payload


def inbound_payload(inbound: dict[str, Any], version: str) -> dict[str, Any]:
    """An inbound message: `message_type` with its content (text, image, location...)."""
    channel = inbound["channel"]
    content = dict(inbound["payload"])
    timestamp = iso(inbound["created_at"])
    if version == "v0.1":
        # Channel details (SMS: num_messages, keyword) sit beside the content, as in the
        # beta API's inbound SMS.
        details = {key: content.pop(key) for key in ("sms",) if key in content}
        return {
            "message_uuid": inbound["uuid"],
            "to": _beta_address(channel, inbound["to_addr"], business=True),
            "from": _beta_address(channel, inbound["from_addr"], business=False),
            "timestamp": timestamp,
            "message": {"content": {"type": inbound["message_type"], **content}, **details},
        }
    return {
        "channel": channel,
        "message_uuid": inbound["uuid"],
        "to": inbound["to_addr"],
        "from": inbound["from_addr"],
        "timestamp": timestamp,
        "message_type": inbound["message_type"],
        **content,
    }


def workflow_report_payload(workflow: dict[str, Any], statuses: dict[str, dict[str, Any]], at: float) -> dict[str, Any]:
    """The final report of a Dispatch API workflow: how it ended and every message it sent,
    by the beta format's channel names."""
    sent = []
    for step in workflow["steps"]:
        found = statuses.get(step.get("message_uuid") or "")
        if found is None:
            continue
        channel = found["channel"]
        sent.append({
            "message_uuid": step["message_uuid"],
            "href": f"/v1/messages/{step['message_uuid']}",
            "channel": BETA_CHANNEL.get(channel, channel),
            "status": found["status"],
        })
    return {
        "dispatch_uuid": workflow["id"],
        "template": workflow["template"],
        "status": workflow["status"],
        "timestamp": iso(at),
        "_links": {"messages": sent},
    }

"""The Messages API: send (v1 and beta formats) and read back."""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from missive.api.body import read_json
from missive.api.errors import (
    InvalidParameter,
    database_fault,
    invalid_params,
    not_found,
    unavailable,
)
from missive.api.responses import Accepted, json_response
from missive.api.services import Services, services
from missive.clock import iso, parse_iso
from missive.observability import context
from missive.schemas.beta import validate_beta
from missive.schemas.v1 import PAYLOAD_FIELDS, SUPPORTED_CHANNELS, UNSUPPORTED_CHANNELS, validate_v1
from missive.schemas.workflows import validate_v1_failover
from missive.store.messages import (
    MessageFilter,
    Scope,
    get_message,
    list_messages,
    new_message_rows,
)
from missive.store.tables import messages as messages_table
from missive.store.tables import outbox
from missive.store.workflows import new_workflow_rows
from missive.store.writer import Rows
from missive.url_safety import policy_for
from missive.webhooks.payloads import channel_link

STATUSES = ("accepted", "submitted", "delivered", "read", "rejected", "undeliverable")
PAGE_SIZE_DEFAULT = 20
PAGE_SIZE_MAX = 100
NOT_STORED = "The message could not be stored; nothing was accepted. Retry later."
NOT_STORED_FULL = "The message could not be stored: the server's storage is full. Nothing was accepted."

log = logging.getLogger("missive.api")


async def store_accepted(svc: Services, rows: Rows) -> None:
    """Commit what accepting a request writes. The 202 comes only after that commit; when
    it fails the group's transaction left nothing, and the answer is a 507 (storage full)
    or a 503 (anything else: nothing accepted, retry).

    A single message accepted by a process whose dispatcher has room is written already
    leased to it, and sent from here once committed: no claim."""
    lease = None
    dispatcher = svc.dispatcher
    if dispatcher is not None and len(rows.get(outbox, ())) == 1 and len(rows.get(messages_table, ())) == 1:
        lease = dispatcher.reserve()
        if lease is not None:
            rows[outbox][0]["claimed_until"] = lease
            rows[outbox][0]["claimed_by"] = dispatcher.node_id
    committed = False
    try:
        await svc.writer.write(rows)
        committed = True
    except Exception as exc:
        fault = database_fault(exc, "accept", NOT_STORED_FULL, NOT_STORED)
        if fault is None:
            log.error("nothing accepted: the commit failed [instance %s]", context.trace_id_or_new(), exc_info=exc)
            fault = unavailable(NOT_STORED)
        raise fault from None
    finally:
        if lease is not None and not committed:
            dispatcher.adopt(None)  # type: ignore[union-attr]
    if lease is not None:
        dispatcher.adopt(rows[messages_table][0])  # type: ignore[union-attr]
    else:
        svc.messages_accepted()


async def _accept(request: Request, validate) -> Response:  # type: ignore[no-untyped-def]
    svc = services(request)
    principal = svc.auth.known(request) or await svc.auth.authenticate(request)
    data = await read_json(request, svc.settings.max_body_bytes)
    policy = policy_for(svc.settings)
    if validate is validate_v1 and isinstance(data, dict) and "failover" in data:
        steps = validate_v1_failover(data, policy)
        workflow_id, message_uuid, rows = new_workflow_rows(steps, "v1", principal.account_id, principal.application_id, svc.clock())
        context.message_uuid.set(message_uuid)
        await store_accepted(svc, rows)
        return json_response({"message_uuid": message_uuid, "workflow_id": workflow_id}, 202)
    body = validate(data, policy)
    message_uuid, rows = new_message_rows(body, principal.account_id, principal.application_id, svc.clock())
    context.message_uuid.set(message_uuid)
    await store_accepted(svc, rows)
    return Accepted(message_uuid)


async def send_v1(request: Request) -> Response:
    return await _accept(request, validate_v1)


async def send_beta(request: Request) -> Response:
    return await _accept(request, validate_beta)


def webhook_view(hook: dict) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": hook["id"],
        "kind": hook["kind"],
        "url": hook["url"],
        "state": hook["state"],
        "attempts": hook["attempts"],
        "status": orjson.loads(hook["payload"]).get("status"),
    }
    if hook["last_status_code"] is not None:
        view["last_status_code"] = hook["last_status_code"]
    if hook["last_error"]:
        view["last_error"] = hook["last_error"]
    if hook["delivered_at"]:
        view["delivered_at"] = iso(hook["delivered_at"])
    return view


def message_view(row: dict, events: list[dict] | None = None, hooks: list[dict] | None = None) -> dict[str, Any]:
    body = row["body"]
    view: dict[str, Any] = {
        "message_uuid": row["uuid"],
        "channel": row["channel"],
        "message_type": row["message_type"],
        "to": row["to_addr"],
        "from": row["from_addr"],
        "status": row["status"],
        "timestamp": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }
    for key in ("client_ref", "webhook_url", "workflow_id", "application_id"):
        if row.get(key):
            view[key] = row[key]
    link = channel_link(row)
    if link is not None:
        view["channel_link"] = link
    view["content"] = {k: v for k, v in body.items() if k in PAYLOAD_FIELDS or k in ("sms", "messenger", "viber_service", "ttl")}
    if events is not None:
        history = [{"status": "accepted", "timestamp": iso(row["created_at"])}]
        for event in events:
            entry: dict[str, Any] = {"status": event["status"], "timestamp": iso(event["timestamp"])}
            if event["provider_ref"]:
                entry["provider_ref"] = event["provider_ref"]
            if event["error_code"] is not None:
                entry["error"] = {"code": event["error_code"], "reason": event["error_reason"]}
            history.append(entry)
        view["history"] = history
    if hooks is not None:
        view["webhooks"] = [webhook_view(h) for h in hooks]
    return view


async def read_message(request: Request) -> Response:
    svc = services(request)
    principal = await svc.auth.authenticate(request)
    message_uuid = request.path_params["message_uuid"]
    found = await get_message(svc.engine, Scope(principal.account_id, principal.application_id), message_uuid)
    if found is None:
        raise not_found("Message", message_uuid)
    return json_response(message_view(*found))


def _encode_cursor(row: dict) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([row["created_at"], row["uuid"]])).decode().rstrip("=")


def _decode_cursor(value: str) -> tuple[float, str] | None:
    try:
        created_at, last_uuid = orjson.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        if not isinstance(created_at, (int, float)) or not isinstance(last_uuid, str):
            return None
        return float(created_at), last_uuid
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        return None


def _filters(request: Request) -> tuple[MessageFilter, int]:
    query = request.query_params
    errors = []
    status = query.get("status")
    if status and status not in STATUSES:
        errors.append(InvalidParameter("status", f"must be one of {', '.join(STATUSES)}"))
    channel = query.get("channel")
    if channel and channel not in SUPPORTED_CHANNELS + UNSUPPORTED_CHANNELS:
        errors.append(InvalidParameter("channel", f"must be one of {', '.join(SUPPORTED_CHANNELS)}"))
    since = None
    if query.get("since"):
        try:
            since = parse_iso(query["since"])
        except (ValueError, OverflowError):
            errors.append(InvalidParameter("since", "must be an ISO 8601 date-time"))
    page_size = PAGE_SIZE_DEFAULT
    if query.get("page_size"):
        raw = query["page_size"]
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= PAGE_SIZE_MAX:
            errors.append(InvalidParameter("page_size", f"must be an integer from 1 to {PAGE_SIZE_MAX}"))
        else:
            page_size = int(raw)
    before = _decode_cursor(query["cursor"]) if query.get("cursor") else None
    if query.get("cursor") and before is None:
        errors.append(InvalidParameter("cursor", "is not a cursor this server returned"))
    # NUL cannot be in PostgreSQL text, so no stored message has one (bodies refuse it).
    errors += [InvalidParameter(name, "must not contain NUL characters")
               for name in ("to", "client_ref") if "\x00" in query.get(name, "")]
    if errors:
        raise invalid_params(errors)
    filters = MessageFilter(
        status=status or None,
        channel=channel or None,
        to=query.get("to") or None,
        client_ref=query.get("client_ref") or None,
        since=since,
        before=before,
    )
    return filters, page_size


async def search_messages(request: Request) -> Response:
    svc = services(request)
    principal = await svc.auth.authenticate(request)
    filters, page_size = _filters(request)
    rows = await list_messages(
        svc.engine, Scope(principal.account_id, principal.application_id), filters, page_size + 1
    )
    page, more = rows[:page_size], len(rows) > page_size
    params = {k: v for k, v in request.query_params.items() if k not in ("cursor", "api_key", "api_secret")}
    links: dict[str, Any] = {"self": {"href": f"/v1/messages?{urlencode(params)}".rstrip("?")}}
    if more:
        params["cursor"] = _encode_cursor(page[-1])
        links["next"] = {"href": f"/v1/messages?{urlencode(params)}"}
    return json_response(
        {"page_size": page_size, "_embedded": {"messages": [message_view(r) for r in page]}, "_links": links}
    )


# Served before Starlette's stack (api/direct.py); their routes serve the same endpoints
# for the other spellings of their paths (a trailing slash).
SENDS = {"/v1/messages": send_v1, "/v0.1/messages": send_beta, "/beta/messages": send_beta}

routes = [
    *(Route(path, endpoint, methods=["POST"]) for path, endpoint in SENDS.items()),
    Route("/v1/messages", search_messages, methods=["GET"]),
    Route("/v1/messages/{message_uuid}", read_message, methods=["GET"]),
]

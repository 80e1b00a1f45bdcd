"""Turning status changes and inbound messages into webhook outbox rows.

The URL is fixed when the row is written: the message's own `webhook_url`, else its
application's status/inbound URL, else (Basic-auth messages) the account's. So are its
shape (v1 or v0.1) and, where the carrying link has a price, its `usage`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from missive.cache import TTLCache
from missive.ids import time_ordered_id
from missive.sms.gsm import count_parts
from missive.store.bulk import insert_many
from missive.store.statuses import StatusChange
from missive.store.tables import accounts, applications, channel_links, messages, webhook_outbox
from missive.webhooks.payloads import (
    StatusDetails,
    inbound_payload,
    status_payload,
    usage,
    workflow_report_payload,
)


class WebhookTargets:
    """Webhook URLs of applications and accounts, cached for a few seconds.

    A view made by `leasing` for one transaction also writes the new webhook rows
    already leased to this process (those its sender `admits`) and keeps them in
    `leased`, for the sender to start once the transaction has committed: the webhooks a
    dispatcher's own results make need no claim. The others are left for the claims.
    """

    def __init__(self, clock: Callable[[], float] = time.time, cache: TTLCache | None = None) -> None:
        self._clock = clock
        self._cache = cache or TTLCache(clock)
        self._lease: tuple[float, str | None, Callable[[str, int], bool]] | None = None
        self.leased: list[dict[str, Any]] = []
        self.unleased = 0
        self._per_target: Counter[str] = Counter()

    def leasing(self, until: float, by: str | None, admits: Callable[[str, int], bool]) -> WebhookTargets:
        """A view sharing this cache whose rows are leased to node `by` until `until` when
        `admits(target, rows of that target already leased in this view)`."""
        view = WebhookTargets(self._clock, self._cache)
        view._lease = (until, by, admits)
        return view

    def _stamp(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if self._lease is not None:
                until, by, admits = self._lease
                if admits(row["target"], self._per_target[row["target"]]):
                    row["claimed_until"], row["claimed_by"] = until, by
                    self.leased.append(row)
                    self._per_target[row["target"]] += 1
                    continue
            self.unleased += 1

    async def _load(self, conn: AsyncConnection, table: Any, ident: str) -> dict[str, Any] | None:
        key = (table.name, ident)
        hit, cached = self._cache.get(key)
        if hit:
            return cached  # type: ignore[no-any-return]
        row = (await conn.execute(select(table).where(table.c.id == ident))).first()
        value = dict(row._mapping) if row else None
        self._cache.put(key, value)
        return value

    async def urls(self, conn: AsyncConnection, account_id: str, application_id: str | None) -> dict[str, Any]:
        """{"status": (url, method) | None, "inbound": ..., "version": "v1" | "v0.1"}."""
        owner = None
        if application_id:
            owner = await self._load(conn, applications, application_id)
        if owner is None:
            owner = await self._load(conn, accounts, account_id) or {}
        status_url, inbound_url = owner.get("status_url"), owner.get("inbound_url")
        version = ((owner.get("extra") or {}).get("capabilities", {}).get("messages", {}) or {}).get("version")
        return {
            "status": (status_url, owner.get("status_method") or "POST") if status_url else None,
            "inbound": (inbound_url, owner.get("inbound_method") or "POST") if inbound_url else None,
            "version": "v0.1" if version == "v0.1" else "v1",
        }


def _row(kind: str, account_id: str, application_id: str | None, message_uuid: str, url: str, method: str, body: dict, now: float) -> dict[str, Any]:
    return {
        "id": time_ordered_id(),
        "account_id": account_id,
        "target": application_id or account_id,
        "application_id": application_id,
        "message_uuid": message_uuid,
        "kind": kind,
        "url": url,
        "method": method,
        "payload": orjson.dumps(body).decode(),
        "state": "pending",
        "due_at": now,
        "attempts": 0,
        "claimed_until": None,
        "claimed_by": None,
        "last_error": None,
        "last_status_code": None,
        "created_at": now,
        "delivered_at": None,
    }


async def _requests(conn: AsyncConnection, uuids: set[str]) -> dict[str, dict[str, Any]]:
    """The requests of these messages (status changes are read without them)."""
    if not uuids:
        return {}
    rows = await conn.execute(select(messages.c.uuid, messages.c.body).where(messages.c.uuid.in_(uuids)))
    return {row.uuid: row.body for row in rows}


def _parts(message: dict[str, Any], request: dict[str, Any]) -> int:
    """An SMS's parts, as the SMS channel splits its text; one for other channels."""
    text = request.get("text")
    if message["channel"] != "sms" or not isinstance(text, str):
        return 1
    return count_parts(text, (request.get("sms") or {}).get("encoding_type"))


async def _details(
    conn: AsyncConnection, targets: WebhookTargets, message: dict[str, Any], request: dict[str, Any]
) -> StatusDetails:
    """SMS parts, and the usage priced by the link that carried the message (the built-in
    sandbox has no price)."""
    parts = _parts(message, request)
    price = None
    link_id = message.get("link_id")
    if link_id and not link_id.startswith("sandbox:"):
        link = await targets._load(conn, channel_links, link_id)
        price = ((link or {}).get("config") or {}).get("price")
    return StatusDetails(parts if message["channel"] == "sms" else None, usage(price, parts))


async def enqueue_status_webhooks(
    conn: AsyncConnection, targets: WebhookTargets, applied: list[tuple[StatusChange, dict[str, Any]]], now: float
) -> int:
    """The status webhooks of these moves, in the shape of the message's own
    `webhook_version` when its request named one, else its application's messages
    `version` (a beta-format message names v0.1)."""
    wanted = []
    for change, message in applied:
        urls = await targets.urls(conn, message["account_id"], message["application_id"])
        if message["webhook_url"]:
            url, method = message["webhook_url"], "POST"
        elif urls["status"] is not None:
            url, method = urls["status"]
        else:
            continue
        wanted.append((change, message, url, method, urls["version"]))
    # Requests are read only where they matter: SMS parts, and whether a message of a
    # v0.1 application named its own version.
    requests = await _requests(conn, {
        m["uuid"] for _, m, _, _, version in wanted if m["channel"] == "sms" or version != m["webhook_version"]})
    rows = []
    for change, message, url, method, app_version in wanted:
        request = requests.get(message["uuid"], {})
        if message["uuid"] in requests and "webhook_version" not in request:
            message = {**message, "webhook_version": app_version}
        details = await _details(conn, targets, message, request)
        body = status_payload(message, change.status, change.at, change.error_code, change.error_reason, details)
        if change.details and message["webhook_version"] != "v0.1":
            body.update(change.details)
        rows.append(_row("status", message["account_id"], message["application_id"], message["uuid"], url, method, body, now))
    if rows:
        targets._stamp(rows)
        await insert_many(conn, webhook_outbox, rows)
    return len(rows)


async def enqueue_inbound_webhook(conn: AsyncConnection, targets: WebhookTargets, inbound: dict[str, Any], now: float) -> bool:
    urls = await targets.urls(conn, inbound["account_id"], inbound["application_id"])
    if urls["inbound"] is None:
        return False
    url, method = urls["inbound"]
    body = inbound_payload(inbound, urls["version"])
    rows = [_row("inbound", inbound["account_id"], inbound["application_id"], inbound["uuid"], url, method, body, now)]
    targets._stamp(rows)
    await insert_many(conn, webhook_outbox, rows)
    return True


async def enqueue_workflow_report(
    conn: AsyncConnection, targets: WebhookTargets, workflow: dict[str, Any], statuses: dict[str, dict[str, Any]], now: float
) -> bool:
    """The final report goes to the status URL of the application (or account); without
    one, to the first message's own `webhook_url`."""
    found = (await targets.urls(conn, workflow["account_id"], workflow["application_id"]))["status"]
    if found is None:
        first = workflow["steps"][0]["message"].get("webhook_url")
        if not first:
            return False
        found = (first, "POST")
    url, method = found
    body = workflow_report_payload(workflow, statuses, now)
    rows = [_row("workflow", workflow["account_id"], workflow["application_id"], workflow["id"], url, method, body, now)]
    targets._stamp(rows)
    await insert_many(conn, webhook_outbox, rows)
    return True

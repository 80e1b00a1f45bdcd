"""What a channel's own connections push (SMPP receipts and inbound SMS), stored in one
transaction before the provider is answered.

    Receipt       -> the message with that reference: its status; for a multipart SMS,
                     `delivered` once every part is, `undeliverable` at the first failed
                     part; no such message yet -> kept in `unmatched_receipts` and applied
                     when a send result with that reference is recorded
    InboundPart   -> kept until every part of the message has arrived, then reassembled
    InboundEvent  -> an inbound message of the link's account: for the application its
                     `to` number is linked to among that account's numbers, else the
                     link's own application (or the account), and its webhook

Everything is attributed through the link it arrived on: references are looked up among
that link's, numbers among its account's.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from missive.channels.base import ChannelLink, InboundEvent, InboundPart, Receipt
from missive.dispatch.callbacks import LinkOwner, store_inbound
from missive.dispatch.recording import record_statuses
from missive.observability.exchanges import Policy, row
from missive.sms.deliveries import ref_forms, smsc_id_of, text_event
from missive.sms.encoding import join_parts
from missive.store import provider_logs
from missive.store.bulk import delete_many
from missive.store.locks import lock_names
from missive.store.numbers import number_of
from missive.store.rows import rows_in
from missive.store.statuses import StatusChange
from missive.store.tables import (
    inbound_parts,
    part_receipts,
    provider_refs,
    unmatched_receipts,
)
from missive.webhooks.outbox import WebhookTargets

log = logging.getLogger("missive.dispatch")

_KEPT = ("id", "ref", "status", "error_code", "error_reason")
# Parts of an inbound message older than this never complete: a new part with the same
# reference starts a new message.
PART_WINDOW = 3600.0


async def apply_link_events(
    conn: AsyncConnection, targets: WebhookTargets, batch: list[tuple[ChannelLink, list[Any]]], now: float,
    logs: Policy | None = None,
) -> None:
    """Store a batch of what links pushed, in the caller's transaction; the caller holds
    the locks of `event_lock_names(batch)`. The PDUs receipts carry go to the provider
    logs of their messages, those `logs` wants."""
    changes: list[StatusChange] = []
    logged: list[tuple[Receipt, str]] = []
    links = {link.id: link for link, _ in batch}
    receipts: dict[str, list[Receipt]] = {}
    for link, events in batch:
        for event in events:
            if isinstance(event, Receipt):
                receipts.setdefault(link.id, []).append(event)
                continue
            if isinstance(event, InboundPart):
                event = await _reassemble(conn, link, event, now)
                if event is None:
                    continue
            await _inbound(conn, targets, link, event, now)
    for link_id, group in receipts.items():
        changes.extend(await receipt_changes(conn, link_id, group, now, logged=logged if logs is not None and logs.on else None))
        if logged and logs is not None:
            account_id = links[link_id].account_id
            await provider_logs.write(conn, [row(r.exchange, uuid, account_id, link_id) for r, uuid in logged
                                             if logs.wants(uuid)])
            logged.clear()
    await record_statuses(conn, targets, changes, now)


def event_lock_names(batch: list[tuple[ChannelLink, list[Any]]]) -> Iterator[str]:
    """The names the caller of `apply_link_events` locks first: the references its
    receipts name (see missive.dispatch.outcomes.lock_names_of); made as they are read."""
    return (f"ref:{ref}" for _link, events in batch for e in events if isinstance(e, Receipt) for ref in e.refs)


async def receipt_changes(
    conn: AsyncConnection, link_id: str, receipts: list[Receipt], now: float, keep_unmatched: bool = True,
    logged: list[tuple[Receipt, str]] | None = None,
) -> list[StatusChange]:
    """The status changes of `receipts` that arrived on link `link_id`, in order. Their
    references (among that link's) and the part counts of their messages are read with
    one query each for the whole batch."""
    wanted = {ref for receipt in receipts for ref in receipt.refs}
    found = {row["ref"]: row["message_uuid"] for row in await rows_in(
        conn, provider_refs, ("ref", "message_uuid"), "ref", wanted, equal=(("link_id", link_id),))}
    matched: list[tuple[Receipt, str, str]] = []
    unmatched: list[dict[str, Any]] = []
    for receipt in receipts:
        # The way of writing the reference the receipt gives first wins.
        ref = next((r for r in receipt.refs if r in found), None)
        if ref is not None:
            matched.append((receipt, ref, found[ref]))
        elif keep_unmatched:
            unmatched.append({"link_id": link_id, "ref": receipt.refs[0], "status": receipt.status,
                              "error_code": receipt.error_code, "error_reason": receipt.error_reason, "created_at": now})
    if unmatched:
        # Usual under load (an SMSC's receipt may come before the result of its send is
        # recorded): one line a batch, and the first reference to look for.
        log.info("%d receipt(s) for references not recorded yet (the first %s): kept until their messages are",
                 len(unmatched), unmatched[0]["ref"])
        await conn.execute(unmatched_receipts.insert(), unmatched)
    if logged is not None:
        logged.extend((receipt, uuid) for receipt, _, uuid in matched if receipt.exchange is not None)
    if not matched:
        return []
    # How many parts each message has: its references.
    parts = Counter(row["message_uuid"] for row in await rows_in(
        conn, provider_refs, ("message_uuid",), "message_uuid", {uuid for _, _, uuid in matched}))
    changes: list[StatusChange] = []
    for receipt, ref, message_uuid in matched:
        change = StatusChange(message_uuid, receipt.status, now, smsc_id_of(ref), receipt.error_code, receipt.error_reason)
        if parts.get(message_uuid, 0) <= 1:
            changes.append(change)
        else:
            changes.extend(await _part_receipt(conn, link_id, ref, message_uuid, parts[message_uuid], receipt, change, now))
    return changes


async def _part_receipt(
    conn: AsyncConnection, link_id: str, ref: str, message_uuid: str, parts: int, receipt: Receipt,
    change: StatusChange, now: float,
) -> list[StatusChange]:
    """A receipt for one part of a multipart SMS: the message's change once all its parts
    are delivered (or at the first part that is not)."""
    # Receipts of two parts may be counted by two processes at once: one at a time.
    await lock_names(conn, [f"message:{message_uuid}"])
    seen = (await conn.execute(
        select(part_receipts.c.status).where(part_receipts.c.link_id == link_id, part_receipts.c.ref == ref)
    )).first()
    if seen is not None:
        return []  # this part's receipt again
    await conn.execute(part_receipts.insert().values(
        link_id=link_id, ref=ref, message_uuid=message_uuid, status=receipt.status, created_at=now))
    if receipt.status != "delivered":
        return [change]
    delivered = (await conn.execute(
        select(func.count()).select_from(part_receipts).where(
            part_receipts.c.message_uuid == message_uuid, part_receipts.c.status == "delivered")
    )).scalar_one()
    return [change] if delivered >= parts else []


async def rematch(conn: AsyncConnection, targets: WebhookTargets, refs: list[tuple[str, str]], now: float) -> None:
    """Apply kept receipts that name references just recorded, as (link id, reference)
    (called in the same transaction as the send results, after their `submitted`)."""
    by_link: dict[str, list[str]] = {}
    for link_id, ref in refs:
        by_link.setdefault(link_id, []).append(ref)
    changes: list[StatusChange] = []
    for link_id, recorded in by_link.items():
        # Most batches find none: one probe of the index, rather than a lookup of every
        # form of every reference.
        if (await conn.execute(select(unmatched_receipts.c.id).where(unmatched_receipts.c.link_id == link_id)
                               .limit(1))).first() is None:
            continue
        forms = {form for ref in recorded for form in ref_forms(ref)}
        kept = sorted(await rows_in(conn, unmatched_receipts, _KEPT, "ref", forms, equal=(("link_id", link_id),)),
                      key=lambda row: row["id"])
        if not kept:
            continue
        receipts = [Receipt(ref_forms(row["ref"]), row["status"], row["error_code"], row["error_reason"]) for row in kept]
        changes.extend(await receipt_changes(conn, link_id, receipts, now, keep_unmatched=False))
        await delete_many(conn, unmatched_receipts, "id", [row["id"] for row in kept])
    if changes:
        await record_statuses(conn, targets, changes, now)


async def _reassemble(conn: AsyncConnection, link: ChannelLink, part: InboundPart, now: float) -> InboundEvent | None:
    key = (
        inbound_parts.c.link_id == link.id,
        inbound_parts.c.sender == part.sender,
        inbound_parts.c.concat_ref == part.concat_ref,
    )
    await conn.execute(delete(inbound_parts).where(*key, inbound_parts.c.created_at < now - PART_WINDOW))
    known = (await conn.execute(select(inbound_parts.c.seq).where(*key, inbound_parts.c.seq == part.seq))).first()
    if known is None:
        await conn.execute(inbound_parts.insert().values(
            link_id=link.id, sender=part.sender, concat_ref=part.concat_ref, seq=part.seq, total=part.total,
            to_addr=part.to, data_coding=part.data_coding, payload=part.payload.hex(), created_at=now))
    rows = (await conn.execute(select(inbound_parts).where(*key).order_by(inbound_parts.c.seq))).all()
    if {r.seq for r in rows} != set(range(1, part.total + 1)):
        return None
    await conn.execute(delete(inbound_parts).where(*key))
    text = join_parts([bytes.fromhex(r.payload) for r in rows], rows[0].data_coding)
    return text_event(part.to, part.sender, text, part.total)


async def _inbound(conn: AsyncConnection, targets: WebhookTargets, link: ChannelLink, event: InboundEvent, now: float) -> None:
    if link.account_id is None:
        log.warning("link %s: inbound message to %s has no owner; dropped", link.id, event.to)
        return
    number = await number_of(conn, link.account_id, event.to)
    application_id = number[0] if number else link.application_id
    await store_inbound(conn, targets, LinkOwner(link.id, link.kind, link.account_id, application_id), event, now)

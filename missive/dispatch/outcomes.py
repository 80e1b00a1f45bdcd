"""What a send attempt ended in, and how it is written: all outcomes of a batch in one
transaction, statement by statement (executemany), not message by message."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from missive.channels.base import FollowUp
from missive.dispatch.link_events import rematch
from missive.dispatch.recording import record_statuses
from missive.observability.exchanges import Recorder
from missive.sms.deliveries import ref_forms
from missive.store import provider_logs
from missive.store.bulk import delete_many, insert_many, update_many
from missive.store.statuses import StatusChange
from missive.store.tables import outbox, provider_refs, timers
from missive.webhooks.outbox import WebhookTargets


@dataclass(slots=True)
class Outcome:
    message_uuid: str
    at: float
    # A status to record (submitted, rejected, undeliverable), or None for a retry.
    change: StatusChange | None = None
    follow_ups: tuple[FollowUp, ...] = ()
    # The link the message went out on (id, kind), and the provider references by which
    # that link's receipts will find it.
    link: tuple[str, str] | None = None
    refs: tuple[str, ...] = ()
    retry_at: float | None = None
    attempts: int = 0
    error: str | None = None
    # What was exchanged with the provider (rows of `provider_logs`), retries included.
    logs: tuple[dict[str, Any], ...] = ()


def with_logs(outcome: Outcome, recorder: Recorder | None) -> Outcome:
    """The outcome with the exchanges its send recorded."""
    if recorder is None or not recorder.exchanges:
        return outcome
    change = outcome.change
    failure = outcome.error or (change.error_reason if change is not None and change.status != "submitted" else None)
    outcome.logs = recorder.rows(failure)
    return outcome


def lock_names_of(outcomes: list[Outcome]) -> Iterator[str]:
    """The names the caller of `write_outcomes` locks first (store/locks.py): the forms of
    the SMSC references it records, made as they are read (on SQLite, never). Then a
    receipt of these references being stored by another process at this moment is either
    seen here or sees these references."""
    return (f"ref:{form}" for o in outcomes if o.retry_at is None and o.link and o.link[1] == "sms"
            for ref in o.refs for form in ref_forms(ref))


async def write_outcomes(conn: AsyncConnection, targets: WebhookTargets, outcomes: list[Outcome]) -> None:
    """Write a batch of outcomes; their webhooks go through `targets`. The caller holds
    the locks of `lock_names_of(outcomes)`."""
    done = [o for o in outcomes if o.retry_at is None]
    sms_refs = [(o.link[0], ref) for o in done if o.link and o.link[1] == "sms" for ref in o.refs]
    retries = [o for o in outcomes if o.retry_at is not None]
    await delete_many(conn, outbox, "message_uuid", [o.message_uuid for o in done])
    await update_many(
        conn, outbox, "message_uuid",
        [{"message_uuid": o.message_uuid, "due_at": o.retry_at, "attempts": o.attempts, "last_error": o.error} for o in retries],
        nulls=("claimed_until",),
    )
    # A follow-up due at once (a provider that answers `delivered` with the send) is
    # recorded now, after `submitted`, rather than through a timer.
    at_once = [
        StatusChange(o.message_uuid, f.status, o.at, o.change.provider_ref if o.change else None,
                     f.error_code, f.error_reason)
        for o in done
        for f in o.follow_ups
        if f.after <= 0
    ]
    timer_rows = [
        {
            "kind": "status",
            "message_uuid": o.message_uuid,
            "due_at": o.at + f.after,
            "payload": {"status": f.status, "error_code": f.error_code, "error_reason": f.error_reason,
                        "provider_ref": o.change.provider_ref if o.change else None},
            "claimed_until": None,
        }
        for o in done
        for f in o.follow_ups
        if f.after > 0
    ]
    # A reference the provider repeats (an SMSC that restarted or wrapped its counter)
    # names the newest message: recorded, never a fault of the batch.
    ref_rows = {
        (o.link[0], ref): {"link_id": o.link[0], "ref": ref, "message_uuid": o.message_uuid, "created_at": o.at}
        for o in done if o.link
        for ref in o.refs
    }
    await insert_many(conn, provider_refs, list(ref_rows.values()), replace=("message_uuid", "created_at"))
    await insert_many(conn, timers, timer_rows)
    await provider_logs.write(conn, [row for o in outcomes for row in o.logs])
    now = max((o.at for o in outcomes), default=0.0)
    # The link each went out on is set with its status move.
    links = {o.message_uuid: {"link_id": o.link[0], "link_kind": o.link[1]} for o in done if o.link}
    await record_statuses(conn, targets, [o.change for o in done if o.change is not None] + at_once, now, links)
    if sms_refs:
        # Receipts that overtook their submit_sm_resp are applied now, after `submitted`.
        await rematch(conn, targets, sms_refs, now)

"""The failover engine: moves a workflow on when its current step's message changes
status or its expiry timer fires.

    step N rejected | undeliverable     -> leave N ("rejected"/"undeliverable"), start N+1
    step N condition not met in time    -> leave N ("expired"), start N+1
    step N reaches its condition        -> workflow completed (delivered or read; the
                                           last step, and v1 steps, wait for delivered)
    no step N+1                         -> workflow error
    completed or error                  -> final report to the status URL (Dispatch API
                                           workflows only: a v1 `failover` array is
                                           followed by its steps' v1 status webhooks,
                                           each with its `workflow`, and nothing else)

Everything happens inside the caller's transaction (the one recording the status, or
the one removing the timer), with the workflow row locked and its move guarded by
`current_step`: a status and an expiry arriving together leave a step once, and a crash
either keeps the whole move or none of it.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from missive.store.statuses import StatusChange
from missive.store.tables import workflows
from missive.store.workflows import insert_rows, lock_workflow, step_rows, step_statuses
from missive.webhooks.outbox import WebhookTargets, enqueue_workflow_report

log = logging.getLogger("missive.workflows")

FAILED = ("rejected", "undeliverable")
# The workflows whose end is reported in the Dispatch API's body: those accepted at
# /v0.1/dispatch or /beta/workflows (source "dispatch"), not v1 `failover` arrays.
REPORTED = ("dispatch",)
# The statuses that meet each condition: a read message was delivered.
MEETS = {"delivered": ("delivered", "read"), "read": ("read",)}


def condition_of(step: dict[str, Any]) -> str:
    return (step.get("failover") or {}).get("condition_status", "delivered")


async def on_statuses(
    conn: AsyncConnection, targets: WebhookTargets, applied: list[tuple[StatusChange, dict[str, Any]]], now: float
) -> None:
    """React to status moves of workflow messages (called where statuses are recorded)."""
    for change, message in applied:
        workflow_id = message.get("workflow_id")
        if not workflow_id:
            continue
        workflow = await lock_workflow(conn, workflow_id)
        if workflow is None or workflow["status"] != "running":
            continue
        index = workflow["current_step"]
        step = workflow["steps"][index]
        if step.get("message_uuid") != message["uuid"]:
            continue  # an earlier step reporting late: the workflow has moved on
        if change.status in FAILED:
            await _leave(conn, targets, workflow, change.status, now)
        elif change.status in MEETS[condition_of(step)]:
            step["completed_by"] = change.status
            await _finish(conn, targets, workflow, "completed", now)


async def on_expiry(conn: AsyncConnection, targets: WebhookTargets, timer: dict[str, Any], now: float) -> None:
    """A step's expiry timer fired: fail over unless the step already met its condition
    or was left."""
    payload = timer["payload"]
    workflow = await lock_workflow(conn, payload["workflow_id"])
    if workflow is None or workflow["status"] != "running" or workflow["current_step"] != payload["step"]:
        return
    step = workflow["steps"][payload["step"]]
    current = (await step_statuses(conn, [step])).get(step["message_uuid"], {}).get("status")
    if current in MEETS[condition_of(step)]:
        step["completed_by"] = current
        await _finish(conn, targets, workflow, "completed", now)
        return
    await _leave(conn, targets, workflow, "expired", now)


async def _move(conn: AsyncConnection, workflow: dict[str, Any], from_step: int, now: float) -> bool:
    result = await conn.execute(
        update(workflows)
        .where(workflows.c.id == workflow["id"], workflows.c.current_step == from_step, workflows.c.status == "running")
        .values(status=workflow["status"], current_step=workflow["current_step"], steps=workflow["steps"], updated_at=now)
    )
    if result.rowcount != 1:
        log.warning("workflow %s: step %d was already left", workflow["id"], from_step)
        return False
    return True


async def _leave(conn: AsyncConnection, targets: WebhookTargets, workflow: dict[str, Any], reason: str, now: float) -> None:
    index = workflow["current_step"]
    workflow["steps"][index]["left"] = {"reason": reason, "at": now}
    if index + 1 >= len(workflow["steps"]):
        await _finish(conn, targets, workflow, "error", now)
        return
    _, rows = step_rows(workflow, index + 1, now)
    workflow["current_step"] = index + 1
    if await _move(conn, workflow, index, now):
        await insert_rows(conn, rows)


async def _finish(conn: AsyncConnection, targets: WebhookTargets, workflow: dict[str, Any], status: str, now: float) -> None:
    workflow["status"] = status
    if await _move(conn, workflow, workflow["current_step"], now) and workflow["source"] in REPORTED:
        await enqueue_workflow_report(conn, targets, workflow, await step_statuses(conn, workflow["steps"]), now)

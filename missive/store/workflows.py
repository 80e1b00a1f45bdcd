"""Workflow rows: what accepting a workflow writes, and reading one back."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from missive.ids import time_ordered_id
from missive.store.messages import Scope, new_message_rows
from missive.store.tables import messages, timers, workflows


def expiry_timer(workflow_id: str, step: int, message_uuid: str, due_at: float) -> dict[str, Any]:
    """The durable timer that fails a step over when its condition is not met in time.
    (No `id`: the database numbers timers.)"""
    return {
        "kind": "workflow",
        "message_uuid": message_uuid,
        "due_at": due_at,
        "payload": {"workflow_id": workflow_id, "step": step},
        "claimed_until": None,
    }


def step_rows(
    workflow: dict[str, Any], index: int, now: float
) -> tuple[str, dict[Table, list[dict[str, Any]]]]:
    """The rows that start step `index`: its message, outbox entry and expiry timer.
    Marks the step started in `workflow["steps"]` (the caller writes the workflow)."""
    step = workflow["steps"][index]
    message_uuid, rows = new_message_rows(step["message"], workflow["account_id"], workflow["application_id"], now)
    rows[messages][0]["workflow_id"] = workflow["id"]
    step["message_uuid"] = message_uuid
    step["started_at"] = now
    if step["failover"]:
        rows[timers] = [expiry_timer(workflow["id"], index, message_uuid, now + step["failover"]["expiry_time"])]
    return message_uuid, rows


def new_workflow_rows(
    steps: list[dict[str, Any]], source: str, account_id: str, application_id: str | None, now: float
) -> tuple[str, str, dict[Table, list[dict[str, Any]]]]:
    """(workflow id, first message uuid, rows) for an accepted workflow: the workflow and
    its first step's message, outbox entry and timer, written in one transaction."""
    workflow = {
        "id": time_ordered_id(),
        "account_id": account_id,
        "application_id": application_id,
        "template": "failover",
        "source": source,
        "status": "running",
        "current_step": 0,
        "steps": [
            {"message": s["message"], "failover": s["failover"], "message_uuid": None, "started_at": None}
            for s in steps
        ],
        "created_at": now,
        "updated_at": now,
    }
    message_uuid, rows = step_rows(workflow, 0, now)
    rows[workflows] = [workflow]
    return workflow["id"], message_uuid, rows


async def insert_rows(conn: AsyncConnection, rows: dict[Table, list[dict[str, Any]]]) -> None:
    for table in (workflows, messages, *(t for t in rows if t not in (workflows, messages))):
        if rows.get(table):
            await conn.execute(table.insert(), rows[table])


async def lock_workflow(conn: AsyncConnection, workflow_id: str) -> dict[str, Any] | None:
    """The workflow row, locked until the transaction ends on PostgreSQL (SQLite's
    writer lock already serialises the transactions that move workflows)."""
    query = select(workflows).where(workflows.c.id == workflow_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return dict(row._mapping) if row else None


async def step_statuses(conn: AsyncConnection, steps: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    uuids = [s["message_uuid"] for s in steps if s.get("message_uuid")]
    if not uuids:
        return {}
    rows = await conn.execute(
        select(messages.c.uuid, messages.c.status, messages.c.channel).where(messages.c.uuid.in_(uuids))
    )
    return {r.uuid: {"status": r.status, "channel": r.channel} for r in rows}


async def get_workflow(
    engine: AsyncEngine, scope: Scope, workflow_id: str
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]] | None:
    """The workflow and the current status of each step's message."""
    query = select(workflows).where(workflows.c.id == workflow_id, workflows.c.account_id == scope.account_id)
    if scope.application_id is not None:
        query = query.where(workflows.c.application_id == scope.application_id)
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
        if row is None:
            return None
        workflow = dict(row._mapping)
        return workflow, await step_statuses(conn, workflow["steps"])

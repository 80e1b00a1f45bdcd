"""The Workflows API: failover workflows, and reading one back (ours).

    POST /v0.1/dispatch, /beta/workflows   {"template": "failover", "workflow": [...]}
                                           -> 202 {"dispatch_uuid"}
    GET  /v1/workflows/{id}                -> the steps, their messages, statuses, and
                                              why each step was left
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from missive.api.body import read_json
from missive.api.errors import not_found
from missive.api.messages import store_accepted
from missive.api.responses import json_response
from missive.api.services import services
from missive.clock import iso
from missive.schemas.workflows import validate_dispatch
from missive.store.messages import Scope
from missive.store.workflows import get_workflow, new_workflow_rows
from missive.url_safety import policy_for


async def create_workflow(request: Request) -> Response:
    svc = services(request)
    principal = await svc.auth.authenticate(request)
    steps = validate_dispatch(await read_json(request, svc.settings.max_body_bytes), policy_for(svc.settings))
    workflow_id, _, rows = new_workflow_rows(steps, "dispatch", principal.account_id, principal.application_id, svc.clock())
    await store_accepted(svc, rows)
    return json_response({"dispatch_uuid": workflow_id}, 202)


def _step_view(index: int, step: dict[str, Any], statuses: dict[str, dict[str, Any]]) -> dict[str, Any]:
    message = step["message"]
    view: dict[str, Any] = {"step": index, "channel": message["channel"], "to": message["to"]}
    if step.get("failover"):
        view["failover"] = step["failover"]
    if step.get("message_uuid"):
        view["message_uuid"] = step["message_uuid"]
        view["status"] = statuses.get(step["message_uuid"], {}).get("status")
        view["started_at"] = iso(step["started_at"])
    else:
        view["status"] = "not_sent"
    if step.get("left"):
        view["left"] = {"reason": step["left"]["reason"], "at": iso(step["left"]["at"])}
    if step.get("completed_by"):
        view["completed_by"] = step["completed_by"]
    return view


async def read_workflow(request: Request) -> Response:
    svc = services(request)
    principal = await svc.auth.authenticate(request)
    workflow_id = request.path_params["workflow_id"]
    found = await get_workflow(svc.engine, Scope(principal.account_id, principal.application_id), workflow_id)
    if found is None:
        raise not_found("Workflow", workflow_id)
    workflow, statuses = found
    return json_response(
        {
            "workflow_id": workflow["id"],
            "template": workflow["template"],
            "status": workflow["status"],
            "current_step": workflow["current_step"],
            "timestamp": iso(workflow["created_at"]),
            "updated_at": iso(workflow["updated_at"]),
            "steps": [_step_view(i, step, statuses) for i, step in enumerate(workflow["steps"])],
        }
    )


routes = [
    Route("/v0.1/dispatch", create_workflow, methods=["POST"]),
    Route("/beta/workflows", create_workflow, methods=["POST"]),
    Route("/v1/workflows/{workflow_id}", read_workflow, methods=["GET"]),
]

"""The OpenAPI document, built from the same pydantic models that validate requests."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import TypeAdapter

from missive import __version__
from missive.api import health
from missive.api.applications import ApplicationRequest
from missive.api.channels import LinkRequest, LinkUpdate
from missive.api.numbers import NumberRequest, NumberUpdate
from missive.api.openapi_examples import add_request_examples
from missive.api.openapi_responses import (
    ACCEPTED,
    APPLICATION,
    APPLICATION_PAGE,
    CHANNEL_LINK,
    HISTORY_ENTRY,
    MESSAGE,
    MESSAGE_PAGE,
    PROBLEM,
)
from missive.api.sandbox import SandboxInbound
from missive.schemas.beta import BetaMessage
from missive.schemas.v1 import V1Message
from missive.schemas.workflows import MAX_STEPS, FailoverRule

REF = "#/components/schemas/{model}"

def _schema(components: dict[str, Any], name: str, target: Any) -> dict[str, str]:
    adapter = target if isinstance(target, TypeAdapter) else TypeAdapter(target)
    schema = adapter.json_schema(ref_template=REF, by_alias=True)
    components.update(schema.pop("$defs", {}))
    components[name] = schema
    return {"$ref": REF.format(model=name)}


def _json(ref: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": ref}}


def _responses(success: dict[str, Any], *errors: int) -> dict[str, Any]:
    problem = {"application/problem+json": {"schema": {"$ref": REF.format(model="Problem")}}}
    responses = dict(success)
    for status in (401, *errors):
        responses[str(status)] = {"description": "Problem", "content": problem}
    responses["429"] = {"description": "Over the request rate of these credentials", "content": problem,
                        "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}}}
    # Database faults, on any operation (docs/security.md#faults).
    responses["503"] = {"description": "Unavailable for the moment (the database is locked or unreachable); retry later", "content": problem,
                        "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}}}
    responses["507"] = {"description": "The database's storage is full", "content": problem}
    return responses


def _operation(summary: str, op_id: str, responses: dict[str, Any], body: dict | None = None, params: list | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "operationId": op_id,
        "security": [{"basicAuth": []}, {"bearerAuth": []}],
        "responses": responses,
    }
    if body is not None:
        operation["requestBody"] = {"required": True, "content": _json(body)}
    if params:
        operation["parameters"] = params
    return operation


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _workflow_paths(components: dict[str, Any], paths: dict[str, Any], beta: dict[str, Any], ref: Any) -> None:
    """The Workflows API (failover) and reading a workflow back."""
    rule = _schema(components, "FailoverRule", FailoverRule)
    components["WorkflowRequest"] = {
        "type": "object",
        "required": ["template", "workflow"],
        "properties": {
            "template": {"type": "string", "enum": ["failover"]},
            "workflow": {
                "type": "array", "minItems": 2, "maxItems": MAX_STEPS,
                "description": "Every message but the last carries `failover`.",
                "items": {"allOf": [beta, {"type": "object", "properties": {"failover": rule}}]},
            },
        },
    }
    step = {"type": "object", "properties": {
        "step": {"type": "integer"}, "channel": {"type": "string"}, "to": {"type": "string"},
        "message_uuid": {"type": "string"}, "status": {"type": "string"}, "failover": rule,
        "started_at": {"type": "string", "format": "date-time"},
        "left": {"type": "object", "properties": {"reason": {"type": "string", "enum": ["rejected", "undeliverable", "expired"]},
                                                   "at": {"type": "string", "format": "date-time"}}},
        "completed_by": {"type": "string", "enum": ["delivered", "read"]}}}
    components["Workflow"] = {"type": "object", "properties": {
        "workflow_id": {"type": "string"}, "template": {"type": "string"},
        "status": {"type": "string", "enum": ["running", "completed", "error"]}, "current_step": {"type": "integer"},
        "timestamp": {"type": "string", "format": "date-time"}, "updated_at": {"type": "string", "format": "date-time"},
        "steps": {"type": "array", "items": step}}}
    accepted = {"202": {"description": "Accepted", "content": _json({
        "type": "object", "required": ["dispatch_uuid"], "properties": {"dispatch_uuid": {"type": "string"}}})}}
    create = _operation("Create a failover workflow", "createWorkflow", _responses(accepted, 400, 413, 415, 422, 503),
                        ref("WorkflowRequest"))
    paths["/v0.1/dispatch"] = {"post": create}
    paths["/beta/workflows"] = {"post": {**create, "operationId": "createWorkflowAlias"}}
    paths["/v1/workflows/{workflow_id}"] = {"get": _operation(
        "A workflow: its steps, their messages and statuses, why each step was left", "getWorkflow",
        _responses({"200": {"description": "The workflow", "content": _json(ref("Workflow"))}}, 404),
        params=[_path("workflow_id")])}


def _number_paths(components: dict[str, Any], paths: dict[str, Any], ref: Any) -> None:
    """`/v1/numbers`: which application an SMS number's inbound messages go to."""
    request = _schema(components, "NumberRequest", NumberRequest)
    change = _schema(components, "NumberUpdate", NumberUpdate)
    components["Number"] = {"type": "object", "required": ["number", "application_id", "created_at"], "properties": {
        "number": {"type": "string"}, "application_id": {"type": ["string", "null"]}, "created_at": {"type": "string"}}}
    components["NumberList"] = {"type": "object", "required": ["_embedded"], "properties": {"_embedded": {
        "type": "object", "properties": {"numbers": {"type": "array", "items": ref("Number")}}}}}
    one = {"200": {"description": "The number", "content": _json(ref("Number"))}}
    param = [_path("number")]
    update = _operation("Change the application of a number", "updateNumber", _responses(one, 400, 404, 413, 415, 422), change, param)
    paths["/v1/numbers"] = {
        "post": _operation("Link a number to an application", "createNumber",
                           _responses({"201": {"description": "Created", "content": _json(ref("Number"))}}, 400, 409, 413, 415, 422),
                           request),
        "get": _operation("List numbers", "listNumbers", _responses({"200": {"description": "Numbers", "content": _json(ref("NumberList"))}})),
    }
    paths["/v1/numbers/{number}"] = {
        "get": _operation("Get a number", "getNumber", _responses(one, 404), params=param),
        "patch": update,
        "put": {**update, "operationId": "replaceNumber"},
        "delete": _operation("Unlink a number", "deleteNumber", _responses({"204": {"description": "Removed"}}, 404), params=param),
    }


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    components: dict[str, Any] = {
        "Problem": PROBLEM,
        "MessageAccepted": ACCEPTED,
        "HistoryEntry": HISTORY_ENTRY,
        "Message": MESSAGE,
        "MessagePage": MESSAGE_PAGE,
        "Application": APPLICATION,
        "ApplicationPage": APPLICATION_PAGE,
    }
    v1 = _schema(components, "V1Message", V1Message)
    beta = _schema(components, "BetaMessage", BetaMessage)
    app_request = _schema(components, "ApplicationRequest", ApplicationRequest)
    link_request = _schema(components, "ChannelLinkRequest", LinkRequest)
    link_update = _schema(components, "ChannelLinkUpdate", LinkUpdate)
    sandbox_inbound = _schema(components, "SandboxInbound", SandboxInbound)
    components["ChannelLink"] = CHANNEL_LINK
    components["ChannelLinkList"] = {
        "type": "object",
        "required": ["_embedded"],
        "properties": {"_embedded": {"type": "object", "properties": {"channels": {"type": "array", "items": {"$ref": REF.format(model="ChannelLink")}}}}},
    }

    def ref(name: str) -> dict[str, str]:
        return {"$ref": REF.format(model=name)}

    accepted = {"202": {"description": "Accepted", "content": _json(ref("MessageAccepted"))}}
    send_errors = (400, 413, 415, 422, 503)
    beta_send = _operation("Send a message (beta format)", "sendBetaMessage", _responses(accepted, *send_errors), beta)
    app_ok = {"200": {"description": "The application", "content": _json(ref("Application"))}}
    app_page_params = [
        _query("page_size", {"type": "integer", "minimum": 1, "maximum": 1000}),
        _query("page", {"type": "integer", "minimum": 1}),
    ]
    message_filters = [
        _query("status", {"type": "string", "enum": ["accepted", "submitted", "delivered", "read", "rejected", "undeliverable"]}),
        _query("channel", {"type": "string", "enum": ["sms", "messenger", "viber_service", "mms", "whatsapp"]}),
        _query("to", {"type": "string"}),
        _query("client_ref", {"type": "string"}),
        _query("since", {"type": "string", "format": "date-time"}),
        _query("cursor", {"type": "string"}),
        _query("page_size", {"type": "integer", "minimum": 1, "maximum": 100}),
    ]
    paths = {
        "/v1/messages": {
            "post": _operation("Send a message", "sendMessage", _responses(accepted, *send_errors), {"allOf": [v1, {
                "type": "object", "properties": {"failover": {
                    "type": "array", "minItems": 1, "maxItems": MAX_STEPS - 1, "items": v1,
                    "description": "Sent in order when the previous message is rejected or undeliverable."}}}]}),
            "get": _operation(
                "List messages, newest first",
                "listMessages",
                _responses({"200": {"description": "A page of messages", "content": _json(ref("MessagePage"))}}, 422),
                params=message_filters,
            ),
        },
        "/v1/messages/{message_uuid}": {
            "get": _operation(
                "A message, its status and status history",
                "getMessage",
                _responses({"200": {"description": "The message", "content": _json(ref("Message"))}}, 404),
                params=[_path("message_uuid")],
            )
        },
        "/v0.1/messages": {"post": beta_send},
        "/beta/messages": {"post": {**beta_send, "operationId": "sendBetaMessageAlias"}},
        "/v2/applications": {
            "post": _operation(
                "Create an application",
                "createApplication",
                _responses({"201": {"description": "Created", "content": _json(ref("Application"))}}, 400, 413, 415, 422),
                app_request,
            ),
            "get": _operation(
                "List applications",
                "listApplications",
                _responses({"200": {"description": "A page", "content": _json(ref("ApplicationPage"))}}, 422),
                params=app_page_params,
            ),
        },
        "/v2/applications/{app_id}": {
            "get": _operation("Get an application", "getApplication", _responses(app_ok, 404), params=[_path("app_id")]),
            "put": _operation(
                "Update an application",
                "updateApplication",
                _responses(app_ok, 400, 404, 413, 415, 422),
                app_request,
                params=[_path("app_id")],
            ),
            "delete": _operation(
                "Delete an application",
                "deleteApplication",
                _responses({"204": {"description": "Deleted"}}, 404),
                params=[_path("app_id")],
            ),
        },
    }
    link_ok = {"200": {"description": "The channel link", "content": _json(ref("ChannelLink"))}}
    paths["/v1/channels"] = {
        "post": _operation(
            "Link a provider account to a channel",
            "createChannelLink",
            _responses({"201": {"description": "Created", "content": _json(ref("ChannelLink"))}}, 400, 413, 415, 422),
            link_request,
        ),
        "get": _operation("List channel links", "listChannelLinks", _responses({"200": {"description": "Links", "content": _json(ref("ChannelLinkList"))}})),
    }
    paths["/v1/channels/{link_id}"] = {
        "get": _operation("Get a channel link", "getChannelLink", _responses(link_ok, 404), params=[_path("link_id")]),
        "patch": _operation(
            "Change a channel link (config merged key by key)", "updateChannelLink",
            _responses(link_ok, 400, 404, 413, 415, 422), link_update, params=[_path("link_id")],
        ),
        "delete": _operation(
            "Remove a channel link", "deleteChannelLink", _responses({"204": {"description": "Removed"}}, 404), params=[_path("link_id")]
        ),
    }
    paths["/v1/messages/{message_uuid}"]["patch"] = _operation(
        "Mark an inbound message read (Messenger: the page's mark_seen)",
        "markMessageRead",
        _responses(
            {"200": {"description": "Marked read", "content": _json({
                "type": "object", "required": ["message_uuid", "status"],
                "properties": {"message_uuid": {"type": "string"}, "status": {"type": "string", "enum": ["read"]}},
            })}},
            400, 404, 413, 415, 422, 502, 503,
        ),
        {"type": "object", "required": ["status"], "properties": {"status": {"type": "string", "enum": ["read"]}}},
        params=[_path("message_uuid")],
    )
    paths["/v1/sandbox/inbound"] = {
        "post": _operation(
            "Make the sandbox receive a message from a user",
            "sandboxInbound",
            _responses(accepted, 400, 413, 415, 422),
            sandbox_inbound,
        )
    }
    _workflow_paths(components, paths, beta, ref)
    _number_paths(components, paths, ref)
    paths.update(health.openapi_paths())
    for path, item in paths.items():
        if path.startswith(("/v2/", "/v1/channels", "/v1/numbers")):
            for operation in item.values():
                operation["security"] = [{"basicAuth": []}]
    add_request_examples(paths)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Missive", "version": __version__, "description": "Messages and Workflows APIs, self-hosted."},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "basicAuth": {"type": "http", "scheme": "basic"},
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
    }


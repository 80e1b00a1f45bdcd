"""`GET /v1/messages/{uuid}/logs`: what Missive and the provider said to each other about
a message (observability/exchanges.py), oldest first.

    {"message_uuid": "...", "_embedded": {"logs": [
        {"id": 7, "at": "2026-12-07T15:26:20.123Z", "direction": "out", "protocol": "http",
         "summary": "POST https://graph.facebook.com/v19.0/me/messages",
         "detail": {"method": "POST", "url": "...?access_token=***", "headers": {...}, "body": "..."}}]},
     "_links": {"self": {"href": "/v1/messages/.../logs"}, "message": {"href": "/v1/messages/..."}}}

Basic auth sees its account's messages, a JWT its application's; any other is a 404.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from missive.api.errors import not_found
from missive.api.responses import json_response
from missive.api.services import services
from missive.clock import iso
from missive.store.messages import Scope
from missive.store.provider_logs import for_message


def log_view(row: dict[str, Any]) -> dict[str, Any]:
    try:
        detail = orjson.loads(row["detail"])
    except orjson.JSONDecodeError:
        detail = row["detail"]
    return {"id": row["id"], "at": iso(row["at"]), "direction": row["direction"], "protocol": row["protocol"],
            "summary": row["summary"], "detail": detail}


async def read_logs(request: Request) -> Response:
    svc = services(request)
    principal = await svc.auth.authenticate(request)
    message_uuid = request.path_params["message_uuid"]
    rows = await for_message(svc.engine, Scope(principal.account_id, principal.application_id), message_uuid)
    if rows is None:
        raise not_found("Message", message_uuid)
    return json_response({
        "message_uuid": message_uuid,
        "_embedded": {"logs": [log_view(r) for r in rows]},
        "_links": {"self": {"href": f"/v1/messages/{message_uuid}/logs"},
                   "message": {"href": f"/v1/messages/{message_uuid}"}},
    })


routes = [Route("/v1/messages/{message_uuid}/logs", read_logs, methods=["GET"])]

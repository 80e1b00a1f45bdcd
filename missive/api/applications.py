"""The Vonage Application API (`/v2/applications`), enough for the official SDKs' client.

    {"name": "My app", "keys": {"public_key": "-----BEGIN PUBLIC KEY-----..."},
     "capabilities": {"messages": {"webhooks": {
         "status_url": {"address": "https://example.com/status", "http_method": "POST"},
         "inbound_url": {"address": "https://example.com/inbound", "http_method": "POST"}}}}}

Missive uses the messages capability; the rest of the document is kept and returned.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from missive import credentials
from missive.api.body import read_json
from missive.api.errors import InvalidParameter, invalid_params, not_found
from missive.api.responses import json_response
from missive.api.services import services
from missive.schemas.common import Url, invalid_parameters, url_context
from missive.store import applications as store
from missive.store.applications import ApplicationFields
from missive.url_safety import UrlPolicy, policy_for


class WebhookAddress(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    address: Url
    http_method: Literal["GET", "POST"] = "POST"


class MessagesWebhooks(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    inbound_url: WebhookAddress | None = None
    status_url: WebhookAddress | None = None


class MessagesCapability(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    webhooks: MessagesWebhooks | None = None


class Capabilities(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    messages: MessagesCapability | None = None


class Keys(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    public_key: str | None = Field(None, max_length=10_000)


class ApplicationRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    name: str = Field(min_length=1, max_length=200)
    capabilities: Capabilities | None = None
    keys: Keys | None = None


def _parse(data: object, policy: UrlPolicy) -> ApplicationRequest:
    if not isinstance(data, dict):
        raise invalid_params([InvalidParameter("body", "must be a JSON object")])
    try:
        request = ApplicationRequest.model_validate(data, context=url_context(policy))
    except ValidationError as exc:
        raise invalid_params(invalid_parameters(exc)) from None
    if request.keys and request.keys.public_key:
        try:
            credentials.load_public_key(request.keys.public_key)
        except ValueError as exc:
            raise invalid_params([InvalidParameter("keys.public_key", str(exc))]) from None
    return request


def _fields(request: ApplicationRequest, public_key: str) -> ApplicationFields:
    capabilities = request.capabilities.model_dump(exclude_none=True) if request.capabilities else {}
    hooks = request.capabilities.messages.webhooks if request.capabilities and request.capabilities.messages else None
    status = hooks.status_url if hooks else None
    inbound = hooks.inbound_url if hooks else None
    extra = {k: v for k, v in (request.model_extra or {}).items() if k in ("privacy",)}
    extra["capabilities"] = capabilities
    return ApplicationFields(
        name=request.name,
        public_key=public_key,
        status_url=status.address if status else None,
        status_method=status.http_method if status else "POST",
        inbound_url=inbound.address if inbound else None,
        inbound_method=inbound.http_method if inbound else "POST",
        extra=extra,
    )


def application_view(row: dict, private_key: str | None = None) -> dict[str, Any]:
    extra = row["extra"] or {}
    capabilities = dict(extra.get("capabilities") or {})
    webhooks = {}
    if row["status_url"]:
        webhooks["status_url"] = {"address": row["status_url"], "http_method": row["status_method"]}
    if row["inbound_url"]:
        webhooks["inbound_url"] = {"address": row["inbound_url"], "http_method": row["inbound_method"]}
    messages = dict(capabilities.get("messages") or {})
    messages["webhooks"] = webhooks
    capabilities["messages"] = messages
    keys = {"public_key": row["public_key"]}
    if private_key:
        keys["private_key"] = private_key
    view = {"id": row["id"], "name": row["name"], "capabilities": capabilities, "keys": keys}
    if "privacy" in extra:
        view["privacy"] = extra["privacy"]
    view["_links"] = {"self": {"href": f"/v2/applications/{row['id']}"}}
    return view



async def create(request: Request) -> Response:
    svc = services(request)
    principal = await svc.auth.authenticate(request, allow_jwt=False)
    parsed = _parse(await read_json(request, svc.settings.max_body_bytes), policy_for(svc.settings))
    private_key = None
    public_key = parsed.keys.public_key if parsed.keys and parsed.keys.public_key else None
    if public_key is None:
        pair = credentials.new_rsa_keypair()
        public_key, private_key = pair.public_pem, pair.private_pem
    row = await store.create_application(svc.engine, principal.account_id, _fields(parsed, public_key))
    return json_response(application_view(row, private_key), 201)


def _page_param(request: Request, name: str, default: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= maximum:
        raise invalid_params([InvalidParameter(name, f"must be an integer from 1 to {maximum}")])
    return int(raw)


async def list_all(request: Request) -> Response:
    svc = services(request)
    principal = await svc.auth.authenticate(request, allow_jwt=False)
    page_size = _page_param(request, "page_size", 100, 1000)
    page = _page_param(request, "page", 1, 1_000_000)
    rows, total = await store.list_applications(svc.engine, principal.account_id, page, page_size)
    total_pages = max(1, -(-total // page_size))
    href = "/v2/applications?page_size={}&page={}".format
    links = {"self": {"href": href(page_size, page)}, "first": {"href": href(page_size, 1)}, "last": {"href": href(page_size, total_pages)}}
    if page < total_pages:
        links["next"] = {"href": href(page_size, page + 1)}
    if page > 1:
        links["prev"] = {"href": href(page_size, page - 1)}
    return json_response(
        {
            "page_size": page_size,
            "page": page,
            "total_items": total,
            "total_pages": total_pages,
            "_embedded": {"applications": [application_view(r) for r in rows]},
            "_links": links,
        }
    )


async def read(request: Request) -> Response:
    svc = services(request)
    principal = await svc.auth.authenticate(request, allow_jwt=False)
    app_id = request.path_params["app_id"]
    row = await store.get_application(svc.engine, app_id, principal.account_id)
    if row is None:
        raise not_found("Application", app_id)
    return json_response(application_view(row))


async def replace(request: Request) -> Response:
    svc = services(request)
    principal = await svc.auth.authenticate(request, allow_jwt=False)
    app_id = request.path_params["app_id"]
    existing = await store.get_application(svc.engine, app_id, principal.account_id)
    if existing is None:
        raise not_found("Application", app_id)
    parsed = _parse(await read_json(request, svc.settings.max_body_bytes), policy_for(svc.settings))
    public_key = parsed.keys.public_key if parsed.keys and parsed.keys.public_key else existing["public_key"]
    row = await store.update_application(svc.engine, app_id, principal.account_id, _fields(parsed, public_key))
    if row is None:
        raise not_found("Application", app_id)
    return json_response(application_view(row))


async def remove(request: Request) -> Response:
    svc = services(request)
    principal = await svc.auth.authenticate(request, allow_jwt=False)
    app_id = request.path_params["app_id"]
    if not await store.delete_application(svc.engine, app_id, principal.account_id):
        raise not_found("Application", app_id)
    return Response(status_code=204)


routes = [
    Route("/v2/applications", create, methods=["POST"]),
    Route("/v2/applications", list_all, methods=["GET"]),
    Route("/v2/applications/{app_id}", read, methods=["GET"]),
    Route("/v2/applications/{app_id}", replace, methods=["PUT"]),
    Route("/v2/applications/{app_id}", remove, methods=["DELETE"]),
]

"""`/v1/channels` (ours): link provider accounts to channels. Account Basic auth.

    POST /v1/channels {"kind": "sandbox", "channel": "sms", "name": "test",
                       "config": {"delivered_after": 0.5}, "tps": 50, "default": true}
    PATCH /v1/channels/ID {"tps": null, "config": {"read_after": 2}}

Credentials are stored with the link and never returned: `config` in answers leaves
out the keys the channel kind declares secret.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from missive.api.body import read_json
from missive.api.errors import InvalidParameter, invalid_params, not_found
from missive.api.responses import json_response
from missive.api.services import services
from missive.channels.registry import CARRIES, KINDS, config_model, secret_keys
from missive.clock import iso
from missive.config import Settings
from missive.schemas.common import invalid_parameters
from missive.store import applications as app_store
from missive.store import links as store


class LinkRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    kind: str
    channel: str
    name: str = Field(min_length=1, max_length=100)
    application_id: str | None = None
    tps: float | None = Field(None, gt=0, le=100_000)
    default: bool = False
    config: dict[str, Any] = Field(default_factory=dict)


class LinkUpdate(BaseModel):
    """PATCH: only what is given changes; `config` is merged into the stored one key by
    key (a key set to null is removed, a secret left out keeps its stored value)."""

    model_config = ConfigDict(strict=True, extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=100)
    application_id: str | None = None
    tps: float | None = Field(None, gt=0, le=100_000)
    default: bool | None = None
    config: dict[str, Any] | None = None

    @field_validator("name", "default", "config", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        """May be left out, not cleared (None only as the default: left out)."""
        if value is None:
            raise ValueError("cannot be null")
        return value


FIXED = ("kind", "channel")


class Price(BaseModel):
    """A link setting of every kind: what a message it carries costs, reported in the
    status webhooks' `usage` ({"currency", "price"}). `per` part: each SMS part (other
    channels send one part a message); `per` message: the message whatever its length.
    The amount is a string, as the vendor writes prices, so that no float rounds it."""

    model_config = ConfigDict(strict=True, extra="forbid")
    amount: str = Field(pattern=r"^\d{1,9}(\.\d{1,10})?$")
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    per: Literal["part", "message"] = "part"


def _with_price(kind: str, raw: dict[str, Any]) -> tuple[dict[str, Any], list[InvalidParameter]]:
    """`raw` checked with the kind's config model, and its `price` with Price."""
    config: dict[str, Any] = {}
    errors: list[InvalidParameter] = []
    try:
        config = config_model(kind).model_validate({k: v for k, v in raw.items() if k != "price"}).model_dump(exclude_none=True)
    except ValidationError as exc:
        errors += [InvalidParameter(f"config.{p.name}", p.reason) for p in invalid_parameters(exc)]
    if raw.get("price") is not None:
        try:
            config["price"] = Price.model_validate(raw["price"]).model_dump()
        except ValidationError as exc:
            errors += [InvalidParameter("config.price" + ("" if p.name == "body" else f".{p.name}"), p.reason)
                       for p in invalid_parameters(exc)]
    return config, errors


def link_view(row: dict[str, Any]) -> dict[str, Any]:
    hidden = set(secret_keys(row["kind"]))
    return {
        "id": row["id"],
        "kind": row["kind"],
        "channel": row["channel"],
        "name": row["name"],
        "application_id": row["application_id"],
        "tps": row["tps"],
        "default": bool(row["is_default"]),
        "config": {k: v for k, v in row["config"].items() if k not in hidden and k != "log"},
        "created_at": iso(row["created_at"]),
    }


def _kind_errors(data: dict[str, Any]) -> tuple[list[InvalidParameter], dict[str, Any]]:
    """Kind, channel and the kind's config, checked on the raw body so that they are
    reported together with the field errors."""
    kind, channel = data.get("kind"), data.get("channel")
    if not isinstance(kind, str) or kind not in KINDS:
        return [InvalidParameter("kind", f"must be one of {', '.join(KINDS)}")], {}
    errors = []
    if channel not in CARRIES[kind]:
        errors.append(InvalidParameter("channel", f"must be one of {', '.join(CARRIES[kind])}"))
    config: dict[str, Any] = {}
    raw = data.get("config", {})
    if isinstance(raw, dict):
        config, config_errors = _with_price(kind, raw)
        errors += config_errors
    return errors, config


def parse_link(data: object) -> tuple[LinkRequest, dict[str, Any]]:
    if not isinstance(data, dict):
        raise invalid_params([InvalidParameter("body", "must be a JSON object")])
    errors: list[InvalidParameter] = []
    request = None
    try:
        request = LinkRequest.model_validate(data)
    except ValidationError as exc:
        errors = invalid_parameters(exc)
    kind_errors, config = _kind_errors(data)
    named = {e.name for e in errors}
    errors += [e for e in kind_errors if e.name not in named]
    if errors or request is None:
        raise invalid_params(errors)
    return request, config


def parse_update(data: object) -> LinkUpdate:
    if not isinstance(data, dict):
        raise invalid_params([InvalidParameter("body", "must be a JSON object")])
    errors = [InvalidParameter(k, "cannot be changed: remove the link and add another") for k in FIXED if k in data]
    try:
        update = LinkUpdate.model_validate({k: v for k, v in data.items() if k not in FIXED})
    except ValidationError as exc:
        errors += invalid_parameters(exc)
    if errors:
        raise invalid_params(errors)
    return update


def merged_config(kind: str, stored: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The stored config with `changes` applied, checked with the kind's model."""
    merged = {k: v for k, v in {**stored, **changes}.items() if v is not None}
    config, errors = _with_price(kind, merged)
    if errors:
        raise invalid_params(errors)
    return config


async def create(request: Request) -> Response:
    svc = services(request)
    principal = await svc.auth.authenticate(request, allow_jwt=False)
    parsed, config = parse_link(await read_json(request, svc.settings.max_body_bytes))
    if parsed.application_id and await app_store.get_application(svc.engine, parsed.application_id, principal.account_id) is None:
        raise invalid_params([InvalidParameter("application_id", "is not an application of this account")])
    row = await store.create_link(
        svc.engine, principal.account_id, parsed.kind, parsed.channel, parsed.name, config,
        parsed.application_id, parsed.tps, parsed.default,
    )
    view = link_view(row)
    if row["kind"] == "viber" and svc.settings.public_url:
        view["webhook"] = await _register_viber(svc.settings, row)
    return json_response(view, 201)


async def _register_viber(settings: Settings, row: dict[str, Any]) -> dict[str, Any]:
    """Viber sends callbacks only to a URL registered with set_webhook; the link is kept
    even when Viber refuses, and the answer says why."""
    from missive.api.inbound_viber import register_webhook
    from missive.channels.base import SendError

    try:
        return {"url": await register_webhook(settings, row), "registered": True}
    except (SendError, ValueError) as exc:
        return {"registered": False, "error": str(exc)}


async def list_all(request: Request) -> Response:
    svc = services(request)
    principal = await svc.auth.authenticate(request, allow_jwt=False)
    rows = await store.list_links(svc.engine, principal.account_id)
    return json_response({"_embedded": {"channels": [link_view(r) for r in rows]}})


async def read(request: Request) -> Response:
    svc = services(request)
    principal = await svc.auth.authenticate(request, allow_jwt=False)
    row = await store.get_link(svc.engine, principal.account_id, request.path_params["link_id"])
    if row is None:
        raise not_found("Channel link", request.path_params["link_id"])
    return json_response(link_view(row))


async def change(request: Request) -> Response:
    svc = services(request)
    principal = await svc.auth.authenticate(request, allow_jwt=False)
    parsed = parse_update(await read_json(request, svc.settings.max_body_bytes))
    given = parsed.model_fields_set
    if parsed.application_id and await app_store.get_application(svc.engine, parsed.application_id, principal.account_id) is None:
        raise invalid_params([InvalidParameter("application_id", "is not an application of this account")])
    fields: dict[str, Any] = {k: getattr(parsed, k) for k in ("name", "application_id", "tps") if k in given}
    if "default" in given:
        fields["is_default"] = 1 if parsed.default else 0

    def merge(row: dict[str, Any]) -> dict[str, Any]:
        return merged_config(row["kind"], row["config"], parsed.config or {})

    link_id = request.path_params["link_id"]
    found = await store.update_link(svc.engine, principal.account_id, link_id, fields, merge if "config" in given else None)
    if found is None:
        raise not_found("Channel link", link_id)
    before, row = found
    view = link_view(row)
    if row["kind"] == "viber" and svc.settings.public_url and any(
        before["config"].get(k) != row["config"].get(k) for k in ("service_id", "auth_token")
    ):
        view["webhook"] = await _register_viber(svc.settings, row)
    return json_response(view)


async def remove(request: Request) -> Response:
    svc = services(request)
    principal = await svc.auth.authenticate(request, allow_jwt=False)
    if not await store.delete_link(svc.engine, principal.account_id, request.path_params["link_id"]):
        raise not_found("Channel link", request.path_params["link_id"])
    return Response(status_code=204)


routes = [
    Route("/v1/channels", create, methods=["POST"]),
    Route("/v1/channels", list_all, methods=["GET"]),
    Route("/v1/channels/{link_id}", read, methods=["GET"]),
    Route("/v1/channels/{link_id}", change, methods=["PATCH"]),
    Route("/v1/channels/{link_id}", remove, methods=["DELETE"]),
]

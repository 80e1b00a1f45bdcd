"""Channels: links with their state, and the forms that add, change and remove links,
numbers and applications. The checks are the API's own (api/channels.py,
api/applications.py, store/numbers.py): a form is turned into the body the API takes."""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from missive import credentials
from missive.api import applications as app_api
from missive.api import channels as link_api
from missive.api.errors import InvalidParameter, ProblemError
from missive.api.services import Services
from missive.channels.registry import CARRIES, KINDS, config_model, secret_keys
from missive.console import queries
from missive.console.session import Session
from missive.console.web import action, not_found, page, redirect, render
from missive.store import applications as app_store
from missive.store import links as link_store
from missive.store import numbers as number_store
from missive.url_safety import policy_for


def _kinds() -> list[dict[str, Any]]:
    """Each kind, the channels it carries and its config keys (for the forms' help)."""
    out = []
    for kind in KINDS:
        fields = config_model(kind).model_fields
        keys = [f"{name}{'' if f.is_required() else '?'}" for name, f in fields.items()]
        out.append({"kind": kind, "carries": CARRIES[kind], "keys": keys, "secrets": secret_keys(kind)})
    return out


def _channel_names() -> list[str]:
    return sorted({c for carried in CARRIES.values() for c in carried})


def _config(text: str) -> tuple[Any, list[InvalidParameter]]:
    if not text.strip():
        return {}, []
    try:
        return json.loads(text), []
    except ValueError as exc:
        return None, [InvalidParameter("config", f"is not JSON: {exc}")]


def _tps(text: str) -> Any:
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return text  # the API's model says why it is not a number


def _errors(exc: ProblemError) -> list[InvalidParameter]:
    return exc.invalid_parameters or [InvalidParameter("form", exc.detail)]


async def _channels_page(request: Request, svc: Services, session: Session, status: int = 200,
                         **extra: Any) -> Response:
    account_id = session.account_id
    links = await link_store.list_links(svc.engine, account_id)
    now = time.time()
    states = await queries.link_states(svc.engine, account_id, [link["id"] for link in links], now)
    queue = await queries.queue_state(svc.engine, account_id)
    apps, _ = await app_store.list_applications(svc.engine, account_id, 1, 1000)
    return render(request, "channels.html", {
        "links": [{**link_api.link_view(link), **states[link["id"]]} for link in links],
        "queue": queue, "numbers": await number_store.list_numbers(svc.engine, account_id),
        "applications": apps, "kinds": _kinds(), "channel_names": _channel_names(), "now": now,
        "form": {}, "errors": [], "app_errors": [], "number_errors": [], **extra,
    }, status, session)


@page
async def channels(request: Request, svc: Services, session: Session) -> Response:
    return await _channels_page(request, svc, session)


@action
async def add_link(request: Request, svc: Services, session: Session, form: dict[str, str]) -> Response:
    config, errors = _config(form.get("config", ""))
    data: dict[str, Any] = {"kind": form.get("kind", ""), "channel": form.get("channel", ""),
                            "name": form.get("name", ""), "default": form.get("default") == "on",
                            "config": config if config is not None else {}}
    if form.get("application_id"):
        data["application_id"] = form["application_id"]
    if form.get("tps", "").strip():
        data["tps"] = _tps(form["tps"])
    parsed, checked = None, {}
    try:
        parsed, checked = link_api.parse_link(data)
    except ProblemError as exc:
        errors += _errors(exc)
    if parsed is not None and parsed.application_id and await app_store.get_application(
            svc.engine, parsed.application_id, session.account_id) is None:
        errors.append(InvalidParameter("application_id", "is not an application of this account"))
    if errors or parsed is None:
        return await _channels_page(request, svc, session, 422, form=form, errors=errors)
    row = await link_store.create_link(svc.engine, session.account_id, parsed.kind, parsed.channel, parsed.name,
                                       checked, parsed.application_id, parsed.tps, parsed.default)
    if row["kind"] == "viber" and svc.settings.public_url:
        await link_api._register_viber(svc.settings, row)
    return redirect(f"/console/channels/{row['id']}?notice=link-added")


async def _link_page(request: Request, svc: Services, session: Session, row: dict[str, Any], status: int = 200,
                     **extra: Any) -> Response:
    view = link_api.link_view(row)
    states = await queries.link_states(svc.engine, session.account_id, [row["id"]], time.time())
    apps, _ = await app_store.list_applications(svc.engine, session.account_id, 1, 1000)
    return render(request, "link.html", {
        "link": {**view, **states[row["id"]]}, "applications": apps, "secrets": secret_keys(row["kind"]),
        "config_text": json.dumps(view["config"], indent=2, sort_keys=True), "errors": [], "now": time.time(), **extra,
    }, status, session)


@page
async def link_page(request: Request, svc: Services, session: Session) -> Response:
    row = await link_store.get_link(svc.engine, session.account_id, request.path_params["link_id"])
    if row is None:
        return not_found(request, session, "link")
    return await _link_page(request, svc, session, row)


@action
async def change_link(request: Request, svc: Services, session: Session, form: dict[str, str]) -> Response:
    link_id = request.path_params["link_id"]
    row = await link_store.get_link(svc.engine, session.account_id, link_id)
    if row is None:
        return not_found(request, session, "link")
    config, errors = _config(form.get("config", ""))
    data: dict[str, Any] = {"name": form.get("name", ""), "application_id": form.get("application_id") or None,
                            "tps": _tps(form.get("tps", "")), "default": form.get("default") == "on",
                            "config": config if config is not None else {}}
    try:
        parsed = link_api.parse_update(data)
        if parsed.application_id and await app_store.get_application(
                svc.engine, parsed.application_id, session.account_id) is None:
            errors.append(InvalidParameter("application_id", "is not an application of this account"))
        if not errors:
            fields = {"name": parsed.name, "application_id": parsed.application_id, "tps": parsed.tps,
                      "is_default": 1 if parsed.default else 0}
            changes = parsed.config or {}
            found = await link_store.update_link(
                svc.engine, session.account_id, link_id, fields,
                lambda stored: link_api.merged_config(stored["kind"], stored["config"], changes))
            if found is None:
                return not_found(request, session, "link")
            before, after = found
            if after["kind"] == "viber" and svc.settings.public_url and any(
                    before["config"].get(k) != after["config"].get(k) for k in ("service_id", "auth_token")):
                await link_api._register_viber(svc.settings, after)
    except ProblemError as exc:
        errors += _errors(exc)
    if errors:
        return await _link_page(request, svc, session, row, 422, errors=errors, config_text=form.get("config", ""))
    return redirect(f"/console/channels/{link_id}?notice=link-changed")


@action
async def remove_link(request: Request, svc: Services, session: Session, form: dict[str, str]) -> Response:
    if not await link_store.delete_link(svc.engine, session.account_id, request.path_params["link_id"]):
        return not_found(request, session, "link")
    return redirect("/console/channels?notice=link-removed")


@action
async def add_number(request: Request, svc: Services, session: Session, form: dict[str, str]) -> Response:
    try:
        await number_store.add_number(svc.engine, session.account_id, form.get("number", ""),
                                      form.get("application_id") or None)
    except (ValueError, number_store.NumberTaken, number_store.UnknownApplication) as exc:
        name = "application_id" if isinstance(exc, number_store.UnknownApplication) else "number"
        return await _channels_page(request, svc, session, 422, number_errors=[InvalidParameter(name, str(exc))])
    return redirect("/console/channels?notice=number-added#numbers")


@action
async def remove_number(request: Request, svc: Services, session: Session, form: dict[str, str]) -> Response:
    if not await number_store.remove_number(svc.engine, session.account_id, request.path_params["number"]):
        return not_found(request, session, "number")
    return redirect("/console/channels?notice=number-removed#numbers")


@action
async def add_application(request: Request, svc: Services, session: Session, form: dict[str, str]) -> Response:
    hooks = {name: {"address": form[name].strip(), "http_method": "POST"}
             for name in ("status_url", "inbound_url") if form.get(name, "").strip()}
    data: dict[str, Any] = {"name": form.get("name", ""), "capabilities": {"messages": {"webhooks": hooks}}}
    if form.get("public_key", "").strip():
        data["keys"] = {"public_key": form["public_key"].strip()}
    try:
        parsed = app_api._parse(data, policy_for(svc.settings))
    except ProblemError as exc:
        return await _channels_page(request, svc, session, 422, app_errors=_errors(exc))
    private_key = None
    public_key = parsed.keys.public_key if parsed.keys and parsed.keys.public_key else None
    if public_key is None:
        pair = credentials.new_rsa_keypair()
        public_key, private_key = pair.public_pem, pair.private_pem
    row = await app_store.create_application(svc.engine, session.account_id, app_api._fields(parsed, public_key))
    # Shown once, in this answer (not stored, not cached: no-store), never again.
    return render(request, "application_created.html", {"app": row, "private_key": private_key}, 201, session)

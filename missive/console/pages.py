"""Sign-in and out, the overview, the message list and a message's page."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response

from missive import credentials
from missive.api.errors import ProblemError
from missive.api.messages import STATUSES
from missive.api.services import Services, services
from missive.console import queries
from missive.console import session as sessions
from missive.console.charts import chart
from missive.console.session import Session
from missive.console.web import action, not_found, page, read_form, redirect, render, safe_next
from missive.schemas.v1 import SUPPORTED_CHANNELS
from missive.store import links as link_store
from missive.store.accounts import credentials_of
from missive.store.applications import list_applications
from missive.store.messages import Scope, get_message

PAGE_SIZE = 50
HOURS = (1, 3, 6, 24)


# -- signing in and out ------------------------------------------------------------------


async def sign_in_form(request: Request) -> Response:
    svc = services(request)
    if await sessions.current(svc.engine, request) is not None:
        return redirect(safe_next(request.query_params.get("next")))
    return _sign_in_page(request, "", None, 200)


def _sign_in_page(request: Request, api_key: str, error: str | None, status: int, next_: str | None = None) -> Response:
    token = sessions.signin_token(request)
    target = safe_next(next_ or request.query_params.get("next"))
    response = render(request, "signin.html", {"api_key": api_key, "error": error, "csrf": token, "next": target},
                      status)
    sessions.keep_signin_token(request, response, token)
    return response


async def sign_in(request: Request) -> Response:
    svc = services(request)
    form = await read_form(request)
    api_key, api_secret = form.get("api_key", "").strip(), form.get("api_secret", "")
    if not sessions.signin_token_ok(request, form.get("csrf", "")):
        return _sign_in_page(request, api_key, "The sign-in form had expired: please try again.", 403, form.get("next"))
    try:
        principal = await svc.auth.basic(api_key, api_secret)
    except ProblemError:
        return _sign_in_page(request, api_key, "Those credentials were not accepted.", 401, form.get("next"))
    found = await credentials_of(svc.engine, api_key)
    used = next((h for salt, h in (found.secrets if found else ()) if credentials.secret_matches(salt, api_secret, h)), None)
    if used is None:  # revoked between the two reads
        return _sign_in_page(request, api_key, "Those credentials were not accepted.", 401, form.get("next"))
    response = redirect(safe_next(form.get("next")))
    sessions.start(svc.engine, request, response, principal.account_id, api_key, used,
                   svc.settings.console_session_hours * 3600)
    return response


@action
async def sign_out(request: Request, svc: Services, session: Session, form: dict[str, str]) -> Response:
    response = redirect("/console/sign-in")
    sessions.end(request, response)
    return response


# -- overview ----------------------------------------------------------------------------


@page
async def overview(request: Request, svc: Services, session: Session) -> Response:
    hours = int(request.query_params.get("hours", "3")) if request.query_params.get("hours", "3") in {str(h) for h in HOURS} else 3
    now = time.time()
    last_minute = int(now // 60)
    first_minute = last_minute - hours * 60 + 1
    counts = await queries.per_minute(svc.engine, session.account_id, first_minute * 60.0)
    charts = [chart(channel, counts[channel], first_minute, hours * 60) for channel in sorted(counts)]
    queue = await queries.queue_state(svc.engine, session.account_id)
    hooks = await queries.webhook_failures(svc.engine, session.account_id, now - 86400)
    return render(request, "overview.html", {"charts": charts, "hours": hours, "choices": HOURS, "queue": queue,
                                             "hooks": hooks, "now": now}, session=session)


# -- messages ----------------------------------------------------------------------------


def _time(value: str) -> float | None:
    """A datetime-local field's value (or any ISO 8601 date-time), read as UTC."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


FILTER_FIELDS = ("channel", "status", "to", "from", "client_ref", "since", "until", "application", "link")


@page
async def message_list(request: Request, svc: Services, session: Session) -> Response:
    query = request.query_params
    # NUL cannot be in PostgreSQL text, so no stored value has one: dropped from filters.
    chosen = {k: query.get(k, "").replace("\x00", "").strip() for k in FILTER_FIELDS}
    cursor = query.get("cursor", "")
    filters = queries.Filters(
        channel=chosen["channel"] or None, status=chosen["status"] or None, to=chosen["to"] or None,
        from_=chosen["from"] or None, client_ref=chosen["client_ref"] or None, since=_time(chosen["since"]),
        until=_time(chosen["until"]), application_id=chosen["application"] or None, link_id=chosen["link"] or None,
        before=queries.decode_cursor(cursor) if cursor else None,
    )
    rows = await queries.list_messages(svc.engine, session.account_id, filters, PAGE_SIZE + 1)
    rows, more = rows[:PAGE_SIZE], len(rows) > PAGE_SIZE
    kept = {k: v for k, v in chosen.items() if v}
    older = f"?{urlencode({**kept, 'cursor': queries.encode_cursor(rows[-1]['created_at'], rows[-1]['uuid'])})}" if more else None
    context: dict[str, Any] = {
        "rows": rows, "chosen": chosen, "older": older, "paged": bool(cursor),
        "newest": f"?{urlencode(kept)}" if kept else "?",
        "live_url": f"/console/messages?{urlencode({**kept, 'fragment': '1'})}",
        "fragment": bool(query.get("fragment")),
    }
    if not context["fragment"]:
        apps, _ = await list_applications(svc.engine, session.account_id, 1, 1000)
        context.update(channels=SUPPORTED_CHANNELS, statuses=STATUSES, applications=apps,
                       links=await link_store.list_links(svc.engine, session.account_id))
    return render(request, "messages.html", context, session=session)


@page
async def message_page(request: Request, svc: Services, session: Session) -> Response:
    message_uuid = request.path_params["message_uuid"]
    found = await get_message(svc.engine, Scope(session.account_id), message_uuid)
    if found is None:
        return not_found(request, session, "message")
    row, events, hooks = found
    details = await queries.message_details(svc.engine, session.account_id, row, hooks)
    for hook in hooks:
        hook["status"] = orjson.loads(hook["payload"]).get("status")
    return render(request, "message.html", {
        "m": row, "events": events, "hooks": hooks, **details,
        "request_body": json.dumps(row["body"], indent=2, ensure_ascii=False, sort_keys=True),
        "fragment": bool(request.query_params.get("fragment")),
    }, session=session)


@action
async def send_again(request: Request, svc: Services, session: Session, form: dict[str, str]) -> Response:
    message_uuid, webhook_id = request.path_params["message_uuid"], request.path_params["webhook_id"]
    if not await queries.send_again(svc.engine, session.account_id, message_uuid, webhook_id, time.time()):
        return not_found(request, session, "webhook")
    svc.webhooks_stored()
    return redirect(f"/console/messages/{message_uuid}?notice=sent-again#webhooks")

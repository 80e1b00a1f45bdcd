"""The console's plumbing: templates, the signed-in guard, forms, static files, headers."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import wraps
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, quote

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from missive.api.services import Services, services
from missive.console import session as sessions
from missive.console.session import Session

FORM_MAX_BYTES = 256 * 1024
HEADERS = {
    # Our own script and stylesheet only; SVG charts are markup, not script.
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
NOTICES = {
    "link-added": "The link was added.",
    "link-changed": "The link was changed.",
    "link-removed": "The link was removed.",
    "number-added": "The number was added.",
    "number-removed": "The number was removed.",
    "sent-again": "The webhook is queued to be sent again now.",
}


def when(ts: float | None, ms: bool = False) -> str:
    if ts is None:
        return ""
    text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))
    return f"{text}.{int(ts * 1000) % 1000:03d}" if ms else text


def ago(ts: float | None) -> str:
    if ts is None:
        return ""
    seconds = max(0, int(time.time() - ts))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


ENV = Environment(loader=PackageLoader("missive.console", "templates"), autoescape=select_autoescape(["html"]))
ENV.filters["when"] = when
ENV.filters["ago"] = ago


def render(request: Request, name: str, context: dict[str, Any], status: int = 200,
           session: Session | None = None) -> Response:
    notice = NOTICES.get(request.query_params.get("notice", ""))
    html = ENV.get_template(name).render(request=request, session=session, notice=notice, **context)
    return Response(html, status_code=status, media_type="text/html", headers=HEADERS)


def not_found(request: Request, session: Session | None, what: str) -> Response:
    return render(request, "error.html", {"title": "Not found", "detail": f"No such {what} in this account."}, 404, session)


def redirect(path: str) -> Response:
    return RedirectResponse(path, status_code=303, headers=HEADERS)


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a console path only (never another site)."""
    if value and value.startswith("/console") and "//" not in value and "\\" not in value:
        return value
    return "/console"


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form body (the console's only kind), first value of each field."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_MAX_BYTES:
            return {}
    form: dict[str, str] = {}
    for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        form.setdefault(key, value)
    return form


Page = Callable[[Request, Services, Session], Awaitable[Response]]
Action = Callable[[Request, Services, Session, dict[str, str]], Awaitable[Response]]


def page(handler: Page) -> Callable[[Request], Awaitable[Response]]:
    """A GET for the signed-in: others go to the sign-in page (a live fragment gets 401)."""

    @wraps(handler)
    async def endpoint(request: Request) -> Response:
        svc = services(request)
        current = await sessions.current(svc.engine, request)
        if current is None:
            if request.query_params.get("fragment"):
                return Response("signed out", status_code=401, headers=HEADERS)
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return redirect(f"/console/sign-in?next={quote(target)}")
        return await handler(request, svc, current)

    return endpoint


def action(handler: Action) -> Callable[[Request], Awaitable[Response]]:
    """A form POST for the signed-in, refused (403) without the session's CSRF token."""

    @wraps(handler)
    async def endpoint(request: Request) -> Response:
        svc = services(request)
        current = await sessions.current(svc.engine, request)
        if current is None:
            return redirect("/console/sign-in")
        form = await read_form(request)
        if not sessions.csrf_ok(current, form.get("csrf", "")):
            detail = "This form did not carry the console's token (it may be from another site, or an old page). Nothing was changed."
            return render(request, "error.html", {"title": "Refused", "detail": detail}, 403, current)
        return await handler(request, svc, current, form)

    return endpoint


_STATIC = {
    "console.css": "text/css; charset=utf-8",
    "live.js": "text/javascript; charset=utf-8",
}


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in _STATIC:
        return Response("not found", status_code=404)
    body = resources.files("missive.console").joinpath("static", name).read_bytes()
    return Response(body, media_type=_STATIC[name],
                    headers={"cache-control": "public, max-age=300", "x-content-type-options": "nosniff"})

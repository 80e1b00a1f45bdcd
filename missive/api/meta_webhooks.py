"""What Meta's webhooks (Messenger and WhatsApp) have in common: one URL per deployment,
a `GET` verify handshake, and bodies signed by the Facebook app that subscribed.

Each entry of a body names an object (a page id, a phone-number id) that several
accounts may have linked: the entry belongs to the link of that object whose app secret
signed the body, never to whoever linked it first.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from missive.api.body import parse_json, read_body
from missive.api.errors import ERRORS, ProblemError, invalid_json, unauthorized
from missive.channels.messenger import signature_ok
from missive.store.links import links_of_kinds

Links = dict[str, list[dict[str, Any]]]


async def links_by(engine: AsyncEngine, kind: str, key: str, account_id: str | None = None) -> Links:
    """Links of `kind` by the value of their config's `key` (several accounts may share one)."""
    found: Links = {}
    for row in await links_of_kinds(engine, [kind], account_id):
        value = (row["config"] or {}).get(key)
        if isinstance(value, str):
            found.setdefault(value, []).append(row)
    return found


def handshake(request: Request, links: Links, what: str) -> Response:
    """Meta's subscription check: the challenge back when the verify token is a link's."""
    params = request.query_params
    token, challenge = params.get("hub.verify_token", ""), params.get("hub.challenge", "")
    if params.get("hub.mode") == "subscribe" and token:
        # Every token is compared, so the answer time does not tell which one nearly matched.
        matches = [hmac.compare_digest(token.encode(), str(r["config"].get("verify_token", "")).encode())
                   for rows in links.values() for r in rows]
        if any(matches):
            return PlainTextResponse(challenge)
    raise ProblemError(403, f"{ERRORS}#forbidden", "Forbidden", f"The verify token matches no {what} link.")


async def signed_body(
    request: Request, max_bytes: int, names_of: Callable[[Any], list[str]],
    load_links: Callable[[], Awaitable[Links]], what: str,
) -> tuple[Any, dict[str, dict[str, Any]]]:
    """A webhook POST's JSON body and, by object it names, the link that signed it
    (verified_links). Unsigned: 401; objects unreadable (`names_of` raised ValueError):
    400. Only the object ids are read before the signature is checked."""
    raw = await read_body(request, max_bytes)
    signature = request.headers.get("x-hub-signature-256")
    if not signature:
        raise unauthorized()
    body = parse_json(raw)
    try:
        names = names_of(body)
    except ValueError:
        raise invalid_json(f"Not a {what} webhook body.") from None
    return body, verified_links(raw, signature, names, await load_links())


def verified_links(raw: bytes, signature: str, names: list[str], links: Links) -> dict[str, dict[str, Any]]:
    """For each object the body names, its link whose app secret signed the body.

    The body is signed once, by the Facebook app that subscribed: of the links of an
    object (a second account may have linked the same id), the one whose secret verifies
    is the object's, and the others get nothing. A body naming linked objects none of
    whose links verify is refused whole (401)."""
    candidates = [(name, row) for name in dict.fromkeys(names) for row in links.get(name, [])]
    verified: dict[str, dict[str, Any]] = {}
    for name, row in candidates:
        if name not in verified and signature_ok(raw, signature, str(row["config"].get("app_secret", ""))):
            verified[name] = row
    if candidates and not verified:
        raise unauthorized()
    return verified

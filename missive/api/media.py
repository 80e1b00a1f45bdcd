"""Inbound media Missive keeps (WhatsApp's URLs need the link's token), served to their owner.

    GET /v1/media/{id}?expires=1767225600&signature=<hex>   the link in the inbound webhook
    GET /v1/media/{id}   Authorization: Basic ... | Bearer <JWT>   the owning account's credentials

The signed link is what the webhook carries, so that a receiver can hand it to anything
that fetches a URL: `signature` is the hex HMAC-SHA256 of "{id}.{expires}" with the
owning account's signature secret, and `expires` (Unix seconds) is when the media is
deleted. Anything else (another account, a wrong or expired signature, an unknown or
expired id) is 404, which tells nothing about which media exist.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from missive.api.errors import not_found
from missive.api.services import services
from missive.store.media import get_media, link_signature


def _signed(request: Request, media_id: str, secret: str, now: float) -> bool:
    expires, signature = request.query_params.get("expires", ""), request.query_params.get("signature", "")
    if not (expires.isascii() and expires.isdigit() and len(expires) < 12 and signature):
        return False
    if int(expires) < now:
        return False
    expected = link_signature(secret, media_id, int(expires)).encode()
    return hmac.compare_digest(expected, signature.lower().encode("utf-8", "replace"))


async def get(request: Request) -> Response:
    svc = services(request)
    media_id = request.path_params["media_id"]
    now = svc.clock()
    if "signature" in request.query_params:
        found = await get_media(svc.engine, media_id, now)
        if found is None or not _signed(request, media_id, found["signature_secret"], now):
            raise not_found("Media", media_id)
    else:
        principal = await svc.auth.authenticate(request)
        found = await get_media(svc.engine, media_id, now)
        if found is None or found["account_id"] != principal.account_id:
            raise not_found("Media", media_id)
    headers = {
        # What the user sent is served as it came: never sniffed or run as a page of Missive's origin.
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox; default-src 'none'",
        "Cache-Control": "private, max-age=3600",
    }
    return Response(found["content"], media_type=found["content_type"], headers=headers)


routes = [Route("/v1/media/{media_id}", get, methods=["GET"])]

"""One POST to Meta's Graph API (the Messenger Send API, the WhatsApp Cloud API), its
failures as send errors: a timeout or an unreachable host is Unavailable (retried), an
answer other than a 200 with a JSON object and no `error` goes to the channel's mapping."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from missive.channels.base import SendError, Unavailable


async def post(client: httpx.AsyncClient, url: str, deadline: float, api: str,
               to_error: Callable[[int, Any], SendError], **request: Any) -> dict[str, Any]:
    """POST `request` (json=, params=, headers=) to `url` within `deadline` seconds; the
    answer's JSON object. `api` names the API in the errors."""
    try:
        async with asyncio.timeout(deadline):
            response = await client.post(url, **request)
    except (TimeoutError, httpx.TimeoutException):
        raise Unavailable(f"{api} timed out") from None
    except httpx.HTTPError as exc:
        # The exception text may carry the URL, and so a token: only its type is kept.
        raise Unavailable(f"{api} unreachable ({type(exc).__name__})") from None
    try:
        parsed = response.json()
    except ValueError:
        parsed = None
    if response.status_code != 200 or not isinstance(parsed, dict) or "error" in parsed:
        raise to_error(response.status_code, parsed)
    return parsed

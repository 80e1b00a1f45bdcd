"""The Cloud API calls the WhatsApp callback side makes: fetching inbound media and
marking a user's message read.

    GET  {graph}/{version}/{MEDIA_ID}            Authorization: Bearer TOKEN
      -> {"messaging_product": "whatsapp", "url": "https://lookaside.fbsbx.com/...",
          "mime_type": "image/jpeg", "sha256": "...", "file_size": 30406, "id": "MEDIA_ID"}
    GET  <that url>                              Authorization: Bearer TOKEN  -> the bytes
    POST {graph}/{version}/{PHONE_NUMBER_ID}/messages
      {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid...",
       "typing_indicator": {"type": "text"}}    -> {"success": true}

Meta's media URLs answer only with the token and expire within minutes, which is why
Missive keeps the bytes and serves them itself.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import httpx

from missive.channels.base import Misconfigured, Unavailable
from missive.channels.messenger import graph_error
from missive.config import Settings
from missive.url_safety import UnsafeUrl, check_url, policy_for

log = logging.getLogger("missive.whatsapp")


class MediaUnavailable(Exception):
    """The media could not be kept; `reason` goes into the inbound webhook."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Fetched:
    content: bytes
    content_type: str


def _token(config: dict[str, Any]) -> str:
    token = config.get("access_token")
    if not isinstance(token, str) or not token:
        raise Misconfigured("the WhatsApp link has no access_token")
    return token


class CloudApi:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._base = f"{settings.graph_api_url.rstrip('/')}/{settings.graph_api_version}"
        self._client = httpx.AsyncClient(timeout=settings.provider_timeout, follow_redirects=False)

    async def fetch_media(self, media_id: str, config: dict[str, Any], mime_type: str | None) -> Fetched:
        """The media's bytes, within `media_fetch_timeout` and `media_max_bytes`."""
        limit = self._settings.media_max_bytes
        try:
            async with asyncio.timeout(self._settings.media_fetch_timeout):
                return await self._fetch(media_id, _token(config), limit, mime_type)
        except TimeoutError:
            raise MediaUnavailable(f"fetching the media from WhatsApp took over {self._settings.media_fetch_timeout:g} s") from None
        except Misconfigured as exc:
            raise MediaUnavailable(exc.reason) from None
        except httpx.HTTPError as exc:
            # The exception text may name the URL: only its type is kept.
            raise MediaUnavailable(f"WhatsApp's media server was unreachable ({type(exc).__name__})") from None

    async def _fetch(self, media_id: str, token: str, limit: int, mime_type: str | None) -> Fetched:
        headers = {"Authorization": f"Bearer {token}"}
        answer = await self._client.get(f"{self._base}/{media_id}", headers=headers)
        found = _json(answer)
        if answer.status_code != 200 or "error" in found or not isinstance(found.get("url"), str):
            raise MediaUnavailable(f"WhatsApp did not give the media's URL ({graph_error(answer.status_code, found).reason})")
        declared = found.get("file_size")
        if isinstance(declared, str) and declared.isdigit():
            declared = int(declared)
        if isinstance(declared, int) and declared > limit:
            raise MediaUnavailable(f"the media is {declared} bytes, over the {limit}-byte limit (MISSIVE_MEDIA_MAX_BYTES)")
        try:
            url = check_url(found["url"], policy_for(self._settings))
        except UnsafeUrl:
            raise MediaUnavailable("WhatsApp's media URL names an address Missive may not fetch") from None
        async with self._client.stream("GET", url, headers=headers) as response:
            if response.status_code != 200:
                raise MediaUnavailable(f"WhatsApp's media server answered {response.status_code}")
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise MediaUnavailable(f"the media is over the {limit}-byte limit (MISSIVE_MEDIA_MAX_BYTES)")
                chunks.append(chunk)
            content_type = response.headers.get("content-type") or found.get("mime_type") or mime_type
        return Fetched(b"".join(chunks), str(content_type or "application/octet-stream")[:100])

    async def mark_read(self, config: dict[str, Any], wamid: str, typing: bool) -> None:
        """The user's message shows as read (two blue ticks); with `typing`, the typing
        indicator shows until the reply or for up to 25 seconds."""
        phone = config.get("phone_number_id")
        if not isinstance(phone, str) or not phone:
            raise Misconfigured("the WhatsApp link has no phone_number_id")
        body: dict[str, Any] = {"messaging_product": "whatsapp", "status": "read", "message_id": wamid}
        if typing:
            body["typing_indicator"] = {"type": "text"}
        headers = {"Authorization": f"Bearer {_token(config)}"}
        try:
            async with asyncio.timeout(self._settings.provider_timeout):
                answer = await self._client.post(f"{self._base}/{phone}/messages", json=body, headers=headers)
        except (TimeoutError, httpx.TimeoutException):
            raise Unavailable("WhatsApp Cloud API timed out") from None
        except httpx.HTTPError as exc:
            raise Unavailable(f"WhatsApp Cloud API unreachable ({type(exc).__name__})") from None
        found = _json(answer)
        if answer.status_code != 200 or "error" in found:
            raise graph_error(answer.status_code, found)

    async def close(self) -> None:
        await self._client.aclose()


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        found = response.json()
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


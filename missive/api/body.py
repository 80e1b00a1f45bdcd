"""Reading a JSON request body within the limits: 415 not JSON, 413 too large, 400 malformed."""

from __future__ import annotations

import orjson
from starlette.requests import ClientDisconnect, Request

from missive.api.errors import ERRORS, ProblemError, invalid_json


def _is_json(content_type: str) -> bool:
    if content_type == "application/json":  # what nearly every client sends
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def too_large(limit: int) -> ProblemError:
    return ProblemError(
        413, f"{ERRORS}#request-too-large", "Request too large", f"The request body must be at most {limit} bytes."
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 past `limit` (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise ProblemError(400, f"{ERRORS}#bad-request", "Bad Request", "Content-Length is not a number.")
        if int(declared) > limit:
            raise too_large(limit)
    # ASGI messages read here rather than through `request.stream()`: an async generator
    # per request cost more than the loop, on the path every message takes.
    receive = request.receive
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):  # the whole body at once
        body: bytes = message.get("body", b"")
        if len(body) > limit:
            raise too_large(limit)
        return body
    chunks = []
    size = 0
    while True:
        if message["type"] != "http.request":  # http.disconnect
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        message = await receive()


async def read_json(request: Request, limit: int) -> object:
    if not _is_json(request.headers.get("content-type", "")):
        raise ProblemError(
            415,
            f"{ERRORS}#content-type-header",
            "Unsupported Content-Type header",
            "Unsupported Content-Type header provided. Must be one of the following: 'application/json'",
        )
    raw = await read_body(request, limit)
    if not raw or raw.isspace():
        raise invalid_json("The request body is empty.")
    if b"\\u0000" in raw:
        # NUL cannot be stored in PostgreSQL text, and no message needs one.
        raise ProblemError(400, f"{ERRORS}#invalid-json", "The request body did not contain valid JSON",
                           "NUL characters (\\u0000) are not allowed.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid_json(f"Malformed JSON: {exc.args[0] if exc.args else 'cannot be parsed'}") from None

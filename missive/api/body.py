"""Reading a JSON request body within the limits: 415 not JSON, 413 too large, 400 malformed,
422 nested too deep."""

from __future__ import annotations

import orjson
from starlette.requests import ClientDisconnect, Request

from missive.api.errors import ERRORS, InvalidParameter, ProblemError, invalid_json, invalid_params

# Far deeper than any message, application or provider callback; far enough below the
# 254 levels orjson writes that a stored value nested in an answer or a webhook (an
# application's capabilities sit 5 levels down a list page) can always be written.
MAX_JSON_DEPTH = 64


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
    return parse_json(await read_body(request, limit))


def parse_json(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> object:
    """The JSON value of a request body (an API call's or a provider's callback), else a
    problem: 400 invalid-json when empty, with NUL characters or malformed (orjson also
    refuses past 1024 levels), 422 naming the member nested deeper than `max_depth`."""
    if not raw or raw.isspace():
        raise invalid_json("The request body is empty.")
    if b"\\u0000" in raw:
        # NUL cannot be stored in PostgreSQL text, and no message needs one.
        raise ProblemError(400, f"{ERRORS}#invalid-json", "The request body did not contain valid JSON",
                           "NUL characters (\\u0000) are not allowed.")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid_json(f"Malformed JSON: {exc.args[0] if exc.args else 'cannot be parsed'}") from None
    # Fewer brackets in all than the limit cannot nest past it: nearly every body, told
    # by two counts in C rather than a walk.
    if raw.count(b"{") + raw.count(b"[") > max_depth:
        member = too_deep(value, max_depth)
        if member is not None:
            reason = f"Arrays and objects may nest at most {max_depth} levels deep."
            raise invalid_params([InvalidParameter(member, reason)])
    return value


def too_deep(value: object, max_depth: int) -> str | None:
    """The top-level member of `value` in which arrays and objects nest more than
    `max_depth` levels (`[]` is one level, `{"a": []}` two), "body" when `value` is an
    array nested so; None when none does. A walk with a stack of its own, linear in the
    number of arrays and objects: no Python recursion to run out of."""
    stack: list[tuple[object, int, str]]
    if isinstance(value, dict):
        if max_depth < 1:
            return "body"
        stack = [(child, 2, str(key)) for key, child in value.items() if isinstance(child, (dict, list))]
    elif isinstance(value, list):
        stack = [(value, 1, "body")]
    else:
        return None
    while stack:
        node, depth, member = stack.pop()
        if depth > max_depth:
            return member
        for child in node.values() if isinstance(node, dict) else node:  # type: ignore[attr-defined]
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1, member))
    return None

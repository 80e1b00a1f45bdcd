"""RFC 7807 problem bodies: the one error shape of every 4xx/5xx answer.

    ProblemError                 raised anywhere in a request, rendered by `problem_response`
      status, type, title, detail, invalid_parameters, headers

Any other exception becomes a 500 with the same shape; the traceback goes to the log
under the body's `instance`, never to the client. `instance` is the request's trace id
(missive.observability.context), which every log line of the request carries too, and
is echoed in an `X-Request-Id` header.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from missive.observability.context import trace_id_or_new

log = logging.getLogger("missive.api")

ERRORS = "https://developer.nexmo.com/api-errors"
MESSAGE_ERRORS = f"{ERRORS}/messages"


@dataclass
class InvalidParameter:
    name: str
    reason: str


@dataclass
class ProblemError(Exception):
    status: int
    type: str
    title: str
    detail: str
    invalid_parameters: list[InvalidParameter] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)


def unauthorized() -> ProblemError:
    return ProblemError(
        401, f"{ERRORS}#unauthorized", "Unauthorized", "You did not provide correct credentials."
    )


def invalid_params(params: list[InvalidParameter]) -> ProblemError:
    return ProblemError(
        422,
        f"{MESSAGE_ERRORS}#1150",
        "Invalid params",
        "The value of one or more parameters is invalid.",
        params,
    )


def invalid_json(detail: str) -> ProblemError:
    return ProblemError(
        400, f"{ERRORS}#invalid-json", "The request body did not contain valid JSON", detail
    )


def unsupported_channel(channel: str) -> ProblemError:
    return ProblemError(
        422,
        f"{MESSAGE_ERRORS}#1240",
        "Unsupported channel",
        f"The channel {channel!r} is not supported by this server.",
        [InvalidParameter("channel", "This channel is not supported yet.")],
    )


def not_found(what: str, ident: str) -> ProblemError:
    return ProblemError(
        404, f"{ERRORS}#not-found", "Not Found", f"{what} '{ident}' does not exist, or you do not have access"
    )


def problem_response(problem: ProblemError, trace_id: str | None = None) -> Response:
    trace_id = trace_id or trace_id_or_new()
    body: dict[str, object] = {
        "type": problem.type,
        "title": problem.title,
        "detail": problem.detail,
        "instance": trace_id,
    }
    if problem.invalid_parameters:
        body["invalid_parameters"] = [
            {"name": p.name, "reason": p.reason} for p in problem.invalid_parameters
        ]
    return Response(
        orjson.dumps(body),
        status_code=problem.status,
        media_type="application/problem+json",
        headers={**problem.headers, "X-Request-Id": trace_id},
    )


_HTTP_TITLES = {
    404: ("#not-found", "Not Found", "The requested resource does not exist."),
    405: ("#wrong-verb", "Request method not allowed", "This method is not supported here."),
}


async def on_problem(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return problem_response(exc)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    anchor, title, detail = _HTTP_TITLES.get(
        exc.status_code, ("#bad-request", "Bad Request", str(exc.detail))
    )
    if exc.status_code == 405:
        detail = f"Request method '{request.method}' not supported"
    headers = dict(exc.headers or {})
    return problem_response(ProblemError(exc.status_code, f"{ERRORS}{anchor}", title, detail, headers=headers))


async def on_unexpected(request: Request, exc: Exception) -> Response:
    trace_id = trace_id_or_new()
    log.error("unhandled error on %s %s [instance %s]", request.method, request.url.path, trace_id, exc_info=exc)
    return problem_response(
        ProblemError(
            500,
            f"{MESSAGE_ERRORS}#1000",
            "Internal error",
            "There was an error processing your request.",
        ),
        trace_id,
    )

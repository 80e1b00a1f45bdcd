"""RFC 7807 problem bodies: the one error shape of every 4xx/5xx answer.

    ProblemError                 raised anywhere in a request, rendered by `problem_response`
      status, type, title, detail, invalid_parameters, headers

A database fault becomes a 503 (unavailable: locked, unreachable; with `Retry-After`)
or a 507 (its storage is full), see missive.store.faults; any other exception a 500 with
the same shape. Either way the log line carries the body's `instance` (the 500 its
traceback), and the client gets no traceback. `instance` is the request's trace id
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
from missive.store.faults import FULL, UNAVAILABLE, classify, describe

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


def unavailable(detail: str = "The database is unavailable for the moment. Retry later.") -> ProblemError:
    return ProblemError(
        503, f"{ERRORS}#service-unavailable", "Service Unavailable", detail, headers={"Retry-After": "1"}
    )


def storage_full(detail: str = "The server's storage is full. Retry once space has been freed.") -> ProblemError:
    return ProblemError(507, f"{ERRORS}#insufficient-storage", "Insufficient Storage", detail)


def database_fault(
    exc: BaseException, where: str, full_detail: str | None = None, unavailable_detail: str | None = None
) -> ProblemError | None:
    """The 507 or 503 for a database fault, logged with the request's trace id; None for
    any other exception."""
    kind = classify(exc)
    if kind is None:
        return None
    trace_id = trace_id_or_new()
    if kind == FULL:
        log.error("the database is full (%s) on %s [instance %s]", describe(exc), where, trace_id)
        return storage_full(full_detail) if full_detail else storage_full()
    assert kind == UNAVAILABLE
    log.warning("the database is unavailable (%s) on %s [instance %s]", describe(exc), where, trace_id)
    return unavailable(unavailable_detail) if unavailable_detail else unavailable()


def provider_error(detail: str, retryable: bool) -> ProblemError:
    """A provider refused what a request asked of it: 503 to retry (in 5 s), else 502."""
    return ProblemError(
        503 if retryable else 502, f"{ERRORS}#provider-error", "Provider error", detail,
        headers={"Retry-After": "5"} if retryable else {},
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


async def on_client_gone(request: Request, _exc: Exception) -> Response:
    """The client hung up before its whole request body arrived: nobody is left to answer,
    and it is the client's doing, so a line at INFO rather than an error with a traceback.
    Nothing was stored (the body is read before anything is written)."""
    log.info("client disconnected before sending its whole request body on %s %s", request.method, request.url.path)
    return problem_response(ProblemError(400, f"{ERRORS}#bad-request", "Bad Request", "The request body was cut short."))


async def on_unexpected(request: Request, exc: Exception) -> Response:
    trace_id = trace_id_or_new()
    fault = database_fault(exc, f"{request.method} {request.url.path}")
    if fault is not None:
        return problem_response(fault, trace_id)
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

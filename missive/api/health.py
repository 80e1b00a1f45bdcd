"""Operations endpoints: `/health` (liveness), `/ready` (readiness), `/metrics` (Prometheus).

None of them takes the API's credentials: probes and scrapers do not have them. /metrics
is open unless MISSIVE_METRICS_TOKEN is set (then it wants `Authorization: Bearer
<token>`); it names channels, links and queue sizes, so keep it off the internet.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from missive.api.errors import (
    ERRORS,
    ProblemError,
    on_http_exception,
    on_problem,
    on_unexpected,
    unauthorized,
)
from missive.api.responses import json_response
from missive.config import Settings
from missive.observability import metrics
from missive.store.db import newest_revision

log = logging.getLogger("missive.api")

# A readiness probe that waits longer than this for the database gets a 503.
READY_TIMEOUT = 5.0


def head_revisions() -> frozenset[str]:
    """The newest migration(s) this code ships."""
    return frozenset({newest_revision()})


def not_ready(detail: str) -> ProblemError:
    return ProblemError(
        503, f"{ERRORS}#not-ready", "Service Unavailable", detail, headers={"Retry-After": "5"}
    )


async def _schema_revisions(engine: AsyncEngine) -> frozenset[str]:
    """The revisions the database is at; ConnectionError when it does not answer at all."""
    async with engine.connect() as conn:
        try:
            await conn.execute(text("SELECT 1"))
        except Exception as exc:
            raise ConnectionError(str(exc)) from exc
        try:
            rows = await conn.execute(text("SELECT version_num FROM alembic_version"))
        except Exception:  # noqa: BLE001 - no version table: not migrated at all
            return frozenset()
        return frozenset(row[0] for row in rows)


class _Ops(Protocol):
    """What these endpoints read: the API's Services, or `OpsState` in `missive dispatch`."""

    settings: Settings
    engine: AsyncEngine
    clock: Callable[[], float]


class OpsState:
    def __init__(self, settings: Settings, engine: AsyncEngine, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.engine = engine
        self.clock = clock


def _ops(request: Request) -> _Ops:
    return request.app.state.services  # type: ignore[no-any-return]


async def health(_request: Request) -> Response:
    return json_response({"status": "ok", "pid": os.getpid()})


async def ready(request: Request) -> Response:
    try:
        found = await asyncio.wait_for(_schema_revisions(_ops(request).engine), READY_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - any failure (or the timeout) means not ready
        log.warning("not ready: the database does not answer: %s", exc)
        raise not_ready("The database is not reachable.") from None
    heads = head_revisions()
    if found != heads:
        detail = f"The database schema is at {', '.join(sorted(found)) or 'no revision'}; this server needs {', '.join(sorted(heads))}."
        log.warning("not ready: %s", detail)
        raise not_ready(detail)
    return json_response({"status": "ready", "revision": ",".join(sorted(heads))})


async def metrics_text(request: Request) -> Response:
    svc = _ops(request)
    token = svc.settings.metrics_token
    if token:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, f"Bearer {token}".encode()):
            problem = unauthorized()
            problem.headers = {"WWW-Authenticate": "Bearer"}
            raise problem
    return Response(await metrics.render(svc.engine, svc.clock()), media_type=metrics.CONTENT_TYPE)


def openapi_paths() -> dict[str, Any]:
    """How the three endpoints appear in /openapi.json (no credentials, not the API's shapes)."""
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}

    def operation(summary: str, op_id: str, ok: dict[str, Any], **errors: str) -> dict[str, Any]:
        responses = {"200": ok, **{code.lstrip("_"): {"description": d, "content": problem} for code, d in errors.items()}}
        return {"get": {"summary": summary, "operationId": op_id, "tags": ["Operations"], "security": [], "responses": responses}}

    def json_ok(description: str, properties: dict[str, Any]) -> dict[str, Any]:
        schema = {"type": "object", "required": ["status"], "properties": properties}
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    return {
        "/health": operation(
            "Liveness: the process answers", "health",
            json_ok("Alive", {"status": {"type": "string", "enum": ["ok"]}, "pid": {"type": "integer"}}),
        ),
        "/ready": operation(
            "Readiness: the database answers and its schema is current", "ready",
            json_ok("Ready", {"status": {"type": "string", "enum": ["ready"]}, "revision": {"type": "string"}}),
            _503="The database is unreachable or not migrated to this version",
        ),
        "/metrics": operation(
            "Prometheus metrics (Bearer MISSIVE_METRICS_TOKEN when set)", "metrics",
            {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
            _401="MISSIVE_METRICS_TOKEN is set and was not given",
        ),
    }


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
    Route("/metrics", metrics_text, methods=["GET"]),
]


def ops_app(settings: Settings, engine: AsyncEngine) -> Starlette:
    """/health, /ready and /metrics alone: what `missive dispatch --metrics-port` serves, so
    that a dispatcher running apart from the API can be probed and scraped too."""
    app = Starlette(
        routes=routes,
        exception_handlers={ProblemError: on_problem, HTTPException: on_http_exception, Exception: on_unexpected},
    )
    app.state.services = OpsState(settings, engine)
    return app

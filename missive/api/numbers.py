"""`/v1/numbers` (ours): link SMS numbers to applications. Account Basic auth.

    POST /v1/numbers {"number": "447700900000", "application_id": "..."}
    PATCH /v1/numbers/447700900000 {"application_id": null}

An inbound SMS arriving on one of the account's links goes to the application its `to`
number is linked to among the account's numbers (null: the account's own inbound URL).
Each account has its own numbers: linking one this account has already linked is a 409;
another account's numbers neither conflict nor show (no answer says whether another
account has a number).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from missive.api.body import read_json
from missive.api.errors import ERRORS, InvalidParameter, ProblemError, invalid_params, not_found
from missive.api.responses import json_response
from missive.api.services import services
from missive.clock import iso
from missive.schemas.common import invalid_parameters
from missive.store import numbers as store


class NumberRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    number: str = Field(min_length=1, max_length=40)
    application_id: str | None = None


class NumberUpdate(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    application_id: str | None


def number_view(row: dict[str, Any]) -> dict[str, Any]:
    return {"number": row["number"], "application_id": row["application_id"], "created_at": iso(row["created_at"])}


def _parse(model: type[BaseModel], data: object) -> Any:
    if not isinstance(data, dict):
        raise invalid_params([InvalidParameter("body", "must be a JSON object")])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_params(invalid_parameters(exc)) from None


def _unknown_application() -> ProblemError:
    return invalid_params([InvalidParameter("application_id", "is not an application of this account")])


async def create(request: Request) -> Response:
    svc = services(request)
    principal = await svc.auth.authenticate(request, allow_jwt=False)
    parsed: NumberRequest = _parse(NumberRequest, await read_json(request, svc.settings.max_body_bytes))
    try:
        row = await store.add_number(svc.engine, principal.account_id, parsed.number, parsed.application_id)
    except ValueError as exc:
        raise invalid_params([InvalidParameter("number", str(exc))]) from None
    except store.UnknownApplication:
        raise _unknown_application() from None
    except store.NumberTaken as exc:
        raise ProblemError(409, f"{ERRORS}#conflict", "Conflict", f"The number {exc}.") from None
    return json_response(number_view(row), 201)


async def list_all(request: Request) -> Response:
    svc = services(request)
    principal = await svc.auth.authenticate(request, allow_jwt=False)
    rows = await store.list_numbers(svc.engine, principal.account_id)
    return json_response({"_embedded": {"numbers": [number_view(r) for r in rows]}})


async def read(request: Request) -> Response:
    svc = services(request)
    principal = await svc.auth.authenticate(request, allow_jwt=False)
    row = await store.get_number(svc.engine, principal.account_id, request.path_params["number"])
    if row is None:
        raise not_found("Number", request.path_params["number"])
    return json_response(number_view(row))


async def change(request: Request) -> Response:
    svc = services(request)
    principal = await svc.auth.authenticate(request, allow_jwt=False)
    parsed: NumberUpdate = _parse(NumberUpdate, await read_json(request, svc.settings.max_body_bytes))
    try:
        row = await store.update_number(svc.engine, principal.account_id, request.path_params["number"], parsed.application_id)
    except store.UnknownApplication:
        raise _unknown_application() from None
    if row is None:
        raise not_found("Number", request.path_params["number"])
    return json_response(number_view(row))


async def remove(request: Request) -> Response:
    svc = services(request)
    principal = await svc.auth.authenticate(request, allow_jwt=False)
    if not await store.remove_number(svc.engine, principal.account_id, request.path_params["number"]):
        raise not_found("Number", request.path_params["number"])
    return Response(status_code=204)


routes = [
    Route("/v1/numbers", create, methods=["POST"]),
    Route("/v1/numbers", list_all, methods=["GET"]),
    Route("/v1/numbers/{number}", read, methods=["GET"]),
    Route("/v1/numbers/{number}", change, methods=["PATCH", "PUT"]),
    Route("/v1/numbers/{number}", remove, methods=["DELETE"]),
]

"""The hosted Account API's secret management (`/accounts/{api_key}/secrets`), enough for
the official SDKs (`vonage_account`: list_secrets, create_secret, get_secret,
revoke_secret), which call it on their `api_host`.

    POST /accounts/abcd1234/secrets  {"secret": "example-4PI-secret"}
    201 {"_links": {"self": {"href": "/accounts/abcd1234/secrets/ad6dc56f-..."}},
         "id": "ad6dc56f-...", "created_at": "2017-03-02T16:34:49Z"}

Basic auth only, with the account's own api_key and any of its current secrets; another
account's api_key in the path, known or not, is the same 401 as wrong credentials. The
error bodies are the vendor's (type, title, detail as the hosted API answers them).
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from missive.api.body import read_json
from missive.api.errors import ERRORS, InvalidParameter, ProblemError, unauthorized
from missive.api.responses import json_response
from missive.api.services import Services, services
from missive.store import account_secrets as store

SECRET_ERRORS = f"{ERRORS}/account/secret-management"


def _iso(epoch: float) -> str:
    # The hosted API's format: seconds, UTC, "Z".
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def secret_view(api_key: str, row: dict[str, Any]) -> dict[str, Any]:
    return {
        "_links": {"self": {"href": f"/accounts/{api_key}/secrets/{row['id']}"}},
        "id": row["id"],
        "created_at": _iso(row["created_at"]),
    }


def _invalid_secret(reason: str) -> ProblemError:
    return ProblemError(400, f"{SECRET_ERRORS}#validation", "Bad Request",
                        "The request failed due to secret validation errors", [InvalidParameter("secret", reason)])


def _unknown_secret(secret_id: str) -> ProblemError:
    return ProblemError(404, f"{ERRORS}#invalid-id", "Invalid ID", f"ID '{secret_id}' could not be found")


async def _owner(request: Request) -> tuple[Services, str, str]:
    """The services, the path's api_key and its account id, when the caller is that
    account (Basic auth); else the 401 problem."""
    svc = services(request)
    principal = await svc.auth.authenticate(request, allow_jwt=False)
    api_key = request.path_params["api_key"]
    if await svc.auth.account_id_of(api_key) != principal.account_id:
        raise unauthorized()
    return svc, api_key, principal.account_id


async def list_all(request: Request) -> Response:
    svc, api_key, account_id = await _owner(request)
    rows = await store.list_secrets(svc.engine, account_id)
    return json_response({
        "_links": {"self": {"href": f"/accounts/{api_key}/secrets"}},
        "_embedded": {"secrets": [secret_view(api_key, row) for row in rows]},
    })


async def create(request: Request) -> Response:
    svc, api_key, account_id = await _owner(request)
    body = await read_json(request, svc.settings.max_body_bytes)
    secret = body.get("secret") if isinstance(body, dict) else None
    if not isinstance(secret, str):
        raise _invalid_secret("Is required and must be a string")
    problems = store.secret_problems(secret)
    if problems:
        raise _invalid_secret("Does not meet complexity requirements: " + "; ".join(problems))
    try:
        row = await store.create_secret(svc.engine, account_id, secret)
    except store.TooManySecrets:
        raise ProblemError(403, f"{SECRET_ERRORS}#add-excess-secret", "Secret Addition Forbidden",
                           f"Account reached maximum number [{store.MAX_SECRETS}] of allowed secrets") from None
    svc.auth.forget(api_key)  # the new secret works at once in this process
    return json_response(secret_view(api_key, row), 201)


async def read(request: Request) -> Response:
    svc, api_key, account_id = await _owner(request)
    secret_id = request.path_params["secret_id"]
    row = await store.get_secret(svc.engine, account_id, secret_id)
    if row is None:
        raise _unknown_secret(secret_id)
    return json_response(secret_view(api_key, row))


async def revoke(request: Request) -> Response:
    svc, api_key, account_id = await _owner(request)
    secret_id = request.path_params["secret_id"]
    try:
        found = await store.revoke_secret(svc.engine, account_id, secret_id)
    except store.LastSecret:
        raise ProblemError(403, f"{SECRET_ERRORS}#delete-last-secret", "Secret Deletion Forbidden",
                           "Can not delete the last secret. The account must always have at least 1 secret "
                           "active at any time") from None
    if not found:
        raise _unknown_secret(secret_id)
    svc.auth.forget(api_key)  # the revoked secret stops working at once in this process
    return Response(status_code=204)


routes = [
    Route("/accounts/{api_key}/secrets", list_all, methods=["GET"]),
    Route("/accounts/{api_key}/secrets", create, methods=["POST"]),
    Route("/accounts/{api_key}/secrets/{secret_id}", read, methods=["GET"]),
    Route("/accounts/{api_key}/secrets/{secret_id}", revoke, methods=["DELETE"]),
]

"""Console sessions: a signed cookie, checked against the database on every request.

The cookie holds `{account id, api_key, fingerprint of the secret signed in with, CSRF
token, expiry}` and an HMAC-SHA256 of it under a key derived from the server's keyring
(missive/secrets_box.py: MISSIVE_SECRET_KEY or data_dir/secret.key), so every process
of a deployment signs and verifies alike, and a rotated keyring keeps earlier sessions
(any of its keys verifies; the first signs). Nothing is kept in a process or a table.

Each request reads the account's credentials again: a disabled account, or one whose
secret used to sign in has been revoked, is signed out at its next click. Signing out
drops the cookie; a copy of it taken before then stays good until it expires (the
session lifetime, MISSIVE_CONSOLE_SESSION_HOURS), which is the price of keeping no
session table, and is said so in docs/console.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response

from missive.secrets_box import keyring_of
from missive.store.accounts import credentials_of

COOKIE = "missive_console"
# Sign-in form's own CSRF token (double submit: this cookie and the form's field).
SIGNIN_COOKIE = "missive_console_signin"
PATH = "/console"
_LABEL = b"missive console session v1"


@dataclass(frozen=True)
class Session:
    account_id: str
    api_key: str
    csrf: str
    expires: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signing_keys(engine: AsyncEngine) -> list[bytes]:
    return [hmac.new(key, _LABEL, hashlib.sha256).digest() for key in keyring_of(engine).keys]


def fingerprint(secret_hash: str) -> str:
    """Names one of the account's secrets without revealing its hash."""
    return hashlib.sha256(b"console\0" + secret_hash.encode()).hexdigest()[:32]


def seal(engine: AsyncEngine, payload: dict) -> str:
    body = _b64(orjson.dumps(payload))
    mac = hmac.new(_signing_keys(engine)[0], body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def unseal(engine: AsyncEngine, value: str) -> dict | None:
    body, _, mac = value.partition(".")
    try:
        given = _unb64(mac)
    except ValueError:
        return None
    if not any(
        hmac.compare_digest(hmac.new(key, body.encode(), hashlib.sha256).digest(), given) for key in _signing_keys(engine)
    ):
        return None
    try:
        payload = orjson.loads(_unb64(body))
    except (ValueError, orjson.JSONDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


def _secure(request: Request) -> bool:
    # uvicorn says https when it terminates TLS itself, or when a trusted proxy's
    # X-Forwarded-Proto does (its forwarded_allow_ips).
    return request.url.scheme == "https"


def start(engine: AsyncEngine, request: Request, response: Response, account_id: str, api_key: str,
          secret_hash: str, lifetime: float) -> None:
    expires = time.time() + lifetime
    payload = {"a": account_id, "k": api_key, "f": fingerprint(secret_hash), "c": secrets.token_urlsafe(24),
               "e": expires}
    response.set_cookie(COOKIE, seal(engine, payload), max_age=int(lifetime), path=PATH, secure=_secure(request),
                        httponly=True, samesite="lax")
    response.delete_cookie(SIGNIN_COOKIE, path=PATH)


def end(request: Request, response: Response) -> None:
    response.delete_cookie(COOKIE, path=PATH, secure=_secure(request), httponly=True, samesite="lax")


async def current(engine: AsyncEngine, request: Request) -> Session | None:
    """The request's session, when its cookie verifies, has not expired, and its account
    is enabled and still has the secret it was signed in with."""
    value = request.cookies.get(COOKIE)
    payload = unseal(engine, value) if value else None
    if payload is None:
        return None
    try:
        account_id, api_key, held, csrf, expires = (payload[k] for k in ("a", "k", "f", "c", "e"))
    except KeyError:
        return None
    if not isinstance(expires, (int, float)) or expires < time.time() or not isinstance(api_key, str):
        return None
    found = await credentials_of(engine, api_key)
    if found is None or found.disabled or found.account_id != account_id:
        return None
    if not any(hmac.compare_digest(fingerprint(h), held) for _, h in found.secrets):
        return None
    return Session(account_id, api_key, str(csrf), float(expires))


def signin_token(request: Request) -> str:
    """The sign-in form's CSRF token: the one its cookie already holds, or a new one."""
    return request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(24)


def keep_signin_token(request: Request, response: Response, token: str) -> None:
    response.set_cookie(SIGNIN_COOKIE, token, max_age=3600, path=PATH, secure=_secure(request), httponly=True,
                        samesite="strict")


def signin_token_ok(request: Request, given: str) -> bool:
    expected = request.cookies.get(SIGNIN_COOKIE)
    return bool(expected) and bool(given) and hmac.compare_digest(expected.encode(), given.encode())  # type: ignore[union-attr]


def csrf_ok(session: Session, given: str) -> bool:
    return bool(given) and hmac.compare_digest(session.csrf.encode(), given.encode())

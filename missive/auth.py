"""Who is calling: Basic (api_key:api_secret) and JWT (RS256, the application's key).

Every failure is the same 401 problem, whatever the reason, so a caller learns nothing
about which part was wrong, and an unknown api_key costs the same hash as a wrong secret.
Lookups are cached for a few seconds: the accept path sees the same key or token
thousands of times a second. Once the caller is known, its request rate is checked
(missive.api.throttle), and with `jwt_single_use` a JWT's `jti` is recorded
(missive.store.jtis) so that a replay is refused.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request

from missive import credentials
from missive.api.errors import unauthorized
from missive.api.throttle import RequestThrottle
from missive.cache import TTLCache
from missive.config import Settings
from missive.store.account_secrets import MAX_SECRETS
from missive.store.accounts import Credentials, credentials_of
from missive.store.jtis import JtiLedger
from missive.store.tables import accounts, applications

# Compared against when the api_key does not exist, so that the answer takes as long
# as for a wrong secret.
_DUMMY_SALT = credentials.new_salt()
_DUMMY_HASH = credentials.hash_secret(_DUMMY_SALT, credentials.new_api_secret())


@dataclass(frozen=True)
class Principal:
    account_id: str
    application_id: str | None = None


@dataclass(frozen=True)
class _App:
    account_id: str
    public_key: RSAPublicKey


class Authenticator:
    def __init__(
        self, engine: AsyncEngine, settings: Settings, clock: Callable[[], float] = time.time
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._clock = clock
        self._accounts = TTLCache(clock)
        self._apps = TTLCache(clock)
        self._tokens = TTLCache(clock)
        self._throttle = RequestThrottle(settings.request_rate, settings.request_burst)
        self._single_use = settings.jwt_single_use
        self._jtis = JtiLedger(engine)

    def known(self, request: Request) -> Principal | None:
        """The caller, when its JWT is one this process verified and still holds, within
        its request rate (else the 429 problem); None otherwise: then `authenticate`.
        The accept path's common case, answered without a coroutine."""
        header = request.headers.get("authorization")
        if self._single_use or header is None or header[:7].lower() != "bearer ":
            return None
        hit, principal = self._tokens.get(header[7:].strip())
        return self._within_rate(principal) if hit else None

    async def authenticate(self, request: Request, allow_jwt: bool = True) -> Principal:
        """The caller of this request, within its request rate; else a 401 or 429 problem."""
        return self._within_rate(await self._identify(request, allow_jwt))

    def _within_rate(self, principal: Principal) -> Principal:
        if self._throttle.enabled:
            self._throttle.take(principal.application_id or principal.account_id)
        return principal

    async def _identify(self, request: Request, allow_jwt: bool) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            api_key, api_secret = _decode_basic(value.strip())
            return await self.basic(api_key, api_secret)
        if scheme == "bearer" and allow_jwt:
            return await self.bearer(value.strip())
        if not header:
            api_key = request.query_params.get("api_key")
            api_secret = request.query_params.get("api_secret")
            if api_key and api_secret:
                return await self.basic(api_key, api_secret)
        raise unauthorized()

    async def basic(self, api_key: str, api_secret: str) -> Principal:
        # Known or not, the key takes the same steps: one cached lookup (misses are cached
        # too), then one hash and one constant-time comparison for each of MAX_SECRETS
        # slots, filled with a dummy where the account has fewer secrets (or none). A
        # disabled account goes through the same steps and gets the same 401.
        account = await self._account(api_key)
        held = account.secrets if account else ()
        matches = [credentials.secret_matches(salt, api_secret, expected) for salt, expected in held]
        for _ in range(MAX_SECRETS - len(held)):
            credentials.secret_matches(_DUMMY_SALT, api_secret, _DUMMY_HASH)  # the work, not the answer
        if account is None or account.disabled or not any(matches):
            raise unauthorized()
        return Principal(account_id=account.account_id)

    async def account_id_of(self, api_key: str) -> str | None:
        """The id of the account with this api_key (through the same cache as `basic`)."""
        account = await self._account(api_key)
        return account.account_id if account else None

    def forget(self, api_key: str) -> None:
        """Drop what this process holds of an account's credentials: a secret revoked
        here stops working at once, not when the cached entry expires."""
        self._accounts.put(api_key, None, until=0.0)

    async def bearer(self, token: str) -> Principal:
        hit, cached = self._tokens.get(token)
        if hit:
            if self._single_use:
                raise unauthorized()  # this process let it through already
            return cached  # type: ignore[return-value]
        try:
            if jwt.get_unverified_header(token).get("alg") != "RS256":
                raise unauthorized()
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise unauthorized() from None
        app_id = unverified.get("application_id")
        if not isinstance(app_id, str):
            raise unauthorized()
        app = await self._application(app_id)
        if app is None:
            raise unauthorized()
        try:
            claims = jwt.decode(
                token,
                app.public_key,
                algorithms=["RS256"],
                options={"require": ["iat"], "verify_aud": False},
                leeway=self._settings.jwt_leeway,
            )
        except jwt.PyJWTError:
            raise unauthorized() from None
        try:
            valid_until = self._valid_until(claims)
        except (OverflowError, TypeError, ValueError):
            raise unauthorized() from None
        if self._single_use:
            jti = claims.get("jti")
            if not isinstance(jti, str) or not jti:
                raise unauthorized()
            if not await self._jtis.first_use(app_id, jti, valid_until, self._clock()):
                raise unauthorized()
        principal = Principal(account_id=app.account_id, application_id=app_id)
        self._tokens.put(token, principal, until=valid_until)
        return principal

    def _valid_until(self, claims: dict) -> float:
        now = self._clock()
        leeway = self._settings.jwt_leeway
        for name in ("iat", "exp", "nbf"):
            # JSON numbers only: PyJWT would also take "123" or a huge integer.
            value = claims.get(name, 0)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or abs(value) > 1e11:
                raise unauthorized()
        iat = float(claims["iat"])
        if iat > now + leeway:
            raise unauthorized()
        # However far away its `exp`, a token is good for at most jwt_max_lifetime after
        # it was issued: one that asks for longer is refused outright, as a leaked token
        # made to live for years would otherwise be.
        lifetime = self._settings.jwt_max_lifetime
        if now - iat > lifetime + leeway:
            raise unauthorized()
        if "exp" in claims:
            if claims["exp"] - iat > lifetime:
                raise unauthorized()
            return float(claims["exp"]) + leeway
        valid_until = iat + min(self._settings.jwt_max_age, lifetime) + leeway
        if valid_until < now:
            raise unauthorized()
        return valid_until

    async def _account(self, api_key: str) -> Credentials | None:
        if "\x00" in api_key:
            return None  # no key has one (nor can PostgreSQL text): not a query that fails
        return await self._accounts.load(api_key, lambda: credentials_of(self._engine, api_key))  # type: ignore[no-any-return]

    async def _application(self, app_id: str) -> _App | None:
        if "\x00" in app_id:
            return None  # as for an api_key
        return await self._apps.load(app_id, lambda: self._read_application(app_id))  # type: ignore[no-any-return]

    async def _read_application(self, app_id: str) -> _App | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    # An application of a disabled account is refused like an unknown one.
                    select(applications.c.account_id, applications.c.public_key)
                    .join(accounts, accounts.c.id == applications.c.account_id)
                    .where(applications.c.id == app_id, accounts.c.disabled == 0)
                )
            ).first()
        if row is None:
            return None
        try:
            return _App(row.account_id, credentials.load_public_key(row.public_key))
        except ValueError:
            return None


def _decode_basic(value: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise unauthorized() from None
    api_key, sep, api_secret = decoded.partition(":")
    if not sep or not api_key or not api_secret:
        raise unauthorized()
    return api_key, api_secret

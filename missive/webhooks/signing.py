"""Webhook signatures: an HS256 JWT with the account's signature secret.

Receivers verify the token with the signature secret and compare `payload_hash` with
the SHA-256 of the body they received.
"""

from __future__ import annotations

import hashlib
import time
import uuid

import jwt


def sign(body: bytes, signature_secret: str, api_key: str, application_id: str | None, now: float | None = None) -> str:
    claims = {
        "iat": int(time.time() if now is None else now),
        "jti": str(uuid.uuid4()),
        "iss": "Missive",
        "api_key": api_key,
        "application_id": application_id,
        "payload_hash": hashlib.sha256(body).hexdigest(),
    }
    return jwt.encode(claims, signature_secret, algorithm="HS256")

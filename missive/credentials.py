"""Generation and hashing of account credentials and application key pairs."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

_ALPHANUMERIC = string.ascii_letters + string.digits


def new_api_key() -> str:
    # Same shape as the hosted service's keys (8 hex characters), which some SDKs check.
    return secrets.token_hex(4)


def new_api_secret() -> str:
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(16))


def new_signature_secret() -> str:
    return secrets.token_urlsafe(32)


def new_salt() -> str:
    return secrets.token_hex(16)


def hash_secret(salt: str, secret: str) -> str:
    # api_secrets are 95 bits of randomness that we generate ourselves, so a fast salted
    # hash resists offline guessing as well as a slow KDF would, and costs nothing on the
    # accept path, where every Basic-authenticated request checks one.
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def secret_matches(salt: str, secret: str, expected_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(salt, secret), expected_hash)


@dataclass(frozen=True)
class KeyPair:
    private_pem: str
    public_pem: str


def new_rsa_keypair() -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return KeyPair(private_pem, public_pem)


def load_public_key(pem: str) -> rsa.RSAPublicKey:
    """Parse a PEM public key; ValueError when it is not an RSA public key."""
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as exc:
        raise ValueError("not a PEM-encoded public key") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the public key must be an RSA key")
    return key

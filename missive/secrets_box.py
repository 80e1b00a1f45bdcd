"""Provider credentials at rest: the secret config values of channel links, encrypted.

Cipher: AES-256-GCM (`cryptography`'s AESGCM), chosen over Fernet because it is an AEAD
with associated data: each value is bound to its link id and config key, so a ciphertext
copied into another link or another field does not decrypt. Its key is 256 bits (Fernet
is AES-128-CBC with HMAC-SHA256, and its tokens carry a timestamp we have no use for).
Nonces are 96 random bits; links are written rarely, far below the 2^32 encryptions per
key where random nonces would start to risk a repeat.

A stored value reads `enc:v1:<kid>:<urlsafe base64 of nonce || ciphertext || tag>`, where
`kid` names the key (a fingerprint of it, so no id has to be kept beside the key). A
value without the `enc:v1:` prefix was stored before encryption existed: it is read as
it is, and encrypted at the link's next write or by `missive secrets rotate`.

Keys are urlsafe base64 of 32 random bytes (`missive secrets new-key` makes one). They
come from MISSIVE_SECRET_KEY, or when it is unset from `secret.key` in the data
directory, created on first use with mode 0600. Either may hold several keys (commas or
newlines between them): the first encrypts, every one decrypts. A key file is read again
when it changes, so running processes follow a rotation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.ext.asyncio import AsyncEngine

from missive.config import Settings

log = logging.getLogger("missive.secrets")

PREFIX = "enc:v1:"
KEY_FILE = "secret.key"
_NONCE = 12
_SEPARATORS = re.compile(r"[\s,]+")


class SecretKeyError(Exception):
    """A stored secret that cannot be decrypted (its key is missing, or it was altered).
    The message names the link, the field and the key id, never a value."""


def new_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"missive secret key id\0" + key).hexdigest()[:12]


def parse_keys(text: str, source: str) -> list[bytes]:
    """Keys separated by commas or whitespace; lines starting with # are comments."""
    lines = (line for line in text.splitlines() if not line.lstrip().startswith("#"))
    keys = []
    for position, item in enumerate(t for t in _SEPARATORS.split(" ".join(lines)) if t):
        try:
            key = base64.urlsafe_b64decode(item + "=" * (-len(item) % 4))
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != 32:
            # Never the value itself in the message: it may be a key with a typo.
            raise ValueError(f"{source}: key {position + 1} is not urlsafe base64 of 32 bytes")
        keys.append(key)
    if not keys:
        raise ValueError(f"{source}: no key")
    return keys


def write_key_file(path: Path, keys: Iterable[bytes]) -> None:
    """Replace the key file at once (readers see the old file or the new one), mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _write_private(temp, keys)
    os.replace(temp, path)


def create_key_file(path: Path) -> None:
    """A new key file with one fresh key, unless another process made one first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.new")
    _write_private(temp, [base64.urlsafe_b64decode(new_key())])
    try:
        os.link(temp, path)  # fails when the file exists: the first process's key wins
        log.warning("generated a secret key in %s: back it up with the database; without it the stored "
                    "provider credentials cannot be read", path)
    except FileExistsError:
        pass
    finally:
        temp.unlink(missing_ok=True)


def _write_private(path: Path, keys: Iterable[bytes]) -> None:
    text = "# Missive secret keys: the first encrypts, all decrypt. Keep this file with the database.\n"
    text += "".join(base64.urlsafe_b64encode(k).decode() + "\n" for k in keys)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())


class Keyring:
    """The keys of one process: given (MISSIVE_SECRET_KEY), or read from a key file."""

    def __init__(self, keys: list[bytes] | None = None, path: Path | None = None) -> None:
        if (keys is None) == (path is None):
            raise ValueError("a keyring has keys or a key file")
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._keys: list[bytes] = []
        self._by_id: dict[str, AESGCM] = {}
        if keys is not None:
            self._use(keys)

    @classmethod
    def from_settings(cls, settings: Settings) -> Keyring:
        given = settings.secret_key.get_secret_value()
        if given.strip():
            return cls(parse_keys(given, "MISSIVE_SECRET_KEY"))
        return cls(path=settings.data_dir / KEY_FILE)

    def _use(self, keys: list[bytes]) -> None:
        self._keys = keys
        self._by_id = {key_id(k): AESGCM(k) for k in keys}

    def _refresh(self) -> None:
        """Read the key file (creating it first if there is none) when it changed."""
        if self.path is None:
            return
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            create_key_file(self.path)
            stat = self.path.stat()
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            if stat.st_mode & 0o077:
                log.warning("%s can be read by other users: chmod 600 it", self.path)
            self._use(parse_keys(self.path.read_text(), str(self.path)))
            self._stamp = stamp

    @property
    def keys(self) -> list[bytes]:
        self._refresh()
        return list(self._keys)

    def current_id(self) -> str:
        self._refresh()
        return key_id(self._keys[0])

    def seal(self, value: str, context: str) -> str:
        """`value` encrypted with the current key, bound to `context` (link id and field)."""
        self._refresh()
        kid = key_id(self._keys[0])
        nonce = os.urandom(_NONCE)
        sealed = self._by_id[kid].encrypt(nonce, value.encode(), context.encode())
        return f"{PREFIX}{kid}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, value: str, context: str) -> str:
        """The plaintext of a stored value (a value stored before encryption comes back as is)."""
        if not is_sealed(value):
            return value
        kid, _, data = value[len(PREFIX):].partition(":")
        cipher = self._by_id.get(kid)
        if cipher is None:
            self._refresh()  # a rotation may have made a new key since the file was read
            cipher = self._by_id.get(kid)
        if cipher is None:
            source = "MISSIVE_SECRET_KEY" if self.path is None else str(self.path)
            raise SecretKeyError(f"{context}: encrypted with key {kid}, which is not in {source}")
        try:
            raw = base64.urlsafe_b64decode(data)
            return cipher.decrypt(raw[:_NONCE], raw[_NONCE:], context.encode()).decode()
        except (InvalidTag, binascii.Error, ValueError):
            raise SecretKeyError(f"{context}: the stored value does not decrypt with key {kid}") from None


def is_sealed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def sealed_id(value: Any) -> str | None:
    """The key id of a stored value, None for plaintext."""
    return value[len(PREFIX):].partition(":")[0] if is_sealed(value) else None


def seal_config(keyring: Keyring, link_id: str, config: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The (plaintext) config with the values of `names` encrypted."""
    out = dict(config)
    for name in names:
        if isinstance(out.get(name), str):
            out[name] = keyring.seal(out[name], f"{link_id}/{name}")
    return out


def open_config(keyring: Keyring, link_id: str, config: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    out = dict(config)
    for name in names:
        if is_sealed(out.get(name)):
            out[name] = keyring.open(out[name], f"{link_id}/{name}")
    return out


# The keyring of each engine (make_engine attaches it), so that every reader and writer
# of links finds it without passing it through every call.
_KEYRINGS: weakref.WeakKeyDictionary[Any, Keyring] = weakref.WeakKeyDictionary()


def attach(engine: AsyncEngine, keyring: Keyring) -> None:
    _KEYRINGS[engine.sync_engine] = keyring


def keyring_of(engine: AsyncEngine) -> Keyring:
    found = _KEYRINGS.get(engine.sync_engine)
    if found is None:
        raise RuntimeError("this engine has no keyring: make engines with missive.store.db.make_engine")
    return found

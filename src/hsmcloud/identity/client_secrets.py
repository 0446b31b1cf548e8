"""Client secrets of service principals: made here, shown once, kept only as scrypt hashes."""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

# scrypt cost as the appliances use for passwords: ~50 ms per check, so guessing is slow.
_N, _R, _P = 2**14, 8, 1
_SALT_BYTES = 16
_KEY_BYTES = 32


class Secret:
    """A secret value that never prints: str() and repr() hide it; reveal() gives it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def new_client_secret() -> Secret:
    """40 URL-safe characters, never starting with '-' (a command line would read it as an option)."""
    while True:
        value = secrets.token_urlsafe(30)
        if value[0].isalnum():
            return Secret(value)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_secret(secret: Secret) -> str:
    """A self-describing scrypt hash: ``scrypt$n$r$p$salt$key``."""
    salt = os.urandom(_SALT_BYTES)
    key = hashlib.scrypt(secret.reveal().encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_KEY_BYTES)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(key)}"


def verify_secret(secret: str, encoded: str | None) -> bool:
    """True if `secret` matches `encoded` (a `hash_secret` result); constant time in the key."""
    if not encoded or not secret:
        return False
    try:
        scheme, n, r, p, salt, key = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key)
        actual = hashlib.scrypt(secret.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                dklen=len(expected), maxmem=64 * 1024 * 1024)
    except (ValueError, TypeError, UnicodeEncodeError):
        return False
    return hmac.compare_digest(actual, expected)

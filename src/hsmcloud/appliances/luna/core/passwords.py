"""Password hashing and the password rules of the appliance admin and the HSM SO.

Only scrypt hashes are stored. Hashing is CPU-bound (~50 ms), so callers inside the event
loop use :func:`hash_password_async` / :func:`verify_password_async`, which run in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import string

from .errors import InvalidUsage, PasswordPolicyViolation

#: The factory password of the appliance ``admin`` account (LunaSH default).
FACTORY_ADMIN_PASSWORD = "PASSWORD"

_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_SALT_BYTES = 16
_KEY_BYTES = 32

#: A cloning domain is a shared secret between appliances; a fixed, product-wide salt makes
#: the same domain produce the same digest on every device, so devices can be compared
#: (HA, cloning) without storing the domain itself.
_DOMAIN_SALT = b"hsmcloud/luna/cloning-domain/v1"
#: The domain's secret (the key cloning and backups are derived from) uses another salt, so the
#: digest, kept in clear for comparisons, does not give it away; the secret is kept sealed.
_DOMAIN_SECRET_SALT = b"hsmcloud/luna/cloning-domain-secret/v1"

ADMIN_PASSWORD_MIN_LENGTH = 8
ADMIN_PASSWORD_MAX_LENGTH = 255
ADMIN_PASSWORD_MIN_CLASSES = 3
SO_PASSWORD_MIN_LENGTH = 8
SO_PASSWORD_MAX_LENGTH = 255
DOMAIN_MIN_LENGTH = 1
DOMAIN_MAX_LENGTH = 128


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    """Return a self-describing scrypt hash: ``scrypt$n$r$p$salt$key``."""
    salt = os.urandom(_SALT_BYTES)
    key = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=_KEY_BYTES
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, encoded: str | None) -> bool:
    """True if ``password`` matches ``encoded`` (a :func:`hash_password` result)."""
    if not encoded:
        return False
    try:
        scheme, n, r, p, salt, key = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key)
        actual = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=256 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


async def hash_password_async(password: str) -> str:
    """:func:`hash_password` in a worker thread, so the event loop keeps serving."""
    return await asyncio.to_thread(hash_password, password)


async def verify_password_async(password: str, encoded: str | None) -> bool:
    """:func:`verify_password` in a worker thread, so the event loop keeps serving."""
    return await asyncio.to_thread(verify_password, password, encoded)


async def admin_password_matches(password: str, stored_hash: str | None) -> bool:
    """True if ``password`` is the admin password; no stored hash means the factory one."""
    if stored_hash is None:
        return hmac.compare_digest(password.encode(), FACTORY_ADMIN_PASSWORD.encode())
    return await verify_password_async(password, stored_hash)


def domain_digest(domain: str) -> str:
    """Digest of a cloning domain, identical on every device for the same domain."""
    key = hashlib.pbkdf2_hmac("sha256", domain.encode("utf-8"), _DOMAIN_SALT, 100_000)
    return "pbkdf2-sha256$" + _b64(key)


def domain_secret(domain: str) -> bytes:
    """The cloning domain's shared secret, identical on every device for the same domain.

    Stored only sealed under the device key (``sealing.py``); cloning and backup keys are
    derived from it (``cloning.py``)."""
    return hashlib.pbkdf2_hmac("sha256", domain.encode("utf-8"), _DOMAIN_SECRET_SALT, 100_000)


def character_classes(password: str) -> int:
    """How many of lower case, upper case, digits and other characters ``password`` uses."""
    classes = [
        any(c in string.ascii_lowercase for c in password),
        any(c in string.ascii_uppercase for c in password),
        any(c in string.digits for c in password),
        any(not (c.isascii() and c.isalnum()) for c in password),
    ]
    return sum(classes)


def check_admin_password(password: str) -> None:
    """Raise :class:`PasswordPolicyViolation` unless the appliance admin password is acceptable."""
    if len(password) < ADMIN_PASSWORD_MIN_LENGTH:
        raise PasswordPolicyViolation(
            f"The new password is too short: it needs at least {ADMIN_PASSWORD_MIN_LENGTH} "
            "characters, from at least 3 of: lower case, upper case, digits, other characters."
        )
    if len(password) > ADMIN_PASSWORD_MAX_LENGTH:
        raise PasswordPolicyViolation(
            f"The new password is too long: at most {ADMIN_PASSWORD_MAX_LENGTH} characters."
        )
    if character_classes(password) < ADMIN_PASSWORD_MIN_CLASSES:
        raise PasswordPolicyViolation(
            "The new password is too simple: it needs characters from at least 3 of: "
            "lower case, upper case, digits, other characters."
        )


def check_so_password(password: str) -> None:
    """Raise :class:`PasswordPolicyViolation` unless the HSM SO password is acceptable."""
    if not SO_PASSWORD_MIN_LENGTH <= len(password) <= SO_PASSWORD_MAX_LENGTH:
        raise PasswordPolicyViolation(
            f"The HSM SO password must be {SO_PASSWORD_MIN_LENGTH} to "
            f"{SO_PASSWORD_MAX_LENGTH} characters long."
        )


def check_domain(domain: str) -> None:
    """Raise :class:`InvalidUsage` unless the cloning domain string is acceptable."""
    if not DOMAIN_MIN_LENGTH <= len(domain) <= DOMAIN_MAX_LENGTH:
        raise InvalidUsage(
            f"The cloning domain must be {DOMAIN_MIN_LENGTH} to {DOMAIN_MAX_LENGTH} characters long."
        )

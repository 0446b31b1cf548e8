"""The HSM's roles and what too many failed logins do to each (SPEC.md's table)."""

from __future__ import annotations

from datetime import timedelta
from enum import Enum

from .errors import InvalidUsage


class Role(Enum):
    """HSM-level roles (HSM SO, Auditor) and partition roles (po, co, cu)."""

    HSM_SO = "so"
    AUDITOR = "au"
    PARTITION_SO = "po"
    CRYPTO_OFFICER = "co"
    CRYPTO_USER = "cu"

    @property
    def title(self) -> str:
        return _TITLES[self]

    @classmethod
    def partition_role(cls, name: str) -> Role:
        """``po`` / ``co`` / ``cu`` (LunaCM's ``role ... -name``) as a partition role."""
        role = {r.value: r for r in PARTITION_ROLES}.get(name.strip().lower())
        if role is None:
            raise InvalidUsage(
                f"'{name}' is not a partition role; the roles are po (Partition SO), "
                "co (Crypto Officer) and cu (Crypto User)."
            )
        return role


_TITLES = {
    Role.HSM_SO: "HSM SO",
    Role.AUDITOR: "Auditor",
    Role.PARTITION_SO: "Partition SO",
    Role.CRYPTO_OFFICER: "Crypto Officer",
    Role.CRYPTO_USER: "Crypto User",
}

PARTITION_ROLES = (Role.PARTITION_SO, Role.CRYPTO_OFFICER, Role.CRYPTO_USER)

#: Consecutive wrong Partition SO PINs that zeroize the partition.
PARTITION_SO_LOGIN_ATTEMPTS = 10
#: Consecutive wrong Auditor passwords that lock the Auditor out, and for how long.
AUDITOR_LOGIN_ATTEMPTS = 10
AUDITOR_LOCKOUT = timedelta(minutes=10)

#: Who initializes and resets whom inside a partition.
INITIALIZED_BY = {Role.CRYPTO_OFFICER: Role.PARTITION_SO, Role.CRYPTO_USER: Role.CRYPTO_OFFICER}

"""The HSM and partition policies this appliance has: numbers, names, defaults, ranges, destructiveness.

Declared as data; ``hsm.py`` and ``partitions.py`` apply them. A destructive HSM policy
change erases every partition; a destructive partition policy change destroys the
partition's objects (Luna's "destructive" policies, shown by ``showpolicies``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .errors import PolicyUnknown, PolicyValueInvalid


class Destructive(Enum):
    """When changing a policy destroys contents."""

    NEVER = "no"
    ALWAYS = "yes"
    #: Only when the value goes from 0 to 1 (loosening what stored objects allow).
    WHEN_ENABLED = "when enabled"

    def applies(self, old: int, new: int) -> bool:
        if old == new or self is Destructive.NEVER:
            return False
        return self is Destructive.ALWAYS or (old == 0 and new == 1)


@dataclass(frozen=True, kw_only=True)
class Policy:
    code: int
    name: str
    default: int
    minimum: int = 0
    maximum: int = 1
    destructive: Destructive = Destructive.NEVER
    description: str = ""

    def check(self, value: int) -> int:
        if not self.minimum <= value <= self.maximum:
            raise PolicyValueInvalid(
                f"Policy {self.code} ({self.name}) takes a value from {self.minimum} to "
                f"{self.maximum}; {value} is outside that range. Nothing was changed."
            )
        return value


def _table(*policies: Policy) -> dict[int, Policy]:
    return {p.code: p for p in policies}


HSM_ALLOW_CLONING = 7
HSM_ALLOW_NON_FIPS = 12
HSM_SO_RESET_PARTITION_PIN = 15
HSM_NETWORK_REPLICATION = 16
HSM_FORCE_PIN_CHANGE = 21

HSM_POLICIES = _table(
    Policy(code=HSM_ALLOW_CLONING, name="Allow cloning", default=1,
           destructive=Destructive.ALWAYS,
           description="Partitions may clone (back up, replicate) key material; needed for HA."),
    Policy(code=HSM_ALLOW_NON_FIPS, name="Allow non-FIPS algorithms", default=1,
           destructive=Destructive.ALWAYS,
           description="0 = FIPS mode: only FIPS-approved mechanisms and key sizes."),
    Policy(code=HSM_SO_RESET_PARTITION_PIN, name="Enable SO reset of partition PIN", default=0,
           destructive=Destructive.WHEN_ENABLED,
           description="The Partition SO may reset a locked-out Crypto Officer (role resetpw)."),
    Policy(code=HSM_NETWORK_REPLICATION, name="Allow network replication", default=1,
           description="Partitions may replicate over the network (HA groups)."),
    Policy(code=HSM_FORCE_PIN_CHANGE, name="Force user PIN change after set/reset", default=1,
           description="HSM roles must change a password someone else set."),
)

PARTITION_PRIVATE_KEY_CLONING = 0
PARTITION_PRIVATE_KEY_WRAPPING = 1
PARTITION_SECRET_KEY_CLONING = 4
PARTITION_SECRET_KEY_WRAPPING = 5
PARTITION_MAX_FAILED_LOGINS = 20
PARTITION_FORCE_PIN_CHANGE = 21
PARTITION_MIN_PIN_LENGTH = 25
PARTITION_MAX_PIN_LENGTH = 26

#: Partition policies that HSM policy 7 (Allow cloning) = 0 forbids turning on.
CLONING_POLICIES = (PARTITION_PRIVATE_KEY_CLONING, PARTITION_SECRET_KEY_CLONING)

PARTITION_POLICIES = _table(
    Policy(code=PARTITION_PRIVATE_KEY_CLONING, name="Allow private key cloning", default=1,
           destructive=Destructive.WHEN_ENABLED,
           description="Private keys may be cloned (backup, HA); not when HSM policy 7 is 0."),
    Policy(code=PARTITION_PRIVATE_KEY_WRAPPING, name="Allow private key wrapping", default=0,
           destructive=Destructive.WHEN_ENABLED,
           description="Extractable private keys may be wrapped off the partition."),
    Policy(code=PARTITION_SECRET_KEY_CLONING, name="Allow secret key cloning", default=1,
           destructive=Destructive.WHEN_ENABLED,
           description="Secret keys may be cloned (backup, HA); not when HSM policy 7 is 0."),
    Policy(code=PARTITION_SECRET_KEY_WRAPPING, name="Allow secret key wrapping", default=1,
           destructive=Destructive.WHEN_ENABLED,
           description="Extractable secret keys may be wrapped off the partition."),
    Policy(code=PARTITION_MAX_FAILED_LOGINS, name="Max failed user logins allowed", default=10,
           minimum=1, maximum=10,
           description="Wrong PINs in a row that lock the Crypto Officer (and User) out."),
    Policy(code=PARTITION_FORCE_PIN_CHANGE, name="Force user PIN change after set/reset",
           default=1,
           description="A CO or CU PIN set or reset by another role must be changed first."),
    Policy(code=PARTITION_MIN_PIN_LENGTH, name="Minimum PIN length",
           default=8, minimum=8, maximum=255,
           description="Shortest PIN or password a partition role may have."),
    Policy(code=PARTITION_MAX_PIN_LENGTH, name="Maximum PIN length", default=255,
           minimum=8, maximum=255,
           description="Longest PIN or password a partition role may have."),
)


def lookup(table: dict[int, Policy], code: int, scope: str) -> Policy:
    """The policy numbered ``code`` in ``table``, or a clear error naming the valid numbers."""
    policy = table.get(code)
    if policy is None:
        known = ", ".join(str(c) for c in sorted(table))
        raise PolicyUnknown(
            f"There is no {scope} policy {code} on this HSM; the {scope} policies are {known}. "
            "Nothing was changed."
        )
    return policy


def defaults(table: dict[int, Policy]) -> dict[int, int]:
    return {code: p.default for code, p in table.items()}

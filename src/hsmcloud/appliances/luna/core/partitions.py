"""Partitions from the inside: initialization, the Partition SO / Crypto Officer / Crypto User roles,
their PINs and failed logins, and partition policies.

Failed logins (SPEC.md's table): 10 wrong Partition SO PINs in a row zeroize the partition;
partition policy 20 (default 10) wrong Crypto Officer PINs lock the CO and with it the CU,
recoverable by the Partition SO (``role resetpw -name co``) only when HSM policy 15 is 1,
otherwise only by re-initializing the partition; as many wrong CU PINs lock the CU (the CO
resets it). A correct PIN resets the role's counter. Each failure and its consequence are
one transaction, so a crash never forgets a failure.

A partition's ``generation`` is a random number, new at every initialization and
zeroization: a :class:`Grant` (a login) holds only while it is unchanged.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from .clock import Clock, stored
from .errors import (
    InvalidUsage,
    NotAuthorized,
    PartitionChanged,
    PartitionNotFound,
    PartitionNotInitialized,
    PartitionZeroizedByFailedLogins,
    PinIncorrect,
    PinLengthInvalid,
    PolicyNotAllowed,
    ResetNotAllowed,
    RoleAlreadyInitialized,
    RoleLocked,
    RoleLockedByFailedLogins,
    RoleNotInitialized,
)
from .hsm import HsmService, PolicyChange
from .passwords import check_domain, domain_digest, domain_secret, verify_password
from .pins import hash_pin
from .policies import (
    CLONING_POLICIES,
    HSM_ALLOW_CLONING,
    HSM_SO_RESET_PARTITION_PIN,
    PARTITION_FORCE_PIN_CHANGE,
    PARTITION_MAX_FAILED_LOGINS,
    PARTITION_MAX_PIN_LENGTH,
    PARTITION_MIN_PIN_LENGTH,
    PARTITION_POLICIES,
    defaults,
    lookup,
)
from .roles import INITIALIZED_BY, PARTITION_ROLES, PARTITION_SO_LOGIN_ATTEMPTS, Role
from .sealing import (
    HSM_DOMAIN_SECRET_AAD,
    DeviceSealer,
    key_id,
    new_key,
    partition_domain_secret_aad,
)
from .state import ApplianceState
from .views import View

#: PKCS#11 token labels are 32 bytes, blank padded.
PARTITION_LABEL_MAX_LENGTH = 32


@dataclass(frozen=True, kw_only=True)
class RoleStatus:
    initialized: bool
    must_change: bool = False
    failed_logins: int = 0
    #: Locked out (for the CU also when the CO is locked).
    locked: bool = False


@dataclass(frozen=True, kw_only=True)
class PartitionStatus:
    serial: str
    name: str
    initialized: bool
    label: str | None
    generation: int
    domain_digest: str | None
    policies: dict[int, int]
    roles: dict[Role, RoleStatus]
    key_id: str | None = field(default=None, repr=False)

    def role(self, role: Role) -> RoleStatus:
        return self.roles[role]

    @property
    def max_failed_logins(self) -> int:
        return self.policies[PARTITION_MAX_FAILED_LOGINS]

    def threshold(self, role: Role) -> int:
        return PARTITION_SO_LOGIN_ATTEMPTS if role is Role.PARTITION_SO else self.max_failed_logins


@dataclass(frozen=True, kw_only=True)
class Grant:
    """A successful login of a partition role; valid while the partition's generation holds."""

    serial: str
    role: Role
    generation: int
    #: The PIN was set or reset by another role and must be changed (partition policy 21).
    must_change: bool = False


def _new_generation() -> int:
    return secrets.randbits(62) + 1


def partition_key_aad(serial: str, generation: int) -> bytes:
    return b"hsmcloud/luna/partition-key/v1\0" + f"{serial}\0{generation}".encode()


class PartitionService:
    """Everything inside the partitions; the HSM SO creates and deletes them (``state.py``)."""

    def __init__(
        self, state: ApplianceState, hsm: HsmService, clock: Clock, sealer: DeviceSealer
    ) -> None:
        self._state = state
        self._hsm = hsm
        self._clock = clock
        self._sealer = sealer
        self._view = View(state, self._load)
        #: Unsealed partition keys by key id.
        self._keys: dict[str, bytes] = {}
        #: Called with a partition serial after its objects were destroyed outside the keystore.
        self.contents_destroyed: list[Callable[[str], None]] = []
        #: Called with every freshly loaded view (serial -> status), under the state's lock.
        self.reloaded: list[Callable[[dict[str, PartitionStatus]], None]] = []

    # -- reading ------------------------------------------------------------------------

    def _load(self) -> dict[str, PartitionStatus]:
        hsm_policies = self._hsm.policies()
        rows = self._state.query(
            "SELECT p.serial, p.name, s.initialized, s.label, s.generation, s.domain_digest,"
            " s.key_id FROM partitions p LEFT JOIN partition_state s ON s.serial = p.serial"
            " ORDER BY p.serial"
        )
        policies: dict[str, dict[int, int]] = {}
        for serial, code, value in self._state.query(
            "SELECT serial, code, value FROM partition_policies"
        ):
            policies.setdefault(serial, {})[code] = value
        roles: dict[str, dict[Role, tuple]] = {}
        for serial, role, must_change, failed, locked in self._state.query(
            "SELECT serial, role, must_change, failed_logins, locked FROM partition_roles"
        ):
            roles.setdefault(serial, {})[Role(role)] = (bool(must_change), failed, bool(locked))
        result: dict[str, PartitionStatus] = {}
        for serial, name, initialized, label, generation, digest, kid in rows:
            values = defaults(PARTITION_POLICIES)
            values.update(
                (c, v) for c, v in policies.get(serial, {}).items() if c in PARTITION_POLICIES
            )
            if hsm_policies[HSM_ALLOW_CLONING] == 0:
                for code in CLONING_POLICIES:
                    values[code] = 0
            found = roles.get(serial, {})
            co_locked = found.get(Role.CRYPTO_OFFICER, (False, 0, False))[2]
            statuses = {}
            for role in PARTITION_ROLES:
                if role not in found:
                    statuses[role] = RoleStatus(initialized=False)
                    continue
                must_change, failed, locked = found[role]
                statuses[role] = RoleStatus(
                    initialized=True,
                    must_change=must_change,
                    failed_logins=failed,
                    locked=locked or (role is Role.CRYPTO_USER and co_locked),
                )
            result[serial] = PartitionStatus(
                serial=serial,
                name=name,
                initialized=bool(initialized),
                label=label,
                generation=generation or 0,
                domain_digest=digest,
                policies=values,
                roles=statuses,
                key_id=kid,
            )
        live = {status.key_id for status in result.values()}
        for stale in [k for k in self._keys if k not in live]:
            del self._keys[stale]
        for listener in self.reloaded:
            listener(result)
        return result

    def list(self) -> list[PartitionStatus]:
        return list(self._view.get().values())

    def get(self, serial: str) -> PartitionStatus:
        status = self._view.get().get(serial)
        if status is None:
            raise PartitionNotFound(f"There is no partition with serial number {serial}.")
        return status

    def find(self, serial: str) -> PartitionStatus | None:
        return self._view.get().get(serial)

    def by_name(self, name: str) -> PartitionStatus:
        for status in self._view.get().values():
            if status.name.lower() == name.lower():
                return status
        raise PartitionNotFound(f"There is no partition named '{name}'. See: partition list")

    def generation(self, serial: str) -> int:
        return self.get(serial).generation

    def check(self, grant: Grant) -> PartitionStatus:
        """Raise unless ``grant`` still holds: same partition generation, role not locked out."""
        status = self._view.get().get(grant.serial)
        if status is None:
            raise PartitionNotFound(f"Partition {grant.serial} no longer exists.")
        if status.generation != grant.generation:
            raise PartitionChanged()
        if status.roles[grant.role].locked:
            raise RoleLocked(f"The {grant.role.title} of partition {grant.serial} is locked out.")
        return status

    def partition_key(self, serial: str, generation: int) -> bytes:
        """The partition's key (unsealed once, then kept in memory) for the given generation."""
        status = self.get(serial)
        if not status.initialized:
            raise PartitionNotInitialized()
        if status.generation != generation:
            raise PartitionChanged()
        assert status.key_id is not None
        key = self._keys.get(status.key_id)
        if key is None:
            rows = self._state.query(
                "SELECT key_sealed, generation FROM partition_state WHERE serial = ?", (serial,)
            )
            if not rows or rows[0][1] != generation:
                raise PartitionChanged()
            key = self._sealer.unseal(rows[0][0], partition_key_aad(serial, generation))
            self._keys[status.key_id] = key
        return key

    def domain_secret(self, serial: str, generation: int) -> bytes | None:
        """The partition's cloning-domain secret (None for a partition initialized before the
        secret was kept, schema v2: it clones after it is initialized again)."""
        status = self.get(serial)
        if not status.initialized:
            raise PartitionNotInitialized()
        if status.generation != generation:
            raise PartitionChanged()
        rows = self._state.query(
            "SELECT domain_secret_sealed, generation FROM partition_state WHERE serial = ?",
            (serial,),
        )
        if not rows or rows[0][1] != generation:
            raise PartitionChanged()
        if rows[0][0] is None:
            return None
        return self._sealer.unseal(rows[0][0], partition_domain_secret_aad(serial, generation))

    def forget_keys(self) -> None:
        self._keys.clear()
        self._view.invalidate()

    # -- checks -------------------------------------------------------------------------

    @staticmethod
    def check_pin(pin: str, policies: dict[int, int], *, what: str = "PIN") -> None:
        low, high = policies[PARTITION_MIN_PIN_LENGTH], policies[PARTITION_MAX_PIN_LENGTH]
        if not low <= len(pin) <= high:
            raise PinLengthInvalid(
                f"The {what} must be {low} to {high} characters long (partition policies 25 and "
                "26). Nothing was changed."
            )

    @staticmethod
    def check_label(label: str) -> str:
        if (
            not label.strip()
            or len(label.encode("utf-8")) > PARTITION_LABEL_MAX_LENGTH
            or not label.isprintable()
        ):
            raise InvalidUsage(
                f"A partition label must be 1 to {PARTITION_LABEL_MAX_LENGTH} printable "
                "characters (bytes in UTF-8)."
            )
        return label

    def _require(self, db: sqlite3.Connection, serial: str, generation: int) -> None:
        row = db.execute(
            "SELECT s.generation FROM partitions p LEFT JOIN partition_state s"
            " ON s.serial = p.serial WHERE p.serial = ?",
            (serial,),
        ).fetchone()
        if row is None:
            raise PartitionNotFound(f"Partition {serial} no longer exists.")
        if (row[0] or 0) != generation:
            raise PartitionChanged()

    def _log(self, db: sqlite3.Connection, serial: str, text: str) -> None:
        self._state._append_log(db, f"Partition {serial}: {text}")

    # -- initialization -----------------------------------------------------------------

    def init(
        self,
        serial: str,
        *,
        so_pin: str,
        label: str,
        domain: str | None = None,
        now: datetime | None = None,
    ) -> PartitionStatus:
        """Initialize the partition (``C_InitToken``, LunaCM ``partition init``).

        The first initialization sets the Partition SO PIN, the label and the cloning domain
        (default: the HSM's). Re-initializing needs the current Partition SO PIN (a wrong one
        counts as a failed login) and destroys every object and the CO and CU; the PIN stays.
        """
        self.check_label(label)
        status = self.get(serial)
        hsm = self._hsm.require_initialized()
        self.check_pin(so_pin, defaults(PARTITION_POLICIES) | status.policies, what="Partition SO PIN")
        if domain is not None:
            check_domain(domain)
            digest = domain_digest(domain)
            secret: bytes | None = domain_secret(domain)
        else:
            digest = hsm.domain_digest
            sealed_hsm = self._state.hsm_domain_secret_sealed()
            secret = None if sealed_hsm is None else self._sealer.unseal(
                sealed_hsm, HSM_DOMAIN_SECRET_AAD)
        if status.initialized:
            self._verify(status, Role.PARTITION_SO, so_pin, now)
            pin_hash = None
        else:
            pin_hash = hash_pin(so_pin)
        generation = _new_generation()
        key = new_key()
        sealed = self._sealer.seal(key, partition_key_aad(serial, generation))
        sealed_secret = None if secret is None else self._sealer.seal(
            secret, partition_domain_secret_aad(serial, generation))
        with self._state.transaction() as db:
            self._require(db, serial, status.generation)
            self._clear(db, serial, keep_po=status.initialized)
            db.execute(
                "INSERT INTO partition_state (serial, initialized, label, domain_digest,"
                " domain_secret_sealed, generation, key_sealed, key_id, initialized_at)"
                " VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (serial) DO UPDATE SET initialized = 1, label = excluded.label,"
                " domain_digest = excluded.domain_digest,"
                " domain_secret_sealed = excluded.domain_secret_sealed,"
                " generation = excluded.generation,"
                " key_sealed = excluded.key_sealed, key_id = excluded.key_id,"
                " initialized_at = excluded.initialized_at",
                (serial, label, digest, sealed_secret, generation, sealed, key_id(key),
                 stored(now or self._clock())),
            )
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('device_key_used', '1')")
            if pin_hash is not None:
                db.execute(
                    "INSERT INTO partition_roles (serial, role, pin_hash, must_change,"
                    " failed_logins, locked) VALUES (?, 'po', ?, 0, 0, 0)",
                    (serial, pin_hash),
                )
            else:
                db.execute(
                    "UPDATE partition_roles SET failed_logins = 0 WHERE serial = ? AND role = 'po'",
                    (serial,),
                )
            self._log(db, serial, f"{'re-' if status.initialized else ''}initialized with label '{label}'")
        if status.initialized:
            self._state.scrub()  # the old key and objects
        self._keys[key_id(key)] = key
        return self.get(serial)

    @staticmethod
    def _clear(db: sqlite3.Connection, serial: str, *, keep_po: bool) -> int:
        """Remove the partition's contents: objects, roles (but the PO if asked), policies."""
        (objects,) = db.execute(
            "SELECT COUNT(*) FROM keystore_objects WHERE serial = ?", (serial,)
        ).fetchone()
        db.execute("DELETE FROM keystore_objects WHERE serial = ?", (serial,))
        if keep_po:
            db.execute("DELETE FROM partition_roles WHERE serial = ? AND role != 'po'", (serial,))
        else:
            db.execute("DELETE FROM partition_roles WHERE serial = ?", (serial,))
        db.execute("DELETE FROM partition_policies WHERE serial = ?", (serial,))
        return objects

    def _zeroize(self, db: sqlite3.Connection, serial: str) -> None:
        """The partition loses its objects, roles, label and key; it exists on, uninitialized."""
        self._clear(db, serial, keep_po=False)
        db.execute(
            "UPDATE partition_state SET initialized = 0, label = NULL, domain_digest = NULL,"
            " domain_secret_sealed = NULL,"
            " generation = ?, key_sealed = NULL, key_id = NULL, initialized_at = NULL"
            " WHERE serial = ?",
            (_new_generation(), serial),
        )

    # -- logins -------------------------------------------------------------------------

    def login(self, serial: str, role: Role, pin: str, *, now: datetime | None = None) -> Grant:
        """Check a partition role's PIN. Wrong PINs are counted; see the module docstring."""
        status = self.get(serial)
        self._verify(status, role, pin, now)
        return Grant(
            serial=serial,
            role=role,
            generation=status.generation,
            must_change=status.roles[role].must_change,
        )

    def _verify(self, status: PartitionStatus, role: Role, pin: str, now: datetime | None) -> None:
        if role not in PARTITION_ROLES:
            raise InvalidUsage(f"{role.title} is not a partition role.")
        if not status.initialized:
            raise PartitionNotInitialized(
                f"Partition {status.serial} ({status.name}) is not initialized."
            )
        role_status = status.roles[role]
        if not role_status.initialized:
            raise RoleNotInitialized(
                f"The {role.title} of partition {status.serial} is not initialized"
                + (f"; the {INITIALIZED_BY[role].title} initializes it." if role in INITIALIZED_BY else ".")
            )
        if role_status.locked:
            raise RoleLocked(self._locked_message(status, role))
        rows = self._state.query(
            "SELECT pin_hash FROM partition_roles WHERE serial = ? AND role = ?",
            (status.serial, role.value),
        )
        if not rows:
            raise PartitionChanged()
        if verify_password(pin, rows[0][0]):
            if role_status.failed_logins:
                with self._state.transaction() as db:
                    self._require(db, status.serial, status.generation)
                    db.execute(
                        "UPDATE partition_roles SET failed_logins = 0 WHERE serial = ? AND role = ?",
                        (status.serial, role.value),
                    )
            return
        self._count_failure(status, role)

    def _locked_message(self, status: PartitionStatus, role: Role) -> str:
        if role is Role.CRYPTO_USER:
            if status.roles[Role.CRYPTO_OFFICER].locked:
                return (f"The Crypto User of partition {status.serial} is locked out because the "
                        "Crypto Officer is locked out.")
            return (f"The Crypto User of partition {status.serial} is locked out after too many "
                    "failed logins; the Crypto Officer resets it (role resetpw -name cu).")
        if self._hsm.policy(HSM_SO_RESET_PARTITION_PIN):
            return (f"The Crypto Officer of partition {status.serial} is locked out after too "
                    "many failed logins; the Partition SO resets it (role resetpw -name co).")
        return (f"The Crypto Officer of partition {status.serial} is locked out permanently: "
                "HSM policy 15 (Enable SO reset of partition PIN) is 0, so only re-initializing "
                "the partition recovers it (its objects are lost; restore from a backup).")

    def _count_failure(self, status: PartitionStatus, role: Role) -> None:
        serial = status.serial
        zeroized = False
        with self._state.transaction() as db:
            self._require(db, serial, status.generation)
            row = db.execute(
                "SELECT failed_logins FROM partition_roles WHERE serial = ? AND role = ?",
                (serial, role.value),
            ).fetchone()
            if row is None:
                raise PartitionChanged()
            failed = row[0] + 1
            threshold = status.threshold(role)
            self._log(db, serial, f"{role.title} login: incorrect PIN ({failed} of {threshold})")
            if failed < threshold:
                db.execute(
                    "UPDATE partition_roles SET failed_logins = ? WHERE serial = ? AND role = ?",
                    (failed, serial, role.value),
                )
                error: PinIncorrect = PinIncorrect(
                    f"Incorrect {role.title} PIN. {threshold - failed} attempt(s) left before "
                    + ("the partition is zeroized." if role is Role.PARTITION_SO
                       else "the role is locked out."),
                    attempts_left=threshold - failed,
                )
            elif role is Role.PARTITION_SO:
                self._zeroize(db, serial)
                self._log(db, serial, f"zeroized after {failed} consecutive bad Partition SO logins")
                zeroized = True
                error = PartitionZeroizedByFailedLogins(
                    f"Incorrect Partition SO PIN, bad login number {failed} in a row: partition "
                    f"{serial} is now zeroized (objects, roles and label gone). Initialize it again "
                    "and restore from a backup."
                )
            else:
                db.execute(
                    "UPDATE partition_roles SET failed_logins = ?, locked = 1 WHERE serial = ? AND role = ?",
                    (failed, serial, role.value),
                )
                locked = "Crypto Officer and Crypto User are" if role is Role.CRYPTO_OFFICER else "Crypto User is"
                self._log(db, serial, f"{locked} locked out after {failed} consecutive bad logins")
                error = RoleLockedByFailedLogins(
                    f"Incorrect {role.title} PIN, bad login number {failed} in a row: the {locked} "
                    "now locked out."
                )
        if zeroized:
            self._state.scrub()
        raise error

    # -- role management ----------------------------------------------------------------

    def _authorize(self, target: Role, by: Grant) -> PartitionStatus:
        status = self.check(by)
        if target not in INITIALIZED_BY or INITIALIZED_BY[target] is not by.role:
            allowed = INITIALIZED_BY.get(target)
            raise NotAuthorized(
                f"The {by.role.title} cannot initialize or reset the {target.title}"
                + (f"; the {allowed.title} does." if allowed else ".")
            )
        return status

    def _must_change(self, status: PartitionStatus) -> int:
        return 1 if status.policies[PARTITION_FORCE_PIN_CHANGE] else 0

    def init_role(self, serial: str, role: Role, pin: str, *, by: Grant) -> None:
        """Give a role its first PIN: the Partition SO initializes the CO (``C_InitPIN``), the CO the CU."""
        if by.serial != serial:
            raise NotAuthorized("The login is for another partition.")
        status = self._authorize(role, by)
        if status.roles[role].initialized:
            raise RoleAlreadyInitialized(
                f"The {role.title} of partition {serial} is already initialized; reset its PIN "
                "(role resetpw) or re-initialize the partition."
            )
        self.check_pin(pin, status.policies)
        pin_hash = hash_pin(pin)
        with self._state.transaction() as db:
            self._require(db, serial, by.generation)
            db.execute(
                "INSERT INTO partition_roles (serial, role, pin_hash, must_change, failed_logins,"
                " locked) VALUES (?, ?, ?, ?, 0, 0)",
                (serial, role.value, pin_hash, self._must_change(status)),
            )
            self._log(db, serial, f"{role.title} initialized by the {by.role.title}")

    def reset_role(self, serial: str, role: Role, pin: str, *, by: Grant) -> None:
        """Set a new PIN for a role and lift its lockout: the PO resets the CO (only with HSM
        policy 15 = 1), the CO resets the CU."""
        if by.serial != serial:
            raise NotAuthorized("The login is for another partition.")
        status = self._authorize(role, by)
        if role is Role.CRYPTO_OFFICER and not self._hsm.policy(HSM_SO_RESET_PARTITION_PIN):
            raise ResetNotAllowed()
        if not status.roles[role].initialized:
            raise RoleNotInitialized(f"The {role.title} of partition {serial} is not initialized; "
                                     "initialize it (role init).")
        self.check_pin(pin, status.policies)
        pin_hash = hash_pin(pin)
        with self._state.transaction() as db:
            self._require(db, serial, by.generation)
            db.execute(
                "UPDATE partition_roles SET pin_hash = ?, must_change = ?, failed_logins = 0,"
                " locked = 0 WHERE serial = ? AND role = ?",
                (pin_hash, self._must_change(status), serial, role.value),
            )
            self._log(db, serial, f"{role.title} PIN reset by the {by.role.title}")

    def change_pin(
        self, serial: str, role: Role, old_pin: str, new_pin: str, *, now: datetime | None = None
    ) -> None:
        """A role changes its own PIN (``C_SetPIN``, ``role changepw``); the old PIN counts as a login."""
        status = self.get(serial)
        self._verify(status, role, old_pin, now)
        self.check_pin(new_pin, status.policies)
        pin_hash = hash_pin(new_pin)
        with self._state.transaction() as db:
            self._require(db, serial, status.generation)
            db.execute(
                "UPDATE partition_roles SET pin_hash = ?, must_change = 0, failed_logins = 0"
                " WHERE serial = ? AND role = ?",
                (pin_hash, serial, role.value),
            )
            self._log(db, serial, f"{role.title} changed its PIN")

    # -- policies -----------------------------------------------------------------------

    def change_policy(self, serial: str, code: int, value: int, *, by: Grant) -> PolicyChange:
        """The Partition SO sets partition policy ``code``; a destructive change destroys the objects."""
        status = self.check(by)
        if by.role is not Role.PARTITION_SO or by.serial != serial:
            raise NotAuthorized("Only the Partition SO of this partition changes its policies.")
        policy = lookup(PARTITION_POLICIES, code, "partition")
        policy.check(value)
        if code in CLONING_POLICIES and value == 1 and self._hsm.policy(HSM_ALLOW_CLONING) == 0:
            raise PolicyNotAllowed(
                f"Partition policy {code} ({policy.name}) cannot be 1 while HSM policy 7 (Allow "
                "cloning) is 0. Nothing was changed."
            )
        if code == PARTITION_MIN_PIN_LENGTH and value > status.policies[PARTITION_MAX_PIN_LENGTH]:
            raise PolicyNotAllowed("The minimum PIN length cannot exceed the maximum (policy 26).")
        if code == PARTITION_MAX_PIN_LENGTH and value < status.policies[PARTITION_MIN_PIN_LENGTH]:
            raise PolicyNotAllowed("The maximum PIN length cannot be below the minimum (policy 25).")
        old = status.policies[code]
        destroyed = 0
        with self._state.transaction() as db:
            self._require(db, serial, by.generation)
            if policy.destructive.applies(old, value):
                (destroyed,) = db.execute(
                    "SELECT COUNT(*) FROM keystore_objects WHERE serial = ?", (serial,)
                ).fetchone()
                db.execute("DELETE FROM keystore_objects WHERE serial = ?", (serial,))
            db.execute(
                "INSERT INTO partition_policies (serial, code, value) VALUES (?, ?, ?)"
                " ON CONFLICT (serial, code) DO UPDATE SET value = excluded.value",
                (serial, code, value),
            )
            self._log(
                db, serial,
                f"policy {code} ({policy.name}) changed from {old} to {value}"
                + (f"; {destroyed} object(s) destroyed" if destroyed else ""),
            )
        if destroyed:
            self._state.scrub()
            for listener in self.contents_destroyed:
                listener(serial)
        return PolicyChange(policy=policy, old=old, new=value, destroyed=destroyed)

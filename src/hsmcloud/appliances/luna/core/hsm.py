"""The HSM as a whole: its policies and the Auditor (the HSM SO's login lives in ``state.py``).

A destructive HSM policy change erases every partition in the same transaction as the
change. The Auditor is locked out for 10 minutes after 10 wrong passwords in a row: the
lockout is the stored ``locked_until`` compared with the clock, so it ends by itself.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime

from .clock import Clock, parse_stored, stored
from .errors import (
    AuditorLocked,
    AuditorLockedByFailedLogins,
    AuditorNotInitialized,
    HsmNotInitialized,
    PasswordPolicyViolation,
    PinIncorrect,
    StateChanged,
)
from .passwords import (
    SO_PASSWORD_MAX_LENGTH,
    SO_PASSWORD_MIN_LENGTH,
    check_domain,
    domain_digest,
    verify_password,
)
from .pins import hash_pin
from .policies import HSM_ALLOW_NON_FIPS, HSM_POLICIES, Policy, defaults, lookup
from .roles import AUDITOR_LOCKOUT, AUDITOR_LOGIN_ATTEMPTS
from .state import ApplianceState, HsmRecord
from .views import View


@dataclass(frozen=True, kw_only=True)
class PolicyChange:
    """What a policy change did."""

    policy: Policy
    old: int
    new: int
    #: Partitions (HSM policy) or objects (partition policy) the change destroyed.
    destroyed: int = 0

    @property
    def destructive(self) -> bool:
        return self.policy.destructive.applies(self.old, self.new)


@dataclass(frozen=True, kw_only=True)
class AuditorStatus:
    initialized: bool
    failed_logins: int = 0
    locked_until: datetime | None = None
    initialized_at: str | None = None

    def locked(self, now: datetime) -> bool:
        return self.locked_until is not None and now < self.locked_until

    def attempts_left(self, now: datetime) -> int:
        return AUDITOR_LOGIN_ATTEMPTS if self.locked_until and not self.locked(now) else max(
            0, AUDITOR_LOGIN_ATTEMPTS - self.failed_logins
        )


def _check_role_password(password: str, what: str) -> None:
    if not SO_PASSWORD_MIN_LENGTH <= len(password) <= SO_PASSWORD_MAX_LENGTH:
        raise PasswordPolicyViolation(
            f"The {what} password must be {SO_PASSWORD_MIN_LENGTH} to {SO_PASSWORD_MAX_LENGTH} "
            "characters long. Nothing was changed."
        )


class HsmService:
    """HSM policies and the Auditor role."""

    def __init__(self, state: ApplianceState, clock: Clock) -> None:
        self._state = state
        self._clock = clock
        self._policies = View(state, self._load_policies)

    # -- HSM ----------------------------------------------------------------------------

    def record(self) -> HsmRecord:
        return self._state.hsm()

    def require_initialized(self) -> HsmRecord:
        return self._state.require_initialized()

    # -- policies -----------------------------------------------------------------------

    def _load_policies(self) -> dict[int, int]:
        values = defaults(HSM_POLICIES)
        for code, value in self._state.query("SELECT code, value FROM hsm_policies"):
            if code in values:
                values[code] = value
        return values

    def policies(self) -> dict[int, int]:
        """Every HSM policy's current value (a copy)."""
        return dict(self._policies.get())

    def policy(self, code: int) -> int:
        return self._policies.get()[code]

    @property
    def fips_mode(self) -> bool:
        """HSM policy 12 = 0: only FIPS-approved mechanisms and key sizes."""
        return self.policy(HSM_ALLOW_NON_FIPS) == 0

    def change_policy(self, code: int, value: int, *, so_generation: int) -> PolicyChange:
        """Set HSM policy ``code`` (the HSM SO's login ``so_generation`` must still hold).

        A destructive change erases every partition in the same transaction.
        """
        policy = lookup(HSM_POLICIES, code, "HSM")
        policy.check(value)
        with self._state.transaction() as db:
            self._require_generation(db, so_generation)
            old = self._policies_in(db).get(code, policy.default)
            destroyed = 0
            if policy.destructive.applies(old, value):
                (destroyed,) = db.execute("SELECT COUNT(*) FROM partitions").fetchone()
                db.execute("DELETE FROM partitions")
            db.execute(
                "INSERT INTO hsm_policies (code, value) VALUES (?, ?)"
                " ON CONFLICT (code) DO UPDATE SET value = excluded.value",
                (code, value),
            )
            self._state._append_log(
                db,
                f"HSM policy {code} ({policy.name}) changed from {old} to {value}"
                + (f"; {destroyed} partition(s) erased" if destroyed else ""),
            )
        if destroyed:
            self._state.scrub()
        return PolicyChange(policy=policy, old=old, new=value, destroyed=destroyed)

    @staticmethod
    def _policies_in(db: sqlite3.Connection) -> dict[int, int]:
        return dict(db.execute("SELECT code, value FROM hsm_policies").fetchall())

    @staticmethod
    def _require_generation(db: sqlite3.Connection, generation: int) -> None:
        row = db.execute("SELECT initialized, generation FROM hsm WHERE id = 1").fetchone()
        if not row[0]:
            raise HsmNotInitialized()
        if row[1] != generation:
            raise StateChanged()

    # -- Auditor ------------------------------------------------------------------------

    def auditor(self) -> AuditorStatus:
        rows = self._state.query(
            "SELECT failed_logins, locked_until, initialized_at FROM auditor WHERE id = 1"
        )
        if not rows:
            return AuditorStatus(initialized=False)
        failed, locked_until, initialized_at = rows[0]
        return AuditorStatus(
            initialized=True,
            failed_logins=failed,
            locked_until=parse_stored(locked_until),
            initialized_at=initialized_at,
        )

    def audit_init(self, password: str, domain: str, *, so_generation: int) -> None:
        """(Re)create the Audit role with ``password`` and an audit domain; replaces any Auditor."""
        _check_role_password(password, "Auditor")
        check_domain(domain)
        password_hash = hash_pin(password)
        digest = domain_digest(domain)
        with self._state.transaction() as db:
            self._require_generation(db, so_generation)
            db.execute("DELETE FROM auditor")
            db.execute(
                "INSERT INTO auditor (id, password_hash, domain_digest, failed_logins,"
                " locked_until, must_change, initialized_at) VALUES (1, ?, ?, 0, NULL, 0, ?)",
                (password_hash, digest, stored(self._clock())),
            )
            self._state._append_log(db, "HSM Audit role initialized.")

    def audit_login(self, password: str, *, now: datetime | None = None) -> None:
        """Check the Auditor's password; counts failures, the 10th locks out for 10 minutes."""
        now = now or self._clock()
        row = self._auditor_row()
        status = self.auditor()
        if status.locked(now):
            raise AuditorLocked(
                f"The Auditor is locked out after {AUDITOR_LOGIN_ATTEMPTS} failed logins until "
                f"{stored(status.locked_until)} (UTC); it unlocks by itself.",
                until=status.locked_until,
            )
        if verify_password(password, row[0]):
            self._audit_success(row[0])
            return
        self._audit_failure(row[0], now)

    def audit_change_password(self, old: str, new: str, *, now: datetime | None = None) -> None:
        """The Auditor changes its own password (the old one is checked like a login)."""
        self.audit_login(old, now=now)
        _check_role_password(new, "Auditor")
        new_hash = hash_pin(new)
        with self._state.transaction() as db:
            if db.execute("SELECT 1 FROM auditor WHERE id = 1").fetchone() is None:
                raise AuditorNotInitialized()
            db.execute("UPDATE auditor SET password_hash = ?, must_change = 0 WHERE id = 1",
                       (new_hash,))
            self._state._append_log(db, "HSM Audit role password changed.")

    def _auditor_row(self) -> tuple:
        rows = self._state.query("SELECT password_hash FROM auditor WHERE id = 1")
        if not rows:
            raise AuditorNotInitialized()
        return tuple(rows[0])

    def _audit_success(self, password_hash: str) -> None:
        with self._state.transaction() as db:
            db.execute(
                "UPDATE auditor SET failed_logins = 0, locked_until = NULL"
                " WHERE id = 1 AND password_hash = ? AND (failed_logins > 0 OR locked_until IS NOT NULL)",
                (password_hash,),
            )

    def _audit_failure(self, password_hash: str, now: datetime) -> None:
        with self._state.transaction() as db:
            row = db.execute(
                "SELECT password_hash, failed_logins, locked_until FROM auditor WHERE id = 1"
            ).fetchone()
            if row is None:
                raise AuditorNotInitialized()
            failed = row[1]
            expired = parse_stored(row[2])
            if expired is not None and now >= expired:
                failed = 0  # a lockout that ran out starts a fresh count
            failed += 1
            self._state._append_log(db, "HSM Audit Login: incorrect password")
            if failed >= AUDITOR_LOGIN_ATTEMPTS:
                until = now + AUDITOR_LOCKOUT
                db.execute(
                    "UPDATE auditor SET failed_logins = ?, locked_until = ? WHERE id = 1",
                    (failed, stored(until)),
                )
                self._state._append_log(
                    db,
                    f"HSM Audit Login: Auditor locked out for 10 minutes after {failed} "
                    "consecutive bad login attempts.",
                )
                error = AuditorLockedByFailedLogins(
                    f"Incorrect Auditor password. That was bad login number {failed} in a row, so "
                    f"the Auditor is locked out until {stored(until)} (UTC)."
                )
            else:
                db.execute(
                    "UPDATE auditor SET failed_logins = ?, locked_until = NULL WHERE id = 1",
                    (failed,),
                )
                error = PinIncorrect(
                    f"Incorrect Auditor password. {AUDITOR_LOGIN_ATTEMPTS - failed} attempt(s) "
                    "left before a 10-minute lockout.",
                    attempts_left=AUDITOR_LOGIN_ATTEMPTS - failed,
                )
        raise error

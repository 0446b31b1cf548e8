"""Persistent state of one Luna appliance, in a SQLite file inside its state directory.

Every change is one transaction (WAL journal, synchronous=FULL), so a crash at any point
keeps every committed change and none of a half-done one. Passwords are stored only as
scrypt hashes; the cloning domain only as a digest. This module holds the v1 tables (device,
HSM, partitions, log); ``schema.py`` the tables issue 7 added, which the other core modules
read and write through :meth:`ApplianceState.transaction` and :meth:`ApplianceState.query`. The factory admin password is stored as
"no hash" (NULL): the device knows its factory default the way real firmware does. A provider-set
initial password is a hash with the change at first login still pending.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ...sqlite_state import SqliteState, connect
from .errors import (
    HsmNotInitialized,
    PartitionExists,
    PartitionLimitReached,
    PartitionNotFound,
    StateChanged,
    StateError,
)
from .product import MAX_PARTITIONS, SO_LOGIN_ATTEMPTS
from .schema import SCHEMA_VERSION, V2_SCHEMA, migrate, wipe_tenant_tables

DATABASE_NAME = "appliance.sqlite3"
#: Oldest log lines are dropped beyond this many, like a rotated syslog.
LOG_RETENTION = 10_000

ZEROIZED_BY_BAD_LOGINS = (
    "HSM Admin Login: HSM Zeroized due to three consecutive bad login attempts."
)
BAD_SO_LOGIN = "HSM Admin Login: incorrect password or PED key"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS device (
    id                    INTEGER PRIMARY KEY CHECK (id = 1),
    serial                TEXT NOT NULL,
    ssh_host_key          TEXT NOT NULL,     -- OpenSSH private key; replaced by a provider reset
    admin_password_hash   TEXT,              -- NULL: the factory password
    admin_must_change     INTEGER NOT NULL,
    monitoring            INTEGER NOT NULL,  -- provider monitor role for health telemetry
    next_partition_number INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS hsm (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    initialized      INTEGER NOT NULL,
    label            TEXT,
    domain_digest    TEXT,
    domain_secret_sealed BLOB,         -- the cloning domain's secret, sealed under the device key
    so_password_hash TEXT,
    failed_so_logins INTEGER NOT NULL,
    -- bumped whenever the HSM SO identity changes (init, zeroize, reset): ends SO logins
    generation       INTEGER NOT NULL,
    initialized_at   TEXT,
    zeroized_at      TEXT
);
CREATE TABLE IF NOT EXISTS partitions (
    serial     TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE COLLATE NOCASE,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS log (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,
    at   TEXT NOT NULL,
    line TEXT NOT NULL
);
""" + V2_SCHEMA


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_ssh_host_key() -> str:
    """A fresh ed25519 SSH host key in OpenSSH private key format."""
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode("ascii")


@dataclass(frozen=True, kw_only=True)
class DeviceRecord:
    serial: str
    ssh_host_key: str
    admin_password_hash: str | None
    admin_must_change: bool
    monitoring: bool

    @property
    def admin_password_is_factory(self) -> bool:
        return self.admin_password_hash is None


@dataclass(frozen=True, kw_only=True)
class HsmRecord:
    initialized: bool
    label: str | None
    domain_digest: str | None
    so_password_hash: str | None
    failed_so_logins: int
    generation: int

    @property
    def zeroized(self) -> bool:
        """A zeroized HSM (also a brand-new one) has no SO, label or partitions."""
        return not self.initialized


@dataclass(frozen=True, kw_only=True)
class PartitionRecord:
    serial: str
    name: str
    created_at: str
    objects: int = 0


@dataclass(frozen=True, kw_only=True)
class LogEntry:
    at: str
    line: str


@dataclass(frozen=True, kw_only=True)
class SoLoginFailure:
    consecutive_failures: int
    zeroized: bool

    @property
    def attempts_left(self) -> int:
        return max(0, SO_LOGIN_ATTEMPTS - self.consecutive_failures)


class ApplianceState(SqliteState):
    """The appliance's persistent state. Open with :meth:`open`; close with :meth:`close`."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        super().__init__(db, path)
        #: Bumped after every committed change: in-memory views of the state reload when it moved.
        self.epoch = 0

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, state_dir: Path, serial: str) -> ApplianceState:
        """Open (creating on first use) the state of the device ``serial`` in ``state_dir``."""
        path, db = connect(
            state_dir, DATABASE_NAME, "synchronous=FULL", "foreign_keys=ON", "secure_delete=ON"
        )
        try:
            state = cls(db, path)
            state._create_or_check(serial)
        except BaseException:
            db.close()
            raise
        return state

    def _create_or_check(self, serial: str) -> None:
        with self._schema_transaction(_SCHEMA, SCHEMA_VERSION, StateError, migrate) as db:
            device = db.execute("SELECT serial FROM device WHERE id = 1").fetchone()
            if device is None:
                db.execute(
                    "INSERT INTO device (id, serial, ssh_host_key, admin_password_hash,"
                    " admin_must_change, monitoring, next_partition_number)"
                    " VALUES (1, ?, ?, NULL, 1, 1, 1)",
                    (serial, new_ssh_host_key()),
                )
                db.execute(
                    "INSERT INTO hsm (id, initialized, failed_so_logins, generation)"
                    " VALUES (1, 0, 0, 1)"
                )
            elif device[0] != serial:
                raise StateError(
                    f"{self.path.parent} holds the state of device {device[0]}, not {serial}"
                )

    def _read(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            with super()._transaction() as db:
                yield db
            self.epoch += 1

    def transaction(self):
        """One write transaction (``BEGIN IMMEDIATE ... COMMIT``) for the other core modules."""
        return self._transaction()

    def query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        """Rows of one read, for the other core modules."""
        return self._read(sql, params)

    def scrub(self) -> None:
        """Fold the write-ahead log into the database and truncate it: with secure_delete, the
        bytes of deleted rows (sealed keys) are then gone from the files."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @property
    def lock(self):
        """The lock every access to the database holds (re-entrant)."""
        return self._lock

    # -- device and appliance admin -------------------------------------------------------

    def device(self) -> DeviceRecord:
        (row,) = self._read(
            "SELECT serial, ssh_host_key, admin_password_hash, admin_must_change, monitoring"
            " FROM device WHERE id = 1"
        )
        return DeviceRecord(
            serial=row[0],
            ssh_host_key=row[1],
            admin_password_hash=row[2],
            admin_must_change=bool(row[3]),
            monitoring=bool(row[4]),
        )

    def set_admin_password(self, password_hash: str) -> None:
        """Store the admin's new password hash; this ends the forced change."""
        with self._transaction() as db:
            db.execute(
                "UPDATE device SET admin_password_hash = ?, admin_must_change = 0 WHERE id = 1",
                (password_hash,),
            )

    def set_initial_admin_password(self, password_hash: str) -> bool:
        """The provider's per-HSM initial admin password, accepted only while the admin has
        never changed the password (factory state, or initial password still unchanged).

        The forced change at first login stays pending. False: the admin changed it already.
        """
        with self._transaction() as db:
            return db.execute(
                "UPDATE device SET admin_password_hash = ? WHERE id = 1 AND admin_must_change = 1",
                (password_hash,),
            ).rowcount == 1

    def set_monitoring(self, enabled: bool) -> None:
        with self._transaction() as db:
            db.execute("UPDATE device SET monitoring = ? WHERE id = 1", (int(enabled),))

    # -- HSM ----------------------------------------------------------------------------

    def hsm_domain_secret_sealed(self) -> bytes | None:
        """The HSM's cloning domain secret, sealed (None: not initialized, or before v3)."""
        rows = self._read("SELECT domain_secret_sealed FROM hsm WHERE id = 1")
        return None if not rows or rows[0][0] is None else bytes(rows[0][0])

    def hsm(self) -> HsmRecord:
        (row,) = self._read(
            "SELECT initialized, label, domain_digest, so_password_hash, failed_so_logins,"
            " generation FROM hsm WHERE id = 1"
        )
        return HsmRecord(
            initialized=bool(row[0]),
            label=row[1],
            domain_digest=row[2],
            so_password_hash=row[3],
            failed_so_logins=row[4],
            generation=row[5],
        )

    def hard_init(self, *, label: str, domain_digest: str, so_password_hash: str,
                  domain_secret_sealed: bytes | None = None) -> int:
        """Initialize a zeroized HSM: new SO, label and cloning domain. Returns the generation."""
        with self._transaction() as db:
            (initialized,) = db.execute("SELECT initialized FROM hsm WHERE id = 1").fetchone()
            if initialized:
                raise StateChanged("The HSM was initialized meanwhile; nothing was changed.")
            db.execute("DELETE FROM partitions")
            db.execute(
                "UPDATE hsm SET initialized = 1, label = ?, domain_digest = ?,"
                " domain_secret_sealed = ?, so_password_hash = ?, failed_so_logins = 0,"
                " generation = generation + 1, initialized_at = ? WHERE id = 1",
                (label, domain_digest, domain_secret_sealed, so_password_hash, _now()),
            )
            if domain_secret_sealed is not None:
                db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('device_key_used', '1')")
            return db.execute("SELECT generation FROM hsm WHERE id = 1").fetchone()[0]

    def soft_init(self, *, label: str, generation: int) -> None:
        """Re-initialize an initialized HSM: partitions and objects go; SO and domain stay."""
        with self._transaction() as db:
            self._require_generation(db, generation)
            db.execute("DELETE FROM partitions")
            db.execute("UPDATE hsm SET label = ?, initialized_at = ? WHERE id = 1", (label, _now()))

    def zeroize(self, reason: str | None = None) -> None:
        """Erase the HSM: partitions, objects, SO credential, label and cloning domain."""
        with self._transaction() as db:
            self._zeroize(db)
            if reason:
                self._append_log(db, reason)

    @staticmethod
    def _zeroize(db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM partitions")
        db.execute(
            "UPDATE hsm SET initialized = 0, label = NULL, domain_digest = NULL,"
            " domain_secret_sealed = NULL,"
            " so_password_hash = NULL, failed_so_logins = 0, generation = generation + 1,"
            " initialized_at = NULL, zeroized_at = ? WHERE id = 1",
            (_now(),),
        )

    @staticmethod
    def _require_generation(db: sqlite3.Connection, generation: int) -> None:
        initialized, current = db.execute(
            "SELECT initialized, generation FROM hsm WHERE id = 1"
        ).fetchone()
        if not initialized or current != generation:
            raise StateChanged(
                "The HSM was zeroized or re-initialized meanwhile; nothing was changed."
            )

    def record_so_login_success(self, generation: int) -> None:
        """A correct HSM SO password: the consecutive-failure counter starts again at 0."""
        with self._transaction() as db:
            self._require_generation(db, generation)
            db.execute("UPDATE hsm SET failed_so_logins = 0 WHERE id = 1")

    def record_so_login_failure(self, generation: int) -> SoLoginFailure:
        """A wrong HSM SO password; the third in a row zeroizes the HSM in the same transaction."""
        with self._transaction() as db:
            self._require_generation(db, generation)
            db.execute("UPDATE hsm SET failed_so_logins = failed_so_logins + 1 WHERE id = 1")
            (failures,) = db.execute("SELECT failed_so_logins FROM hsm WHERE id = 1").fetchone()
            self._append_log(db, BAD_SO_LOGIN)
            if failures >= SO_LOGIN_ATTEMPTS:
                self._zeroize(db)
                self._append_log(db, ZEROIZED_BY_BAD_LOGINS)
                return SoLoginFailure(consecutive_failures=failures, zeroized=True)
            return SoLoginFailure(consecutive_failures=failures, zeroized=False)

    # -- partitions ---------------------------------------------------------------------

    def partitions(self) -> list[PartitionRecord]:
        rows = self._read(
            "SELECT p.serial, p.name, p.created_at, COUNT(o.handle) FROM partitions p"
            " LEFT JOIN keystore_objects o ON o.serial = p.serial"
            " GROUP BY p.serial ORDER BY p.serial"
        )
        return [
            PartitionRecord(serial=r[0], name=r[1], created_at=r[2], objects=r[3]) for r in rows
        ]

    def create_partition(self, name: str, *, generation: int) -> PartitionRecord:
        """Create partition ``name``; refuses duplicates and more than the model's maximum."""
        with self._transaction() as db:
            self._require_generation(db, generation)
            (count,) = db.execute("SELECT COUNT(*) FROM partitions").fetchone()
            if count >= MAX_PARTITIONS:
                raise PartitionLimitReached(
                    f"The HSM already has {count} partitions, the maximum for this model "
                    f"({MAX_PARTITIONS}). Delete one first: partition delete -partition <name>"
                )
            existing = db.execute(
                "SELECT name FROM partitions WHERE name = ?", (name,)
            ).fetchone()
            if existing:
                raise PartitionExists(f"A partition named '{existing[0]}' already exists.")
            serial, number = db.execute(
                "SELECT serial, next_partition_number FROM device WHERE id = 1"
            ).fetchone()
            partition_serial = f"{serial}{number:03d}"
            created_at = _now()
            db.execute(
                "INSERT INTO partitions (serial, name, created_at) VALUES (?, ?, ?)",
                (partition_serial, name, created_at),
            )
            db.execute(
                "UPDATE device SET next_partition_number = next_partition_number + 1 WHERE id = 1"
            )
            return PartitionRecord(serial=partition_serial, name=name, created_at=created_at)

    def delete_partition(self, name: str, *, generation: int) -> PartitionRecord:
        """Delete partition ``name`` and every object in it."""
        with self._transaction() as db:
            self._require_generation(db, generation)
            row = db.execute(
                "SELECT serial, name, created_at FROM partitions WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                raise PartitionNotFound(
                    f"There is no partition named '{name}'. See: partition list"
                )
            db.execute("DELETE FROM partitions WHERE serial = ?", (row[0],))
            return PartitionRecord(serial=row[0], name=row[1], created_at=row[2])

    def require_initialized(self) -> HsmRecord:
        hsm = self.hsm()
        if not hsm.initialized:
            raise HsmNotInitialized(
                "The HSM is zeroized (not initialized). Initialize it first: "
                "hsm init -label <label>"
            )
        return hsm

    # -- counts of things the shell cannot create yet -----------------------------------

    def object_count(self) -> int:
        return self._read("SELECT COUNT(*) FROM keystore_objects")[0][0]

    def client_certificate_count(self) -> int:
        return self._read("SELECT COUNT(*) FROM ntls_clients")[0][0]

    # -- appliance log ------------------------------------------------------------------

    def append_log(self, line: str) -> None:
        with self._transaction() as db:
            self._append_log(db, line)

    @staticmethod
    def _append_log(db: sqlite3.Connection, line: str) -> None:
        cursor = db.execute("INSERT INTO log (at, line) VALUES (?, ?)", (_now(), line))
        if cursor.lastrowid and cursor.lastrowid % 100 == 0:
            db.execute("DELETE FROM log WHERE id <= ?", (cursor.lastrowid - LOG_RETENTION,))

    def log_tail(self, entries: int, search: str | None = None) -> list[LogEntry]:
        """The last ``entries`` log lines (optionally only those containing ``search``)."""
        if search:
            rows = self._read(
                "SELECT at, line FROM log WHERE instr(lower(line), lower(?)) > 0"
                " ORDER BY id DESC LIMIT ?",
                (search, entries),
            )
        else:
            rows = self._read("SELECT at, line FROM log ORDER BY id DESC LIMIT ?", (entries,))
        return [LogEntry(at=r[0], line=r[1]) for r in reversed(rows)]

    def log_count(self) -> int:
        return self._read("SELECT COUNT(*) FROM log")[0][0]

    # -- provider operations ------------------------------------------------------------

    def factory_reset(self, also: Callable[[sqlite3.Connection], None] | None = None) -> str:
        """Erase every trace of the tenant and return the device's new SSH host key.

        One transaction (``also`` runs inside it): a crash leaves either the old tenant's state
        or a pristine device.
        """
        host_key = new_ssh_host_key()
        with self._transaction() as db:
            self._zeroize(db)
            db.execute("UPDATE hsm SET zeroized_at = NULL WHERE id = 1")
            wipe_tenant_tables(db)
            if also is not None:
                also(db)
            db.execute("DELETE FROM log")
            db.execute("DELETE FROM sqlite_sequence WHERE name = 'log'")
            db.execute(
                "UPDATE device SET ssh_host_key = ?, admin_password_hash = NULL,"
                " admin_must_change = 1, monitoring = 1, next_partition_number = 1 WHERE id = 1",
                (host_key,),
            )
        return host_key

    def tenant_state_findings(self) -> list[str]:
        """Every piece of tenant state still present; empty when the device is pristine."""
        findings: list[str] = []
        with self._lock:
            partitions = self._db.execute("SELECT COUNT(*) FROM partitions").fetchone()[0]
            objects = self.object_count()
            device = self.device()
            hsm = self.hsm()
            next_partition = self._db.execute(
                "SELECT next_partition_number FROM device WHERE id = 1"
            ).fetchone()[0]
            logs = self.log_count()
            certificates = self.client_certificate_count()
        if partitions:
            findings.append(f"{partitions} partition{'s' if partitions != 1 else ''} present")
        if objects:
            findings.append(f"{objects} object{'s' if objects != 1 else ''} present")
        if hsm.initialized:
            findings.append("HSM is initialized")
        if hsm.label is not None:
            findings.append("HSM label is set")
        if hsm.so_password_hash is not None:
            findings.append("HSM SO credential is set")
        if hsm.domain_digest is not None:
            findings.append("HSM cloning domain is set")
        if hsm.failed_so_logins:
            findings.append(f"{hsm.failed_so_logins} failed HSM SO login(s) counted")
        if not device.admin_password_is_factory:
            findings.append("appliance admin password is not the factory default")
        if not device.admin_must_change:
            findings.append("appliance admin password change at first login is not pending")
        if logs:
            findings.append(f"{logs} appliance log line{'s' if logs != 1 else ''} present")
        if certificates:
            findings.append(
                f"{certificates} registered client certificate{'s' if certificates != 1 else ''}"
                " present"
            )
        if not device.monitoring:
            findings.append("provider monitoring is disabled (factory default: enabled)")
        if next_partition != 1:
            findings.append("partition numbering is not at its factory start")
        return findings

"""Persistent state of one payShield appliance: SQLite in its state directory.

Secret material (LMKs) is sealed with AES-256-GCM under a device master key kept next to the
database in ``master.key`` (mode 0600); a release erases every customer row and rotates that
key, so a copy of an old database or free page cannot be opened afterwards. ``secure_delete``
overwrites freed pages as well. Every change is one transaction (WAL journal).
"""

from __future__ import annotations

import enum
import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hsmcloud.private_files import make_private, write_private

from ..sqlite_state import SqliteState, connect
from .errors import StateError
from .product import FIRMWARE_VERSION

DATABASE_NAME = "payshield.sqlite3"
MASTER_KEY_NAME = "master.key"
SCHEMA_VERSION = 1
#: Oldest entries are dropped beyond this many per log.
LOG_RETENTION = 50_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS device (
    id                INTEGER PRIMARY KEY CHECK (id = 1),
    serial            TEXT NOT NULL,
    firmware          TEXT NOT NULL,
    cps_limit_lifted  INTEGER NOT NULL,    -- provider benchmark setting, not customer content
    tenant_token_hash TEXT                 -- sha256 of the tenant's management token
);
CREATE TABLE IF NOT EXISTS lmks (
    slot        INTEGER PRIMARY KEY,
    scheme      TEXT NOT NULL,             -- 'variant' | 'variant3' | 'keyblock'
    check_value TEXT NOT NULL,
    sealed      BLOB NOT NULL,             -- nonce || AES-GCM(master key, material)
    cards       TEXT NOT NULL,             -- JSON list of the card ids that formed it
    loaded_at   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL                    -- JSON
);
CREATE TABLE IF NOT EXISTS audit_log (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     TEXT NOT NULL,
    actor  TEXT NOT NULL,                  -- 'tenant' | 'provider' | 'host'
    action TEXT NOT NULL,
    result TEXT NOT NULL,                  -- 'ok' or the failure
    detail TEXT NOT NULL                   -- JSON, never secrets
);
CREATE TABLE IF NOT EXISTS error_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT NOT NULL,
    source     TEXT NOT NULL,              -- 'HOST1' | 'HOST2' | 'management'
    command    TEXT NOT NULL,
    error_code TEXT NOT NULL,
    detail     TEXT NOT NULL               -- JSON
);
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Claim(enum.Enum):
    """The outcome of registering a tenant credential."""

    CLAIMED = "claimed"
    REPEATED = "repeated"  # already registered with this very credential
    REFUSED = "refused"  # another credential holds the device


@dataclass(frozen=True, kw_only=True)
class DeviceRecord:
    serial: str
    firmware: str
    cps_limit_lifted: bool
    tenant_token_hash: str | None


@dataclass(frozen=True, kw_only=True)
class LmkRecord:
    slot: int
    scheme: str
    check_value: str
    material: bytes
    cards: list[str]
    loaded_at: str


class ApplianceState(SqliteState):
    """The appliance's persistent state. Open with :meth:`open`; close with :meth:`close`."""

    def __init__(self, db: sqlite3.Connection, path: Path, master_key_path: Path) -> None:
        super().__init__(db, path)
        self._master_key_path = master_key_path
        self._master_key = self._load_or_create_master_key()

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, state_dir: Path, serial: str) -> ApplianceState:
        # synchronous=NORMAL under WAL: a commit is durable across a process crash; an OS crash can
        # lose the last transactions but never corrupts. Keeps host-path logging cheap.
        path, db = connect(state_dir, DATABASE_NAME, "synchronous=NORMAL", "secure_delete=ON")
        try:
            state = cls(db, path, Path(state_dir) / MASTER_KEY_NAME)
            state._create_or_check(serial)
        except BaseException:
            db.close()
            raise
        return state

    def _create_or_check(self, serial: str) -> None:
        with self._schema_transaction(_SCHEMA, SCHEMA_VERSION, StateError) as db:
            device = db.execute("SELECT serial FROM device WHERE id = 1").fetchone()
            if device is None:
                db.execute(
                    "INSERT INTO device VALUES (1, ?, ?, 0, NULL)", (serial, FIRMWARE_VERSION)
                )
            elif device[0] != serial:
                raise StateError(f"state directory belongs to device {device[0]}, not {serial}")
        # Decrypt every sealed LMK once, so a wrong master key fails loudly at start.
        self.lmks()

    # -- master key ----------------------------------------------------------------------

    def _load_or_create_master_key(self) -> bytes:
        path = self._master_key_path
        if path.exists():
            make_private(path)
            key = bytes.fromhex(path.read_text().strip())
            if len(key) != 32:
                raise StateError(f"{path} does not hold a 256-bit key")
            return key
        return self._write_master_key(os.urandom(32))

    def _write_master_key(self, key: bytes) -> bytes:
        write_private(self._master_key_path, key.hex().encode("ascii"))
        return key

    def _seal(self, data: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + AESGCM(self._master_key).encrypt(nonce, data, aad)

    def _unseal(self, blob: bytes, aad: bytes) -> bytes:
        try:
            return AESGCM(self._master_key).decrypt(blob[:12], blob[12:], aad)
        except InvalidTag as exc:
            raise StateError("sealed state cannot be opened with this device's master key") from exc

    # -- device --------------------------------------------------------------------------

    def device(self) -> DeviceRecord:
        with self._lock:
            row = self._db.execute(
                "SELECT serial, firmware, cps_limit_lifted, tenant_token_hash FROM device"
            ).fetchone()
        return DeviceRecord(
            serial=row[0], firmware=row[1], cps_limit_lifted=bool(row[2]), tenant_token_hash=row[3]
        )

    def count_start(self) -> int:
        """Count one more start of the appliance (a device fact, kept across releases)."""
        with self._transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'starts'").fetchone()
            starts = int(row[0]) + 1 if row else 1
            db.execute("INSERT OR REPLACE INTO meta VALUES ('starts', ?)", (str(starts),))
        return starts

    def starts(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'starts'").fetchone()
        return int(row[0]) if row else 0

    def set_firmware(self, version: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE device SET firmware = ?", (version,))

    def set_cps_limit_lifted(self, lifted: bool) -> None:
        with self._transaction() as db:
            db.execute("UPDATE device SET cps_limit_lifted = ?", (int(lifted),))

    def claim_tenant_token_hash(self, digest: str) -> Claim:
        """Register the tenant's credential unless another one is registered."""
        with self._transaction() as db:  # BEGIN IMMEDIATE: of two racing claims exactly one wins
            (current,) = db.execute("SELECT tenant_token_hash FROM device").fetchone()
            if current is None:
                db.execute("UPDATE device SET tenant_token_hash = ?", (digest,))
                return Claim.CLAIMED
            # The same digest again is a claim whose answer was lost: it may be repeated.
            return Claim.REPEATED if current == digest else Claim.REFUSED

    def replace_tenant_token_hash(self, digest: str) -> None:
        """The tenant's new credential (rotation); the old one stops working with this commit."""
        with self._transaction() as db:
            db.execute("UPDATE device SET tenant_token_hash = ?", (digest,))

    # -- LMKs ----------------------------------------------------------------------------

    @staticmethod
    def _lmk_aad(slot: int, scheme: str) -> bytes:
        return f"lmk:{slot}:{scheme}".encode("ascii")

    def put_lmk(self, *, slot: int, scheme: str, check_value: str, material: bytes, cards: list[str]) -> None:
        sealed = self._seal(material, self._lmk_aad(slot, scheme))
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO lmks VALUES (?, ?, ?, ?, ?, ?)",
                (slot, scheme, check_value, sealed, json.dumps(cards), _now()),
            )

    def delete_lmk(self, slot: int) -> bool:
        with self._transaction() as db:
            return db.execute("DELETE FROM lmks WHERE slot = ?", (slot,)).rowcount > 0

    def lmks(self) -> list[LmkRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT slot, scheme, check_value, sealed, cards, loaded_at FROM lmks ORDER BY slot"
            ).fetchall()
        return [
            LmkRecord(
                slot=slot,
                scheme=scheme,
                check_value=check_value,
                material=self._unseal(sealed, self._lmk_aad(slot, scheme)),
                cards=json.loads(cards),
                loaded_at=loaded_at,
            )
            for slot, scheme, check_value, sealed, cards, loaded_at in rows
        ]

    # -- settings ------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        with self._lock:
            rows = self._db.execute("SELECT key, value FROM settings").fetchall()
        return {key: json.loads(value) for key, value in rows}

    def put_settings(self, values: dict[str, Any]) -> None:
        with self._transaction() as db:
            for key, value in values.items():
                db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, json.dumps(value)))

    # -- host TLS server identity --------------------------------------------------------

    _HOST_TLS_IDENTITY = "host_tls_identity"
    _HOST_TLS_AAD = b"host-tls-key"

    def host_tls_identity(self) -> tuple[str, str] | None:
        """The host ports' TLS (certificate PEM, private key PEM), or None before the first."""
        with self._lock:
            row = self._db.execute("SELECT value FROM settings WHERE key = ?", (self._HOST_TLS_IDENTITY,)).fetchone()
        if row is None:
            return None
        stored = json.loads(row[0])
        key = self._unseal(bytes.fromhex(stored["sealed_key"]), self._HOST_TLS_AAD)
        return stored["certificate"], key.decode("ascii")

    def put_host_tls_identity(self, certificate: str, private_key: str) -> None:
        """Keep the identity, its key sealed under the master key; a release erases it (a setting)."""
        sealed = self._seal(private_key.encode("ascii"), self._HOST_TLS_AAD)
        value = json.dumps({"certificate": certificate, "sealed_key": sealed.hex()})
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (self._HOST_TLS_IDENTITY, value))

    # -- logs ----------------------------------------------------------------------------

    def audit(self, *, actor: str, action: str, result: str = "ok", **detail: Any) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO audit_log (at, actor, action, result, detail) VALUES (?, ?, ?, ?, ?)",
                (_now(), actor, action, result, json.dumps(detail, sort_keys=True)),
            )
            db.execute(
                "DELETE FROM audit_log WHERE id <= (SELECT MAX(id) FROM audit_log) - ?",
                (LOG_RETENTION,),
            )

    def error(self, *, source: str, command: str, error_code: str, **detail: Any) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO error_log (at, source, command, error_code, detail) VALUES (?, ?, ?, ?, ?)",
                (_now(), source, command, error_code, json.dumps(detail, sort_keys=True)),
            )
            db.execute(
                "DELETE FROM error_log WHERE id <= (SELECT MAX(id) FROM error_log) - ?",
                (LOG_RETENTION,),
            )

    def errors(self, entries: list[dict[str, Any]]) -> None:
        """Several error-log entries (``source``, ``command``, ``error_code`` + detail) in one transaction."""
        if not entries:
            return
        at = _now()
        rows = []
        for entry in entries:
            detail = dict(entry)
            source, command, code = detail.pop("source"), detail.pop("command"), detail.pop("error_code")
            rows.append((at, source, command, code, json.dumps(detail, sort_keys=True)))
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO error_log (at, source, command, error_code, detail) VALUES (?, ?, ?, ?, ?)", rows
            )
            db.execute(
                "DELETE FROM error_log WHERE id <= (SELECT MAX(id) FROM error_log) - ?",
                (LOG_RETENTION,),
            )

    def audit_entries(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, at, actor, action, result, detail FROM audit_log ORDER BY id"
            ).fetchall()
        return [
            {"id": i, "at": at, "actor": actor, "action": action, "result": result, **json.loads(d)}
            for i, at, actor, action, result, d in rows
        ]

    def error_entries(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, at, source, command, error_code, detail FROM error_log ORDER BY id"
            ).fetchall()
        return [
            {"id": i, "at": at, "source": s, "command": c, "error_code": e, **json.loads(d)}
            for i, at, s, c, e, d in rows
        ]

    # -- release -------------------------------------------------------------------------

    def release(self) -> None:
        """Erase all customer content (LMKs, settings, logs, tenant token); rotate the master key."""
        with self._transaction() as db:
            for table in ("lmks", "settings", "audit_log", "error_log"):
                db.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
            db.execute("UPDATE device SET tenant_token_hash = NULL")
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.execute("VACUUM")
            self._master_key = self._write_master_key(os.urandom(32))

    def customer_content_findings(self) -> list[str]:
        """Every kind of customer content still stored; empty when there is none."""
        findings: list[str] = []
        with self._lock:
            # Provider entries (licence setting, tenant credential) are not customer content.
            for query, what in (
                ("SELECT COUNT(*) FROM lmks", "LMK(s) loaded"),
                ("SELECT COUNT(*) FROM settings", "customer setting(s) stored"),
                ("SELECT COUNT(*) FROM audit_log WHERE actor != 'provider'", "audit log entries"),
                ("SELECT COUNT(*) FROM error_log", "error log entries"),
            ):
                count = self._db.execute(query).fetchone()[0]
                if count:
                    findings.append(f"{count} {what}")
        if self.device().tenant_token_hash is not None:
            findings.append("a tenant management credential is set")
        return findings

"""State schema v3 (v2 plus the sealed cloning-domain secrets of issue 9): the tables issue 7 added (policies, Auditor, partition roles, keystore, NTLS
clients, the admin's files), and the migration from v1.

v1 had placeholder ``objects`` and ``client_certificates`` tables that no command ever wrote;
v2 replaces them with ``keystore_objects`` and ``ntls_clients``. A v1 state keeps its admin
password, HSM initialization, partitions and log; its partitions start uninitialized (v1 had
no partition roles).
"""

from __future__ import annotations

import hashlib
import sqlite3

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .errors import StateError

SCHEMA_VERSION = 3

V2_SCHEMA = """
CREATE TABLE IF NOT EXISTS hsm_policies (
    code  INTEGER PRIMARY KEY,
    value INTEGER NOT NULL             -- rows only for policies changed from their default
);
CREATE TABLE IF NOT EXISTS auditor (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    password_hash  TEXT NOT NULL,
    domain_digest  TEXT NOT NULL,
    failed_logins  INTEGER NOT NULL,
    locked_until   TEXT,               -- ISO time; the lockout is over when the clock passes it
    must_change    INTEGER NOT NULL,
    initialized_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS partition_state (
    serial         TEXT PRIMARY KEY REFERENCES partitions(serial) ON DELETE CASCADE,
    initialized    INTEGER NOT NULL,
    label          TEXT,
    domain_digest  TEXT,
    domain_secret_sealed BLOB,         -- the cloning domain's secret, sealed under the device key
    -- random, new at every init and zeroization: ends logins and sessions, binds sealed objects
    generation     INTEGER NOT NULL,
    key_sealed     BLOB,               -- the partition key, sealed under the device key
    key_id         TEXT,
    initialized_at TEXT
);
CREATE TABLE IF NOT EXISTS partition_roles (
    serial        TEXT NOT NULL REFERENCES partitions(serial) ON DELETE CASCADE,
    role          TEXT NOT NULL CHECK (role IN ('po', 'co', 'cu')),
    pin_hash      TEXT NOT NULL,
    must_change   INTEGER NOT NULL,
    failed_logins INTEGER NOT NULL,
    locked        INTEGER NOT NULL,
    PRIMARY KEY (serial, role)
);
CREATE TABLE IF NOT EXISTS partition_policies (
    serial TEXT NOT NULL REFERENCES partitions(serial) ON DELETE CASCADE,
    code   INTEGER NOT NULL,
    value  INTEGER NOT NULL,           -- rows only for policies changed from their default
    PRIMARY KEY (serial, code)
);
CREATE TABLE IF NOT EXISTS keystore_objects (
    handle        INTEGER PRIMARY KEY AUTOINCREMENT,
    serial        TEXT NOT NULL REFERENCES partitions(serial) ON DELETE CASCADE,
    generation    INTEGER NOT NULL,
    version       INTEGER NOT NULL,
    attributes    TEXT NOT NULL,       -- JSON of the non-sensitive attributes
    secret_sealed BLOB,                -- key material, sealed under the partition key
    created_at    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS keystore_objects_serial ON keystore_objects (serial);
CREATE TABLE IF NOT EXISTS ntls_clients (
    name            TEXT PRIMARY KEY COLLATE NOCASE,
    hostname        TEXT,
    ip              TEXT,
    certificate_pem TEXT NOT NULL,
    fingerprint     TEXT NOT NULL UNIQUE,  -- SHA-256 of the certificate's DER, hex
    registered_at   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ntls_client_partitions (
    client      TEXT NOT NULL REFERENCES ntls_clients(name) ON DELETE CASCADE,
    serial      TEXT NOT NULL REFERENCES partitions(serial) ON DELETE CASCADE,
    assigned_at TEXT NOT NULL,
    PRIMARY KEY (client, serial)
);
CREATE TABLE IF NOT EXISTS ntls_server (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    certificate_pem TEXT NOT NULL,
    key_sealed      BLOB NOT NULL,     -- the private key (PKCS#8 PEM), sealed under the device key
    created_at      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS admin_files (
    name        TEXT PRIMARY KEY,
    data        BLOB NOT NULL,
    uploaded_at TEXT NOT NULL
);
"""

#: Tables whose rows all belong to the tenant: a provider reset empties them.
TENANT_TABLES = (
    "keystore_objects",
    "partition_roles",
    "partition_policies",
    "partition_state",
    "ntls_client_partitions",
    "ntls_clients",
    "admin_files",
    "auditor",
    "hsm_policies",
)


def fingerprint(certificate_der: bytes) -> str:
    return hashlib.sha256(certificate_der).hexdigest()


def migrate(db: sqlite3.Connection, found_version: int) -> None:
    """Bring a state of ``found_version`` to :data:`SCHEMA_VERSION` (inside the open transaction)."""
    if found_version < 2:
        _v1_to_v2(db)
    if found_version < 3:
        _v2_to_v3(db)


def _table_exists(db: sqlite3.Connection, name: str) -> bool:
    return db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone() is not None


def _v1_to_v2(db: sqlite3.Connection) -> None:
    if _table_exists(db, "objects"):
        (count,) = db.execute("SELECT COUNT(*) FROM objects").fetchone()
        if count:
            raise StateError(
                f"The v1 state holds {count} placeholder object rows that no v1 command could "
                "have written; it cannot be migrated."
            )
        db.execute("DROP TABLE objects")
    if _table_exists(db, "client_certificates"):
        for name, hostname, pem, registered_at in db.execute(
            "SELECT name, hostname, certificate_pem, registered_at FROM client_certificates"
        ).fetchall():
            try:
                der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(Encoding.DER)
            except ValueError:
                raise StateError(
                    f"The v1 client certificate of {name!r} is not a PEM certificate."
                ) from None
            db.execute(
                "INSERT INTO ntls_clients (name, hostname, ip, certificate_pem, fingerprint,"
                " registered_at) VALUES (?, ?, NULL, ?, ?, ?)",
                (name, hostname, pem, fingerprint(der), registered_at),
            )
        db.execute("DROP TABLE client_certificates")


def _add_column(db: sqlite3.Connection, table: str, column: str, declaration: str) -> None:
    columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})").fetchall()}
    if column not in columns:
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


def _v2_to_v3(db: sqlite3.Connection) -> None:
    """v3 keeps each cloning domain's secret sealed (issue 9). A v2 HSM or partition has only
    the domain's digest: it clones and backs up after it is initialized again."""
    _add_column(db, "hsm", "domain_secret_sealed", "BLOB")
    _add_column(db, "partition_state", "domain_secret_sealed", "BLOB")


def wipe_tenant_tables(db: sqlite3.Connection) -> None:
    """Empty every v2 table a tenant can fill (inside a provider reset's transaction)."""
    for table in TENANT_TABLES:
        db.execute(f"DELETE FROM {table}")
    db.execute("DELETE FROM ntls_server")
    db.execute("DELETE FROM sqlite_sequence WHERE name = 'keystore_objects'")

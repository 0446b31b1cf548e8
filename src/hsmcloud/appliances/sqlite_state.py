"""What every appliance's SQLite state shares: one connection, one lock, one transaction shape.

Each change is one `BEGIN IMMEDIATE ... COMMIT`, so a crash at any point leaves the last
committed state; the lock serialises the appliance's threads (the event loop and the workers
it hands password hashing to)."""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from hsmcloud.private_files import private_dir, private_sqlite


def connect(state_dir: Path, name: str, *pragmas: str) -> tuple[Path, sqlite3.Connection]:
    """Open (creating on first use) an appliance's database in WAL mode, plus its own pragmas.

    The directory is 0700 and the database with its -wal/-shm files 0600: they hold the SSH host
    key, password hashes and sealed key material."""
    state_dir = private_dir(Path(state_dir))
    path = private_sqlite(state_dir / name)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    try:
        for pragma in ("journal_mode=WAL", *pragmas):
            db.execute(f"PRAGMA {pragma}")
    except BaseException:
        db.close()
        raise
    return path, db


class SqliteState:
    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _schema_transaction(self, schema: str, version: int, error: type[Exception],
                            migrate: Callable[[sqlite3.Connection, int], None] | None = None,
                            ) -> Iterator[sqlite3.Connection]:
        """Create the tables (idempotent: a crash half-way is simply re-run), refuse a state written
        by newer software, migrate one written by older software (``migrate(db, found_version)``, in
        the same transaction as the version bump), and go on in the same transaction (the caller
        checks the device row)."""
        with self._lock:
            self._db.executescript(schema)
        with self._transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(version),))
            elif int(row[0]) > version:
                raise error(f"{self.path} has state schema {row[0]}; this software knows only up "
                            f"to {version}")
            elif int(row[0]) < version and migrate is not None:
                migrate(db, int(row[0]))
                db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
            yield db

"""What every appliance's SQLite state shares: one connection, one lock, one transaction shape.

Each change is one `BEGIN IMMEDIATE ... COMMIT`, so a crash at any point leaves the last
committed state; the lock serialises the appliance's threads (the event loop and the workers
it hands password hashing to)."""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class SqliteState:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
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

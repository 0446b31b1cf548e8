"""The appliance admin's file area: what ``scp`` puts on and takes from the appliance.

Files are client certificates (``*.pem``, small) and partition backups (``*.bak``, written by
``partition backup``, or uploaded to be restored), kept in the appliance state, so a provider
reset erases them with everything else. ``server.pem``, the NTLS server certificate, is
always there to download and cannot be overwritten.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .clients import ClientRegistry
from .clock import Clock, stored
from .errors import FileNotFound, FileRefused
from .state import ApplianceState

SERVER_CERTIFICATE_FILE = "server.pem"
MAX_FILE_BYTES = 64 * 1024
#: A backup travels in one NTLS frame (16 MiB) too.
MAX_BACKUP_BYTES = 16 * 1024 * 1024
#: What the whole file area may hold.
MAX_TOTAL_BYTES = 128 * 1024 * 1024
MAX_FILES = 64
BACKUP_SUFFIX = ".bak"
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\.(pem|bak)")


def max_size(name: str) -> int:
    """The largest file of this name the area takes: backups are larger than certificates."""
    return MAX_BACKUP_BYTES if name.endswith(BACKUP_SUFFIX) else MAX_FILE_BYTES


@dataclass(frozen=True, kw_only=True)
class FileEntry:
    name: str
    size: int
    modified: str
    #: server.pem: provided by the appliance, read-only.
    builtin: bool = False


def check_upload_name(name: str) -> str:
    if name == SERVER_CERTIFICATE_FILE:
        raise FileRefused(f"{SERVER_CERTIFICATE_FILE} is the appliance's own certificate; it "
                          "cannot be overwritten (sysconf regenCert makes a new one).")
    if not _FILE_NAME.fullmatch(name):
        raise FileRefused(
            f"'{name}' cannot be uploaded: only certificate files named <name>.pem and partition "
            "backups named <name>.bak (letters, digits, '.', '_', '-'; at most 68 characters) "
            "are accepted."
        )
    return name


class AdminFiles:
    def __init__(self, state: ApplianceState, clients: ClientRegistry, clock: Clock) -> None:
        self._state = state
        self._clients = clients
        self._clock = clock

    def list(self) -> list[FileEntry]:
        server = self._clients.server_certificate()
        entries = [
            FileEntry(name=SERVER_CERTIFICATE_FILE, size=len(server.certificate_pem.encode()),
                      modified=server.created_at, builtin=True)
        ]
        entries += [
            FileEntry(name=name, size=size, modified=uploaded_at)
            for name, size, uploaded_at in self._state.query(
                "SELECT name, length(data), uploaded_at FROM admin_files ORDER BY name"
            )
        ]
        return entries

    def uploaded_names(self) -> list[str]:
        return [e.name for e in self.list() if not e.builtin]

    def get(self, name: str) -> bytes:
        if name == SERVER_CERTIFICATE_FILE:
            return self._clients.server_certificate().certificate_pem.encode()
        rows = self._state.query("SELECT data FROM admin_files WHERE name = ?", (name,))
        if not rows:
            raise FileNotFound(f"There is no file '{name}'. See: my file list")
        return bytes(rows[0][0])

    def exists(self, name: str) -> bool:
        return name == SERVER_CERTIFICATE_FILE or bool(
            self._state.query("SELECT 1 FROM admin_files WHERE name = ?", (name,))
        )

    def put(self, name: str, data: bytes) -> FileEntry:
        """Store an upload (replacing a file of the same name)."""
        check_upload_name(name)
        if len(data) > max_size(name):
            raise FileRefused(f"'{name}' is {len(data)} bytes; files of its kind are limited to "
                              f"{max_size(name)} bytes.")
        now = stored(self._clock())
        with self._state.transaction() as db:
            (count,) = db.execute(
                "SELECT COUNT(*) FROM admin_files WHERE name != ?", (name,)
            ).fetchone()
            if count >= MAX_FILES:
                raise FileRefused(f"The file area already holds {count} files; delete some first "
                                  "(my file delete -file <name>).")
            (total,) = db.execute(
                "SELECT COALESCE(SUM(length(data)), 0) FROM admin_files WHERE name != ?", (name,)
            ).fetchone()
            if total + len(data) > MAX_TOTAL_BYTES:
                raise FileRefused(f"The file area holds {total} bytes; '{name}' ({len(data)} "
                                  f"bytes) would exceed its {MAX_TOTAL_BYTES}. Delete some files "
                                  "first (my file delete -file <name>).")
            db.execute(
                "INSERT INTO admin_files (name, data, uploaded_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET data = excluded.data,"
                " uploaded_at = excluded.uploaded_at",
                (name, bytes(data), now),
            )
            self._state._append_log(db, f"File '{name}' received ({len(data)} bytes).")
        return FileEntry(name=name, size=len(data), modified=now)

    def delete(self, name: str) -> None:
        if name == SERVER_CERTIFICATE_FILE:
            raise FileRefused(f"{SERVER_CERTIFICATE_FILE} is the appliance's own certificate; it "
                              "cannot be deleted.")
        with self._state.transaction() as db:
            if db.execute("DELETE FROM admin_files WHERE name = ?", (name,)).rowcount == 0:
                raise FileNotFound(f"There is no file '{name}'. See: my file list")

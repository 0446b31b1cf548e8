"""Files and directories only their owner may read: 0700 directories, 0600 files.

Everything under a state directory (store, keys, certificates, device states) is made through
these helpers, whoever created the directory and whatever the umask: an existing directory or
file is narrowed to the private mode too, so state written by an older version, or a directory
the user made beforehand, ends up private on the next start."""
from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
# SQLite creates these next to a database with the database file's own mode.
SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> Path:
    """`path` as a 0700 directory: missing levels are created private, an existing one is narrowed."""
    path = Path(path)
    missing = []
    level = path
    while not level.exists():
        missing.append(level)
        level = level.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:
            pass  # another process made it at the same moment; it is narrowed below
        os.chmod(directory, DIR_MODE)
    os.chmod(path, DIR_MODE)
    return path


def make_private(path: Path) -> None:
    """Narrow an existing file to 0600 (nothing to do if it does not exist)."""
    try:
        os.chmod(path, FILE_MODE)
    except FileNotFoundError:
        pass


def _write_temp(path: Path, data: bytes) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), FILE_MODE)  # a leftover temporary file keeps its old mode otherwise
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return tmp


def write_private(path: Path, data: bytes) -> None:
    """Write `path` atomically as a 0600 file (its directory must exist)."""
    path = Path(path)
    os.replace(_write_temp(path, data), path)


def write_private_once(path: Path, data: bytes) -> bool:
    """Create `path` as a 0600 file unless it exists (of two racing writers the first wins).

    Returns whether this call wrote it."""
    path = Path(path)
    tmp = _write_temp(path, data)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def private_sqlite(path: Path) -> Path:
    """Prepare a SQLite database file before it is opened: 0600, created empty if missing.

    SQLite gives the -wal, -shm and -journal files it creates the database file's mode, so
    creating the database file 0600 first keeps them private too; ones left by an earlier run
    are narrowed here. The directory is the caller's (`private_dir` for a state directory)."""
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    for suffix in SQLITE_SIDECARS:
        make_private(path.with_name(path.name + suffix))
    return path

"""``scp`` and ``sftp`` to the appliance: the admin's file area as one flat virtual directory.

OpenSSH's ``scp`` speaks SFTP by default and the legacy SCP protocol with ``-O``; asyncssh
serves both through this SFTP server. Nothing touches the host's file system: uploads
(certificates ``*.pem`` and partition backups ``*.bak``, size-limited) go into the appliance state, and ``server.pem`` is
the NTLS server certificate, always there to download.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
import time
from dataclasses import dataclass, field
from datetime import datetime

import asyncssh
from asyncssh.sftp import FILEXFER_TYPE_DIRECTORY, FILEXFER_TYPE_REGULAR

from ..core.appliance_core import ApplianceCore
from ..core.errors import FileNotFound, FileRefused
from ..core.files import check_upload_name, max_size

_ROOT = "/"


@dataclass
class _Upload:
    name: str
    data: bytearray = field(default_factory=bytearray)
    failed: str | None = None


@dataclass
class _Download:
    name: str
    data: bytes

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Enough of a file's seek for asyncssh's sparse-range query (the data has no holes)."""
        if whence == getattr(os, "SEEK_DATA", None):
            if offset >= len(self.data):
                raise OSError(errno.ENXIO, "no data past the end")
            return offset
        if whence == getattr(os, "SEEK_HOLE", None):
            return len(self.data)
        return offset


def _parse_time(stored: str) -> int:
    return int(datetime.fromisoformat(stored).timestamp())


class ApplianceFileServer(asyncssh.SFTPServer):
    """One SFTP (or SCP) session of the logged-in admin."""

    def __init__(self, chan: asyncssh.SSHServerChannel) -> None:
        super().__init__(chan)
        owner = chan.get_connection().get_owner()
        self._core: ApplianceCore = owner.core

    # -- paths --------------------------------------------------------------------------

    def _allowed(self) -> None:
        if self._core.state.device().admin_must_change:
            raise asyncssh.SFTPPermissionDenied(
                "Change the admin password first (ssh in and run: my password set)."
            )

    @staticmethod
    def _name(path: bytes) -> str | None:
        """The file a client path names; None for the home directory itself."""
        text = path.decode("utf-8", errors="replace")
        if text.startswith("~"):
            text = text[1:]
        normal = posixpath.normpath(posixpath.join(_ROOT, text))
        if normal == _ROOT:
            return None
        parent, name = posixpath.split(normal)
        if parent != _ROOT:
            raise asyncssh.SFTPNoSuchFile(
                f"{text}: the appliance has one flat file area, without directories."
            )
        return name

    def _attrs(self, name: str | None) -> asyncssh.SFTPAttrs:
        if name is None:
            return asyncssh.SFTPAttrs(type=FILEXFER_TYPE_DIRECTORY, permissions=stat.S_IFDIR | 0o700,
                                      size=0, mtime=int(time.time()))
        for entry in self._core.files.list():
            if entry.name == name:
                mode = 0o400 if entry.builtin else 0o600
                return asyncssh.SFTPAttrs(type=FILEXFER_TYPE_REGULAR, permissions=stat.S_IFREG | mode,
                                          size=entry.size, mtime=_parse_time(entry.modified))
        raise asyncssh.SFTPNoSuchFile(f"{name}: no such file")

    def realpath(self, path: bytes) -> bytes:
        self._allowed()
        name = self._name(path)
        return (_ROOT if name is None else _ROOT + name).encode()

    def stat(self, path: bytes) -> asyncssh.SFTPAttrs:
        self._allowed()
        return self._attrs(self._name(path))

    lstat = stat

    def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        self._allowed()
        self._attrs(self._name(path))  # times and modes are the appliance's own; accepted, ignored

    def fsetstat(self, file_obj: object, attrs: asyncssh.SFTPAttrs) -> None:
        return None

    def fstat(self, file_obj: object) -> asyncssh.SFTPAttrs:
        if isinstance(file_obj, _Upload):
            return asyncssh.SFTPAttrs(type=FILEXFER_TYPE_REGULAR, permissions=stat.S_IFREG | 0o600,
                                      size=len(file_obj.data), mtime=int(time.time()))
        assert isinstance(file_obj, _Download)
        return self._attrs(file_obj.name)

    async def scandir(self, path: bytes):
        self._allowed()
        if self._name(path) is not None:
            raise asyncssh.SFTPNotADirectory("Not a directory")
        for dot in (b".", b".."):
            yield asyncssh.SFTPName(dot, attrs=self._attrs(None))
        for entry in self._core.files.list():
            yield asyncssh.SFTPName(entry.name.encode(), attrs=self._attrs(entry.name))

    # -- files --------------------------------------------------------------------------

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        self._allowed()
        name = self._name(path)
        if name is None:
            raise asyncssh.SFTPFileIsADirectory("That is the home directory, not a file.")
        if pflags & (asyncssh.FXF_WRITE | asyncssh.FXF_APPEND | asyncssh.FXF_CREAT):
            try:
                check_upload_name(name)
            except FileRefused as error:
                raise asyncssh.SFTPPermissionDenied(error.message) from None
            return _Upload(name=name)
        try:
            return _Download(name=name, data=self._core.files.get(name))
        except FileNotFound as error:
            raise asyncssh.SFTPNoSuchFile(error.message) from None

    def read(self, file_obj: object, offset: int, size: int) -> bytes:
        if not isinstance(file_obj, _Download):
            raise asyncssh.SFTPPermissionDenied("The file was opened for writing.")
        return file_obj.data[offset:offset + size]

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        if not isinstance(file_obj, _Upload):
            raise asyncssh.SFTPPermissionDenied("The file was opened for reading.")
        end = offset + len(data)
        limit = max_size(file_obj.name)
        if end > limit:
            file_obj.failed = f"{file_obj.name}: files of its kind are limited to {limit} bytes."
            raise asyncssh.SFTPFailure(file_obj.failed)
        if end > len(file_obj.data):
            file_obj.data.extend(b"\0" * (end - len(file_obj.data)))
        file_obj.data[offset:end] = data
        return len(data)

    def close(self, file_obj: object) -> None:
        if isinstance(file_obj, _Upload) and file_obj.failed is None:
            try:
                self._core.files.put(file_obj.name, bytes(file_obj.data))
            except FileRefused as error:
                raise asyncssh.SFTPFailure(error.message) from None

    def remove(self, path: bytes) -> None:
        self._allowed()
        name = self._name(path)
        if name is None:
            raise asyncssh.SFTPFileIsADirectory("That is the home directory.")
        try:
            self._core.files.delete(name)
        except FileNotFound as error:
            raise asyncssh.SFTPNoSuchFile(error.message) from None
        except FileRefused as error:
            raise asyncssh.SFTPPermissionDenied(error.message) from None

    def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        raise asyncssh.SFTPPermissionDenied("The appliance's file area has no directories.")

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPOpUnsupported("Renaming is not supported; upload under the new name.")

    posix_rename = rename

    def exit(self) -> None:
        # OpenSSH's scp (SFTP mode) fails unless the session ends with an exit status, as
        # sshd's sftp-server gives; the legacy SCP path sends its own.
        if self.channel.get_subsystem() == "sftp" and not self.channel.is_closing():
            self.channel.exit(0)

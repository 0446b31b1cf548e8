"""The device key and AES-256-GCM sealing of secrets at rest.

The device key lives in its own file (``device.key``, 0600) next to the SQLite state; it
wraps each partition's key, and the partition keys encrypt the objects' secret values. The
SQLite file records only the device key's identifier. A provider reset replaces the device
key (crypto-shredding: whatever an old copy of the database still holds can no longer be
opened). Replacing it is crash-safe: the new key is written as ``device.key.new`` first, the
database switches to its identifier in one transaction, then the file is renamed; opening
the state finishes or drops a half-done replacement according to the identifier the
database holds.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ....private_files import make_private
from .errors import StateError

DEVICE_KEY_FILE = "device.key"
_PENDING_SUFFIX = ".new"
KEY_BYTES = 32
_NONCE_BYTES = 12


#: Additional data of the HSM's sealed cloning-domain secret.
HSM_DOMAIN_SECRET_AAD = b"hsmcloud/luna/hsm-domain-secret/v1"


def partition_domain_secret_aad(serial: str, generation: int) -> bytes:
    return b"hsmcloud/luna/partition-domain-secret/v1\0" + f"{serial}\0{generation}".encode()


def key_id(key: bytes) -> str:
    """A public identifier of a key (never the key): the first 16 bytes of its SHA-256, hex."""
    return hashlib.sha256(b"hsmcloud/luna/key-id/v1" + key).hexdigest()[:32]


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM: a random 96-bit nonce, then ciphertext and tag."""
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def unseal(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """The plaintext of :func:`seal`; a wrong key, AAD or a modified blob raises StateError."""
    try:
        return AESGCM(key).decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], aad)
    except (InvalidTag, ValueError):
        raise StateError("A sealed value of the appliance state does not open with its key "
                         "(the state or the device key file was modified).") from None


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` durably, readable by the owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_key(path: Path) -> bytes:
    data = path.read_bytes()
    if len(data) != KEY_BYTES:
        raise StateError(f"{path} is not a device key file ({len(data)} bytes, not {KEY_BYTES}).")
    return data


class DeviceKeyFile:
    """The device key of one appliance state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / DEVICE_KEY_FILE
        self._pending = self.path.with_name(self.path.name + _PENDING_SUFFIX)

    def load(self, recorded_id: str | None) -> bytes:
        """The device key whose identifier the database records (None: none recorded yet).

        Finishes a replacement that committed before a crash, drops one that did not.
        """
        if self._pending.exists():
            pending = _read_key(self._pending)
            if recorded_id is not None and key_id(pending) == recorded_id:
                os.replace(self._pending, self.path)
                _sync_dir(self.path.parent)
            else:
                self._pending.unlink()
        if not self.path.exists():
            if recorded_id is not None:
                raise StateError(
                    f"The device key file {self.path} is missing: the sealed keys of this "
                    "appliance cannot be opened. Only a provider reset recovers the device."
                )
            return self.create()
        make_private(self.path)  # a key file left readable by an older version is narrowed
        key = _read_key(self.path)
        if recorded_id is not None and key_id(key) != recorded_id:
            raise StateError(f"{self.path} is not the device key this appliance state was sealed with.")
        return key

    def create(self) -> bytes:
        key = new_key()
        _write_private(self.path, key)
        _sync_dir(self.path.parent)
        return key

    def stage_replacement(self) -> bytes:
        """Write a new key beside the current one; :meth:`commit_replacement` after the database switched."""
        key = new_key()
        _write_private(self._pending, key)
        return key

    def commit_replacement(self) -> None:
        os.replace(self._pending, self.path)
        _sync_dir(self.path.parent)

    def drop_replacement(self) -> None:
        if self._pending.exists():
            self._pending.unlink()


class DeviceSealer:
    """Seals and opens values under the current device key (replaced by a provider reset)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def use(self, key: bytes) -> None:
        self._key = key

    @property
    def key_id(self) -> str:
        return key_id(self._key)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        return seal(self._key, plaintext, aad)

    def unseal(self, blob: bytes, aad: bytes) -> bytes:
        return unseal(self._key, blob, aad)

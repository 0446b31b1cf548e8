"""One appliance's core: the state and the services the shell, NTLS and PKCS#11 act through.

One :class:`ApplianceCore` per running appliance (its in-memory views and key caches must be
shared by every adapter). Its methods are synchronous and thread-safe: NTLS connection
threads, the event loop and worker threads all call them.
"""

from __future__ import annotations

import os
from pathlib import Path

from .clients import ClientRegistry
from .cloning import CloningService
from .clock import Clock, system_clock
from .files import AdminFiles
from .hsm import HsmService
from .keystore import Keystore
from .partitions import PartitionService
from .sealing import DeviceKeyFile, DeviceSealer, key_id
from .state import ApplianceState

_DEVICE_KEY_META = "device_key_id"
#: Set when a tenant's partition key was first sealed under the device key; a provider reset
#: (new device key) clears it. The pristine check reports a device key that has sealed keys.
DEVICE_KEY_USED_META = "device_key_used"


class ApplianceCore:
    def __init__(self, state: ApplianceState, *, clock: Clock = system_clock) -> None:
        self.state = state
        self.clock = clock
        # SQLite creates its -wal and -shm files with the database file's mode.
        os.chmod(state.path, 0o600)
        self._key_file = DeviceKeyFile(state.path.parent)
        self.sealer = DeviceSealer(self._open_device_key())
        self.hsm = HsmService(state, clock)
        self.partitions = PartitionService(state, self.hsm, clock, self.sealer)
        self.keystore = Keystore(state, self.partitions, clock)
        self.clients = ClientRegistry(state, self.sealer, clock)
        self.files = AdminFiles(state, self.clients, clock)
        self.cloning = CloningService(appliance_serial=lambda: self.serial, hsm=self.hsm,
                                      partitions=self.partitions, keystore=self.keystore,
                                      clock=lambda: self.clock().timestamp())
        self.clients.ensure_server_certificate()

    @classmethod
    def open(cls, state_dir: Path, serial: str, *, clock: Clock = system_clock) -> ApplianceCore:
        """Open (creating on first use) the state of device ``serial`` and its core."""
        state = ApplianceState.open(state_dir, serial)
        try:
            return cls(state, clock=clock)
        except BaseException:
            state.close()
            raise

    def close(self) -> None:
        self.keystore.forget_all()
        self.partitions.forget_keys()
        self.state.close()

    @property
    def serial(self) -> str:
        return self.state.device().serial

    def _open_device_key(self) -> bytes:
        rows = self.state.query("SELECT value FROM meta WHERE key = ?", (_DEVICE_KEY_META,))
        key = self._key_file.load(rows[0][0] if rows else None)
        if not rows:
            with self.state.transaction() as db:
                db.execute("INSERT INTO meta (key, value) VALUES (?, ?)",
                           (_DEVICE_KEY_META, key_id(key)))
        return key

    def log(self, *lines: str) -> None:
        """Append lines to the appliance log (``syslog tail``) in one transaction."""
        with self.state.transaction() as db:
            for line in lines:
                self.state._append_log(db, line)

    # -- destruction --------------------------------------------------------------------

    def scrub(self) -> None:
        """Make deleted rows unrecoverable from the files: deleted pages are zeroed
        (secure_delete) and the write-ahead log is folded in and truncated."""
        self.state.scrub()
        self.keystore.forget_all()

    def zeroize(self, reason: str | None = None) -> None:
        """``hsm zeroize``: partitions, objects, the HSM SO and the cloning domain are erased."""
        self.state.zeroize(reason)
        self.scrub()

    def factory_reset(self) -> str:
        """Erase every trace of the tenant; returns the new SSH host key.

        The device key is replaced (the old one is gone with the file), so nothing sealed
        before the reset can be opened again; the NTLS server certificate is new.
        """
        new_key = self._key_file.stage_replacement()
        new_sealer = DeviceSealer(new_key)
        server_row = self.clients.server_certificate_row(new_sealer)

        def also(db) -> None:
            db.execute("UPDATE meta SET value = ? WHERE key = ?", (key_id(new_key), _DEVICE_KEY_META))
            db.execute("DELETE FROM meta WHERE key = ?", (DEVICE_KEY_USED_META,))
            self.clients.store_server_certificate(db, server_row)

        try:
            host_key = self.state.factory_reset(also=also)
        except BaseException:
            self._key_file.drop_replacement()
            raise
        self._key_file.commit_replacement()
        self.sealer.use(new_key)
        self.partitions.forget_keys()
        self.scrub()
        return host_key

    # -- what a provider reset must leave ------------------------------------------------

    def tenant_state_findings(self) -> list[str]:
        """Every piece of tenant state still present; empty when the device is pristine."""
        findings = self.state.tenant_state_findings()
        counts = {
            table: self.state.query(f"SELECT COUNT(*) FROM {table}")[0][0]
            for table in (
                "partition_roles", "ntls_client_partitions", "admin_files", "auditor", "hsm_policies",
            )
        }
        if counts["partition_roles"]:
            findings.append(f"{counts['partition_roles']} partition role credential(s) present")
        if counts["ntls_client_partitions"]:
            findings.append(f"{counts['ntls_client_partitions']} client partition assignment(s) present")
        if counts["admin_files"]:
            findings.append(f"{counts['admin_files']} uploaded file(s) present")
        if counts["auditor"]:
            findings.append("Audit role is initialized")
        if counts["hsm_policies"]:
            findings.append(f"{counts['hsm_policies']} HSM policy value(s) differ from the factory default")
        if self.state.query("SELECT 1 FROM meta WHERE key = ?", (DEVICE_KEY_USED_META,)):
            findings.append("the device key has sealed tenant partition keys (a provider reset "
                            "replaces it)")
        recorded = self.state.query("SELECT value FROM meta WHERE key = ?", (_DEVICE_KEY_META,))
        if not recorded or recorded[0][0] != self.sealer.key_id:
            findings.append("the device key does not match the state")
        return findings

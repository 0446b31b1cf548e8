"""One emulated Luna Network HSM 7 (model A790): core, SSH shell, NTLS and management API together.

Several appliances can run in one event loop, each on its own loopback address; an
appliance keeps no global state and its state directory is its only storage.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..management_server import ManagementServer
from .core.appliance_core import ApplianceCore
from .core.passwords import check_admin_password, hash_password_async
from .core.product import FIRMWARE_VERSION, MODEL, SOFTWARE_VERSION
from .core.state import ApplianceState
from .lunash.login_throttle import LoginThrottle
from .lunash.ssh_server import LunaSshService
from .management import create_management_app
from .ntls.dispatcher import NtlsDispatcher
from .ntls.server import DEFAULT_PORT as NTLS_DEFAULT_PORT
from .ntls.server import NtlsServer

_SERIAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(kw_only=True)
class ApplianceConfig:
    """Where and as whom one appliance runs. Port 0 picks a free port."""

    serial: str
    state_dir: Path
    address: str = "127.0.0.1"
    ssh_port: int = 0
    mgmt_port: int = 0
    #: NTLS for applications: TCP 1792 like the real appliance.
    ntls_port: int = NTLS_DEFAULT_PORT
    mgmt_token: str

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        if not _SERIAL.fullmatch(self.serial):
            raise ValueError(f"invalid appliance serial {self.serial!r}")
        try:
            loopback = ipaddress.ip_address(self.address).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(
                f"appliance address {self.address!r} is not a loopback address (127.0.0.0/8 or ::1)"
            )
        for name in ("ssh_port", "mgmt_port", "ntls_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ValueError(f"{name} must be 0..65535")
        if not self.mgmt_token:
            raise ValueError("mgmt_token must not be empty")


class LunaAppliance:
    """An emulated Luna appliance. ``await start()``, use it, ``await stop()``; restartable.

    ``login_throttle`` replaces the SSH login throttle (tests give one with a fake clock).
    """

    def __init__(self, config: ApplianceConfig, *, login_throttle: LoginThrottle | None = None) -> None:
        self.config = config
        self._login_throttle = login_throttle
        self._core: ApplianceCore | None = None
        self._ssh: LunaSshService | None = None
        self._mgmt: ManagementServer | None = None
        self._ntls: NtlsServer | None = None
        self._ssh_port: int | None = None
        self._mgmt_port: int | None = None
        self._ntls_port: int | None = None
        self._reset_lock: asyncio.Lock | None = None

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._core is not None

    async def start(self) -> None:
        """Open the state and serve SSH, NTLS and management on the configured address."""
        if self._core is not None:
            raise RuntimeError(f"appliance {self.config.serial} is already running")
        cfg = self.config
        core = await asyncio.to_thread(ApplianceCore.open, cfg.state_dir, cfg.serial)
        ntls = NtlsServer(core, NtlsDispatcher)
        ssh = LunaSshService(core, ntls=ntls, throttle=self._login_throttle)
        mgmt = ManagementServer(create_management_app(self, cfg.mgmt_token), name="luna-mgmt")
        self._core, self._reset_lock = core, asyncio.Lock()
        try:
            self._ssh_port = await ssh.start(cfg.address, cfg.ssh_port)
            self._ssh = ssh
            self._ntls_port = await asyncio.to_thread(ntls.start, cfg.address, cfg.ntls_port)
            self._ntls = ntls
            self._mgmt_port = await mgmt.start(cfg.address, cfg.mgmt_port)
            self._mgmt = mgmt
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close the listeners and every session; the state stays on disk. Idempotent."""
        try:
            if self._mgmt is not None:
                await self._mgmt.stop()
            if self._ssh is not None:
                await self._ssh.stop()
            if self._ntls is not None:
                await asyncio.to_thread(self._ntls.stop)
        finally:
            if self._core is not None:
                self._core.close()
            self._core = self._ssh = self._mgmt = self._ntls = None
            self._ssh_port = self._mgmt_port = self._ntls_port = None

    @property
    def core(self) -> ApplianceCore:
        if self._core is None:
            raise RuntimeError(f"appliance {self.config.serial} is not running")
        return self._core

    @property
    def state(self) -> ApplianceState:
        return self.core.state

    @property
    def ssh_port(self) -> int:
        if self._ssh_port is None:
            raise RuntimeError(f"appliance {self.config.serial} is not running")
        return self._ssh_port

    @property
    def ntls_port(self) -> int:
        if self._ntls_port is None:
            raise RuntimeError(f"appliance {self.config.serial} is not running")
        return self._ntls_port

    @property
    def ntls(self) -> NtlsServer:
        if self._ntls is None:
            raise RuntimeError(f"appliance {self.config.serial} is not running")
        return self._ntls

    @property
    def mgmt_port(self) -> int:
        if self._mgmt_port is None:
            raise RuntimeError(f"appliance {self.config.serial} is not running")
        return self._mgmt_port

    # -- what the provider sees (through the management API) -----------------------------

    def health(self) -> dict[str, Any]:
        """Health telemetry; with monitoring disabled only identity and zeroized state."""
        device = self.state.device()
        hsm = self.state.hsm()
        health: dict[str, Any] = {
            "serial": device.serial,
            "model": MODEL,
            "firmware": FIRMWARE_VERSION,
            "software": SOFTWARE_VERSION,
            "zeroized": hsm.zeroized,
        }
        if not device.monitoring:
            health["monitoring"] = False
            return health
        health.update(
            initialized=hsm.initialized,
            partitions=len(self.state.partitions()),
            monitoring=True,
            admin_password_changed=not device.admin_must_change,
            ntls={"up": self._ntls is not None and self._ntls.running,
                  "port": self._ntls_port},
        )
        return health

    async def provider_reset(self) -> None:
        """Factory reset: tenant sessions and connections cut, all tenant state erased (keys
        crypto-shredded with the device key), new SSH host key and NTLS server certificate."""
        assert self._reset_lock is not None and self._ssh is not None and self._ntls is not None
        async with self._reset_lock:
            # Cut sessions first so no half-run tenant command can write after the reset.
            await self._ssh.end_sessions()
            await asyncio.to_thread(self._ntls.end_connections)
            host_key = await asyncio.to_thread(self.core.factory_reset)
            self._ssh.use_host_key(host_key)
            await self._ssh.end_sessions()
            await asyncio.to_thread(self._ntls.reset)

    async def set_initial_admin_password(self, password: str) -> bool:
        """Replace the factory admin password by ``password`` (change at first login still forced).

        False if the admin has changed the password already. Sessions that logged in before
        (with the factory password) are cut, so the new password is the only way in.
        """
        assert self._reset_lock is not None and self._ssh is not None
        check_admin_password(password)
        password_hash = await hash_password_async(password)
        async with self._reset_lock:
            if not self.state.set_initial_admin_password(password_hash):
                return False
            await self._ssh.end_sessions()
        return True

    async def pristine_findings(self) -> list[str]:
        """Every trace of a tenant still on the device; empty when it is pristine."""
        findings = self.core.tenant_state_findings()
        sessions = self._ssh.logged_in_sessions() if self._ssh is not None else 0
        if sessions:
            findings.append(f"{sessions} logged-in SSH session{'s' if sessions != 1 else ''} open")
        connections = self._ntls.connection_count() if self._ntls is not None else 0
        if connections:
            findings.append(f"{connections} NTLS connection(s) open")
        return findings

"""Runs the appliances of allocated devices inside this process, each on its own loopback address."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from hsmcloud.errors import ServiceUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class DeviceSpec:
    serial: str
    kind: str
    address: str
    mgmt_token: str
    ssh_port: int = 0
    ntls_port: int = 0
    mgmt_port: int = 0
    host1_port: int = 0
    host2_port: int = 0
    # Payment devices: the licence of the SKU they are allocated for.
    lmk_slots: int = 1
    calls_per_second: int = 60


@dataclass(frozen=True, kw_only=True)
class RunningPorts:
    mgmt: int
    ssh: int | None = None
    ntls: int | None = None
    host1: int | None = None
    host2: int | None = None


class DeviceHost:
    """Starts and stops appliance emulations; the store records their ports."""

    def __init__(self, devices_dir: Path):
        self.devices_dir = devices_dir
        self._running: dict[str, object] = {}
        self._lock = asyncio.Lock()

    def state_dir(self, serial: str) -> Path:
        return self.devices_dir / serial

    def is_running(self, serial: str) -> bool:
        return serial in self._running

    def _build(self, spec: DeviceSpec, *, fresh_ports: bool):
        """The appliance object for a device kind (not started)."""
        state_dir = self.state_dir(spec.serial)
        if spec.kind == "luna":
            from hsmcloud.appliances.luna.appliance import ApplianceConfig, LunaAppliance

            return LunaAppliance(ApplianceConfig(
                serial=spec.serial, state_dir=state_dir, address=spec.address, mgmt_token=spec.mgmt_token,
                ssh_port=0 if fresh_ports else spec.ssh_port, mgmt_port=0 if fresh_ports else spec.mgmt_port,
                ntls_port=0 if fresh_ports else spec.ntls_port))
        if spec.kind == "payshield":
            from hsmcloud.appliances.payshield.appliance import PayShieldAppliance, PayShieldConfig

            return PayShieldAppliance(PayShieldConfig(
                serial=spec.serial, state_dir=state_dir, address=spec.address, mgmt_token=spec.mgmt_token,
                host1_port=0 if fresh_ports else spec.host1_port, host2_port=0 if fresh_ports else spec.host2_port,
                mgmt_port=0 if fresh_ports else spec.mgmt_port, lmk_slots=spec.lmk_slots,
                calls_per_second=spec.calls_per_second))
        raise ServiceUnavailable(f"Device {spec.serial} is of unknown kind {spec.kind}.", code="DeviceKindUnknown")

    @staticmethod
    def _ports(spec: DeviceSpec, app) -> RunningPorts:
        if spec.kind == "luna":
            return RunningPorts(mgmt=app.mgmt_port, ssh=app.ssh_port, ntls=app.ntls_port)
        return RunningPorts(mgmt=app.mgmt_port, host1=app.host1_port, host2=app.host2_port)

    async def ensure_running(self, spec: DeviceSpec) -> RunningPorts:
        """Start the device's appliance unless it runs already; its state on disk carries over."""
        async with self._lock:
            app = self._running.get(spec.serial)
            if app is None:
                app = self._build(spec, fresh_ports=False)
                try:
                    await app.start()
                except OSError as exc:
                    # The ports it had before are taken now: take fresh ones rather than stay down.
                    log.warning("device %s: recorded ports unavailable (%s), taking new ones", spec.serial, exc)
                    app = self._build(spec, fresh_ports=True)
                    try:
                        await app.start()
                    except OSError as exc2:
                        raise ServiceUnavailable(f"Device {spec.serial} could not start on {spec.address}: {exc2}",
                                                 code="DeviceStartFailed") from None
                self._running[spec.serial] = app
            return self._ports(spec, app)

    async def stop(self, serial: str) -> None:
        async with self._lock:
            app = self._running.pop(serial, None)
        if app is not None:
            await app.stop()

    async def stop_all(self) -> None:
        for serial in list(self._running):
            await self.stop(serial)

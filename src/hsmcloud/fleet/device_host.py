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
    ssh_port: int
    mgmt_port: int
    mgmt_token: str


@dataclass(frozen=True, kw_only=True)
class RunningPorts:
    ssh: int
    mgmt: int


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

    async def ensure_running(self, spec: DeviceSpec) -> RunningPorts:
        if spec.kind != "luna":
            raise ServiceUnavailable(f"Device {spec.serial} is a {spec.kind} device, which this release does not "
                                     "emulate yet.", code="DeviceKindNotEmulated")
        from hsmcloud.appliances.luna.appliance import ApplianceConfig, LunaAppliance

        async with self._lock:
            app = self._running.get(spec.serial)
            if app is None:
                app = LunaAppliance(ApplianceConfig(
                    serial=spec.serial, state_dir=self.state_dir(spec.serial), address=spec.address,
                    ssh_port=spec.ssh_port, mgmt_port=spec.mgmt_port, mgmt_token=spec.mgmt_token))
                try:
                    await app.start()
                except OSError as exc:
                    if spec.ssh_port or spec.mgmt_port:
                        # The port it had before is taken now: take fresh ones rather than stay down.
                        log.warning("device %s: ports %s/%s unavailable (%s), taking new ones", spec.serial,
                                    spec.ssh_port, spec.mgmt_port, exc)
                        app = LunaAppliance(ApplianceConfig(
                            serial=spec.serial, state_dir=self.state_dir(spec.serial), address=spec.address,
                            ssh_port=0, mgmt_port=0, mgmt_token=spec.mgmt_token))
                        await app.start()
                    else:
                        raise ServiceUnavailable(f"Device {spec.serial} could not start on {spec.address}: {exc}",
                                                 code="DeviceStartFailed") from None
                self._running[spec.serial] = app
            return RunningPorts(ssh=app.ssh_port, mgmt=app.mgmt_port)

    async def stop(self, serial: str) -> None:
        async with self._lock:
            app = self._running.pop(serial, None)
        if app is not None:
            await app.stop()

    async def stop_all(self) -> None:
        for serial in list(self._running):
            await self.stop(serial)

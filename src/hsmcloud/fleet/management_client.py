"""The provider's side of an appliance's management interface (health, reset, pristine check).

The control plane reaches devices only through this, over loopback HTTP, as the real provider
reaches its devices only through their monitoring and reset paths."""
from __future__ import annotations

from dataclasses import dataclass

import httpx

from hsmcloud.errors import InvalidRequest, ServiceUnavailable


@dataclass(frozen=True, kw_only=True)
class ManagementEndpoint:
    serial: str
    kind: str
    address: str
    port: int
    token: str

    @property
    def base_url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"


class ManagementClient:
    def __init__(self, endpoint: ManagementEndpoint, *, timeout: float = 15.0):
        self.endpoint = endpoint
        self.timeout = timeout

    async def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        try:
            async with httpx.AsyncClient(base_url=self.endpoint.base_url, timeout=self.timeout,
                                         headers={"Authorization": f"Bearer {self.endpoint.token}"}) as client:
                resp = await client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"Device {self.endpoint.serial} does not answer on its management interface "
                                     f"({exc.__class__.__name__}). The provider has been alerted; retry later.",
                                     code="DeviceUnreachable") from None
        if 400 <= resp.status_code < 500:
            # The device refused what was asked (e.g. a firmware below the supported base): say why.
            try:
                err = resp.json().get("error") or {}
            except ValueError:
                err = {}
            raise InvalidRequest(f"Device {self.endpoint.serial} refused {method} {path}: "
                                 f"{err.get('message') or resp.text[:200]}", code=err.get("code") or "DeviceRefused")
        if resp.status_code != 200:
            raise ServiceUnavailable(f"Device {self.endpoint.serial} refused {method} {path}: HTTP "
                                     f"{resp.status_code}.", code="DeviceManagementError")
        return resp.json()

    async def health(self) -> dict:
        return await self._call("GET", "/health")

    async def reset(self) -> dict:
        """Erase every trace of the tenant: a factory reset (Luna) or an out-of-band release (payShield)."""
        if self.endpoint.kind == "payshield":
            return await self._call("POST", "/provider/release")
        return await self._call("POST", "/provider/reset")

    async def set_licence(self, *, cps_limit_lifted: bool) -> dict:
        return await self._call("PUT", "/provider/licence", {"cps_limit_lifted": cps_limit_lifted})

    async def update_firmware(self, version: str) -> dict:
        return await self._call("POST", "/provider/firmware", {"version": version})

    async def claim(self, token_sha256: str) -> dict:
        """Register the tenant's payment management credential (its SHA-256 only) on an unclaimed device.

        The device refuses with code AlreadyClaimed once a tenant holds it."""
        return await self._call("POST", "/provider/claim", {"token_sha256": token_sha256})

    async def set_initial_admin_password(self, password: str) -> dict:
        """A Luna device's per-HSM initial admin password; refused (AdminPasswordChanged) once changed."""
        return await self._call("PUT", "/provider/initial-admin-password", {"password": password})

    async def pristine(self) -> dict:
        return await self._call("GET", "/provider/pristine")

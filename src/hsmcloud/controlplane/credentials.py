"""The tenant's credentials for the device it holds, and what the provider keeps of them.

After hand-over the provider has no logical access to a device, so neither the store nor the
logs hold a credential that opens it:

- A general-purpose (Luna) device's first login takes a per-HSM initial admin password instead
  of the factory one. It is derived, never stored (`identity/initial_secrets.py`), set on the
  device at Provisioning, shown to the tenant in `/endpoints`, and opens nothing once the
  tenant changed it (the first login forces the change).
- A payment device is handed over unclaimed. The tenant claims its management credential once
  (`POST .../managementCredential`); the device keeps the credential's SHA-256, the store only
  when it was issued. The device refuses a second claim, so the provider, which holds the
  device's management token, cannot replace it; the tenant rotates it with the device directly.
"""
from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from datetime import datetime

from hsmcloud.controlplane import subscriptions
from hsmcloud.controlplane.hsms import HsmService, arm_id
from hsmcloud.controlplane.scope import utcnow
from hsmcloud.errors import Conflict, InvalidRequest, ServiceUnavailable
from hsmcloud.fleet.management_client import ManagementClient, ManagementEndpoint
from hsmcloud.identity.initial_secrets import InitialSecrets
from hsmcloud.identity.tokens import Principal
from hsmcloud.store.db import Store
from hsmcloud.store.models import DedicatedHsm, Device

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class TenantCredentials:
    def __init__(self, *, store: Store, hsms: HsmService, initial_secrets: InitialSecrets):
        self.store = store
        self.hsms = hsms
        self.initial_secrets = initial_secrets

    def initial_admin_password(self, hsm: DedicatedHsm) -> str:
        """What the tenant's first SSH login as admin takes (the same at every call)."""
        return self.initial_secrets.admin_password(hsm_id=hsm.id, serial=hsm.device_serial)

    async def issue_management_credential(self, principal: Principal, sub: str, rg: str, name: str,
                                          token_sha256: str | None) -> dict:
        """Claim a payment HSM's management credential for its tenant, once.

        With `token_sha256` the tenant chose the token and keeps it: only its digest passes here.
        Without, a token is made here and returned in this answer only."""
        token = None
        if token_sha256 is None:
            token = secrets.token_urlsafe(32)
            token_sha256 = hashlib.sha256(token.encode()).hexdigest()
        elif not isinstance(token_sha256, str) or not _SHA256_HEX.fullmatch(token_sha256):
            raise InvalidRequest("tokenSha256 must be the SHA-256 of your token as 64 lower-case hex digits, or "
                                 "left out to have a token made for you.", code="InvalidRequestContent",
                                 target="tokenSha256")
        endpoint, hsm_id, issued_before = await asyncio.to_thread(self._payment_device, sub, rg, name)
        try:
            answer = await ManagementClient(endpoint).claim(token_sha256)
        except InvalidRequest as exc:
            if exc.code != "AlreadyClaimed":
                raise
            raise Conflict(
                f"The management credential of payment HSM '{name}' was already issued"
                f"{f' (at {issued_before.isoformat()})' if issued_before else ''}; it is shown only once and "
                "only its holder can change it. Rotate it with 'hsmcloud payshield credential rotate' where it is "
                "saved. If it is lost, the device cannot be opened again: release it (the provider's force delete "
                "erases all its content) and create the HSM again.", code="ManagementCredentialAlreadyIssued"
            ) from None
        if answer.get("repeated") and issued_before is not None:
            issued_at = issued_before  # the same claim again (its answer was lost): nothing new was issued
        else:
            issued_at = await asyncio.to_thread(self._record_issue, principal, hsm_id, endpoint.serial)
        out = {"name": name, "serial": endpoint.serial, "issuedAt": issued_at.isoformat()}
        if token is not None:
            out["managementToken"] = token
        return out

    def _payment_device(self, sub: str, rg: str, name: str) -> tuple[ManagementEndpoint, str, datetime | None]:
        with self.store.session() as s:
            h = self.hsms.get(s, sub, rg, name)
            if h.provisioning_state != "Succeeded" or not h.device_serial:
                raise InvalidRequest(f"Dedicated HSM '{name}' is {h.provisioning_state}; its management credential "
                                     "can be issued once it is Succeeded.", code="HsmNotProvisioned")
            d = s.get(Device, h.device_serial)
            if d.kind != "payshield":
                raise InvalidRequest(f"Dedicated HSM '{name}' is not a payment HSM: a general-purpose HSM has no "
                                     "management credential (its admin logs in over SSH with the "
                                     "initialAdminPassword of /endpoints).", code="NotAPaymentHsm")
            if not d.mgmt_port:
                raise ServiceUnavailable(f"The HSM's device {d.serial} is not running. Retry shortly; the provider "
                                         "has been alerted.", code="DeviceUnreachable")
            endpoint = ManagementEndpoint(serial=d.serial, kind=d.kind, address=d.loopback_address,
                                          port=d.mgmt_port, token=d.mgmt_token)
            return endpoint, h.id, d.tenant_credential_issued_at

    def _record_issue(self, principal: Principal, hsm_id: str, serial: str) -> datetime:
        now = utcnow()
        with self.store.session() as s:
            d = s.get(Device, serial)
            if d.hsm_id == hsm_id:  # not returned to the pool meanwhile (its reset unclaims it again)
                d.tenant_credential_issued_at = now
            subscriptions.record(s, principal.name, "device.credential.issue", serial,
                                 hsm=arm_id(s.get(DedicatedHsm, hsm_id)))
        return now

"""The steps of creating and deleting a dedicated HSM, declared as data and run by a worker.

Each step reads its operation from the store, does work that is safe to repeat (starting an
appliance, resetting it), and commits its result together with the next step. A crash between
steps therefore resumes at the last committed step; a crash inside one repeats it."""
from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from hsmcloud.controlplane import quota, subscriptions
from hsmcloud.controlplane.hsms import STATUS, arm_id
from hsmcloud.controlplane.operations import claim_next
from hsmcloud.controlplane.scope import find_group, utcnow
from hsmcloud.controlplane.skus import SKUS
from hsmcloud.errors import Conflict, HsmCloudError, InvalidRequest, ServiceUnavailable
from hsmcloud.fleet.device_host import DeviceHost, DeviceSpec
from hsmcloud.fleet.management_client import ManagementClient, ManagementEndpoint
from hsmcloud.identity.initial_secrets import InitialSecrets
from hsmcloud.network import ipam
from hsmcloud.network.service import NetworkService
from hsmcloud.store.db import Store
from hsmcloud.store.models import DedicatedHsm, Device, NetworkInterface, Operation, Stamp, Subnet, VirtualNetwork

log = logging.getLogger(__name__)

# Lifecycle transitions as data: operation kind -> step -> (provisioningState shown, next step).
CREATE_STEPS = {
    "CheckingQuota": "Allocating",
    "Allocating": "Connecting",
    "Connecting": "Provisioning",
    "Provisioning": None,
}
DELETE_STEPS = {"Reclaiming": None}
MAX_TRANSIENT_ATTEMPTS = 6


class StepFailed(Exception):
    def __init__(self, error: HsmCloudError):
        self.error = error


class WaitInLine(Exception):
    """The step checks quota, and a create ahead of it in its line has not had its outcome yet."""


def failure_record(error: HsmCloudError) -> dict:
    """A failure as ARM's error detail: the same on the failed resource and on its operation."""
    out = {"code": error.code, "message": error.message}
    if error.target:
        out["target"] = error.target
    out["details"] = error.details or [{"code": error.code, "message": error.message}]
    return out


class Lifecycle:
    def __init__(self, *, store: Store, settings, host: DeviceHost, network: NetworkService,
                 initial_secrets: InitialSecrets):
        self.store = store
        self.settings = settings
        self.host = host
        self.network = network
        self.initial_secrets = initial_secrets
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- worker ---------------------------------------------------------------------------
    def wake(self) -> None:
        """Called from request threads after they create an operation."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wakeup.set)

    async def run_forever(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                did = await self.run_once()
            except Exception:  # a bug in one step must not stop the worker for every other operation
                log.exception("lifecycle step crashed")
                did = False
            if not did:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=0.25)
                except asyncio.TimeoutError:
                    pass

    async def run_once(self) -> bool:
        with self.store.session() as s:
            op = claim_next(s, self.settings.worker_id)
            if op is None:
                return False
            op_id, kind, step, attempts = op.id, op.kind, op.step, op.attempts
        handler = {"hsm.create": self._create_step, "hsm.delete": self._delete_step}.get(kind)
        if handler is None:
            self._finish(op_id, error=failure_record(ServiceUnavailable(f"Unknown operation kind {kind}.")))
            return True
        try:
            next_step = await handler(op_id, step)
        except WaitInLine:
            self._wait_in_line(op_id)
            return True
        except StepFailed as failed:
            await self._on_failure(op_id, kind, failed.error)
            return True
        except ServiceUnavailable as transient:
            if attempts >= MAX_TRANSIENT_ATTEMPTS:
                await self._on_failure(op_id, kind, transient)
            else:
                self._retry_later(op_id, transient)
            return True
        except HsmCloudError as rule:  # a rule broken mid-deployment (e.g. the subnet filled up)
            await self._on_failure(op_id, kind, rule)
            return True
        if next_step is None:
            self._finish(op_id)
        else:
            self._advance(op_id, next_step)
        return True

    def _advance(self, op_id: str, next_step: str) -> None:
        with self.store.session() as s:
            op = s.get(Operation, op_id)
            now = utcnow()
            op.step, op.updated_at, op.attempts = next_step, now, 0
            op.lease_owner = op.lease_expires_at = None
            op.not_before = now + timedelta(seconds=self.settings.step_delay_seconds)

    def _wait_in_line(self, op_id: str) -> None:
        """Give the operation back uncounted; claim_next hands it out again once it is its turn."""
        with self.store.session() as s:
            op = s.get(Operation, op_id)
            op.lease_owner = op.lease_expires_at = None
            op.attempts = max(op.attempts - 1, 0)

    def _retry_later(self, op_id: str, error: HsmCloudError) -> None:
        with self.store.session() as s:
            op = s.get(Operation, op_id)
            op.lease_owner = op.lease_expires_at = None
            op.not_before = utcnow() + timedelta(seconds=min(0.5 * 2 ** op.attempts, 10))
            op.error = error.to_dict()

    def _finish(self, op_id: str, error: dict | None = None) -> None:
        with self.store.session() as s:
            op = s.get(Operation, op_id)
            op.status = "Failed" if error else "Succeeded"
            op.error = error
            op.updated_at = utcnow()
            op.lease_owner = op.lease_expires_at = None

    # ---- create -----------------------------------------------------------------------------
    async def _create_step(self, op_id: str, step: str) -> str | None:
        if step == "CheckingQuota":
            self._check_quota(op_id)
        elif step == "Allocating":
            self._allocate(op_id)
        elif step == "Connecting":
            self._connect(op_id)
        elif step == "Provisioning":
            await self._provision(op_id)
        nxt = CREATE_STEPS[step]
        shown = nxt or "Succeeded"
        with self.store.session() as s:
            hsm = self._hsm_of(s, op_id)
            hsm.provisioning_state, hsm.status_message = shown, STATUS[shown]
            if shown == "Succeeded" and hsm.billing_started_at is None:
                hsm.billing_started_at = utcnow()  # the device is the tenant's from now on
        return nxt

    def _hsm_of(self, s, op_id: str) -> DedicatedHsm:
        return s.get(DedicatedHsm, s.get(Operation, op_id).target)

    def _check_quota(self, op_id: str) -> None:
        with self.store.session() as s:
            if quota.must_wait(s, op_id):
                raise WaitInLine()
            hsm = self._hsm_of(s, op_id)
            per_region, _ = subscriptions.quota_for(s, hsm.subscription_id, hsm.location)
            used = quota.used(s, hsm.subscription_id, hsm.location, other_than=hsm.id)
            if used >= per_region:
                raise StepFailed(Conflict(
                    f"Quota exceeded: subscription {hsm.subscription_id} already has {used} dedicated HSM(s) in "
                    f"{hsm.location} and its quota is {per_region} per region. Delete HSMs left by failed "
                    f"deployments, or request more with 'hsmcloud quota request --region {hsm.location} "
                    f"--per-region {per_region + 1}'.", code=quota.REFUSED))

    def _allocate(self, op_id: str) -> None:
        with self.store.session() as s:
            hsm = self._hsm_of(s, op_id)
            if hsm.device_serial:  # a crash after allocating: the allocation is already committed
                return
            if quota.must_wait(s, op_id):
                raise WaitInLine()
            kind = SKUS[hsm.sku].device_kind
            per_region, per_stamp = subscriptions.quota_for(s, hsm.subscription_id, hsm.location)
            stamps = list(s.scalars(select(Stamp).where(Stamp.region == hsm.location).order_by(Stamp.index)))
            if hsm.requested_stamp:
                stamps = [st for st in stamps if st.name == hsm.requested_stamp]
            quota_blocked, candidates = [], []
            for st in stamps:
                mine = quota.used(s, hsm.subscription_id, hsm.location, stamp_id=st.id, other_than=hsm.id)
                free = s.scalar(select(func.count()).select_from(Device).where(
                    Device.stamp_id == st.id, Device.kind == kind, Device.role == "customer",
                    Device.state == "free"))
                if mine >= per_stamp:
                    quota_blocked.append(st.name)
                elif free > 0:
                    candidates.append((-free, st.index, st))
            if not candidates:
                if quota_blocked and len(quota_blocked) == len(stamps):
                    raise StepFailed(Conflict(
                        f"Quota exceeded: subscription {hsm.subscription_id} already has {per_stamp} dedicated HSM(s) "
                        f"in {', '.join(quota_blocked)} of {hsm.location}, its quota per stamp. Choose another stamp, "
                        f"or request more with 'hsmcloud quota request --region {hsm.location} --per-stamp "
                        f"{per_stamp + 1}'.", code=quota.REFUSED))
                where = f"stamp {hsm.requested_stamp} of {hsm.location}" if hsm.requested_stamp else hsm.location
                raise StepFailed(Conflict(
                    f"There is no free {kind} device left in {where}: the capacity is used up. Try another region"
                    f"{' or stamp' if hsm.requested_stamp else ''}, or ask the provider about capacity "
                    "('hsmcloud operator stamps' shows fill levels).", code="InsufficientCapacity"))
            candidates.sort(key=lambda c: (c[0], c[1]))
            for _, _, st in candidates:
                serials = s.scalars(select(Device.serial).where(
                    Device.stamp_id == st.id, Device.kind == kind, Device.role == "customer",
                    Device.state == "free").order_by(Device.serial)).all()
                for serial in serials:
                    # Conditional update: two creates racing for one device cannot both win it.
                    won = s.execute(update(Device).where(Device.serial == serial, Device.state == "free",
                                                         Device.hsm_id.is_(None))
                                    .values(state="allocated", hsm_id=hsm.id)).rowcount
                    if won == 1:
                        hsm.device_serial, hsm.stamp_id = serial, st.id
                        subscriptions.record(s, "control-plane", "device.allocate", serial, hsm=arm_id(hsm))
                        return
            raise ServiceUnavailable("Devices were taken concurrently; retrying allocation.", code="AllocationRace")

    def _connect(self, op_id: str) -> None:
        with self.store.session() as s:
            hsm = self._hsm_of(s, op_id)
            sn = s.get(Subnet, hsm.network_profile["subnet_id"])
            vnet = s.get(VirtualNetwork, sn.vnet_id) if sn else None
            if sn is None or vnet is None:
                raise StepFailed(Conflict("The HSM's subnet was deleted during deployment. Recreate it and retry.",
                                          code="SubnetNotFound"))
            gw = self.network.gateway_for_vnet(s, vnet.id)
            if gw is None:
                raise StepFailed(Conflict(
                    f"Virtual network '{vnet.name}' has no gateway. A dedicated HSM reaches your address space "
                    "through the virtual network's ExpressRoute gateway: create one in its GatewaySubnet, wait until "
                    "its provisioningState is Succeeded, then retry the deployment.", code="GatewayNotFound"))
            if self.network.gateway_state(gw) != "Succeeded":
                gw_group = find_group(s, gw.subscription_id, gw.rg_key)
                gw_id = (f"/subscriptions/{gw.subscription_id}/resourceGroups/"
                         f"{gw_group.name if gw_group else gw.rg_key}/providers/"
                         f"Microsoft.Network/virtualNetworkGateways/{gw.name}")
                raise StepFailed(Conflict(
                    f"Gateway '{gw.name}' of virtual network '{vnet.name}' is not ready (provisioningState "
                    f"{self.network.gateway_state(gw)}). Wait until it is Succeeded (az resource show --ids {gw_id}) "
                    "and retry the deployment.", code="GatewayNotReady"))
            if self.host_nics(s, hsm):  # a crash after creating the NICs: they are committed already
                return
            try:
                with s.begin_nested():
                    self._create_nics(s, hsm)
            except IntegrityError:
                raise StepFailed(Conflict("A requested private IP address or NIC name was taken while the HSM was "
                                          "being deployed. Retry with another address or omit it.",
                                          code="PrivateIPAddressInUse")) from None

    @staticmethod
    def host_nics(s, hsm: DedicatedHsm) -> list[NetworkInterface]:
        return list(s.scalars(select(NetworkInterface).where(NetworkInterface.hsm_id == hsm.id)))

    def _create_nics(self, s, hsm: DedicatedHsm) -> None:
        plans = [(f"{hsm.name}_HSMHost{i + 1}Nic", hsm.network_profile["subnet_id"], ip)
                 for i, ip in enumerate(hsm.network_profile["ips"])]
        if hsm.management_network_profile:
            plans.append((f"{hsm.name}_HSMMgmtNic", hsm.management_network_profile["subnet_id"],
                          hsm.management_network_profile["ips"][0]))
        now = utcnow()
        for name, subnet_id, ip in plans:
            sn = s.get(Subnet, subnet_id)
            net = ipam.parse_prefix(sn.address_prefix, target="subnet")
            taken = self.network.taken_ips(s, sn)
            if ip is None:
                ip = ipam.next_free(net, taken, target="privateIpAddress")
                method = "Dynamic"
            else:
                ipam.check_requested(net, ip, taken, target="privateIpAddress")
                method = "Static"
            s.add(NetworkInterface(subscription_id=hsm.subscription_id, rg_key=hsm.rg_key, rg_name=hsm.rg_name,
                                   name=name, name_key=name.lower(), location=hsm.location, subnet_id=sn.id,
                                   private_ip=ip, allocation_method=method, hsm_id=hsm.id, created_at=now))
            s.flush()

    def device_spec(self, s, device: Device) -> DeviceSpec:
        lmk_slots, cps = 1, 60
        if device.hsm_id:
            hsm = s.get(DedicatedHsm, device.hsm_id)
            if hsm is not None:
                sku = SKUS[hsm.sku]
                lmk_slots, cps = max(sku.lmk_count, 1), sku.calls_per_second or 60
        return DeviceSpec(serial=device.serial, kind=device.kind, address=device.loopback_address,
                          mgmt_token=device.mgmt_token,
                          ssh_port=device.ssh_port or self.settings.device_ssh_port,
                          ntls_port=device.ntls_port or self.settings.device_ntls_port,
                          mgmt_port=device.mgmt_port or self.settings.device_mgmt_port,
                          host1_port=device.host1_port or self.settings.device_host_port,
                          host2_port=device.host2_port or (self.settings.device_host_port + 1
                                                           if self.settings.device_host_port else 0),
                          lmk_slots=lmk_slots, calls_per_second=cps)

    async def start_device(self, serial: str) -> ManagementClient:
        """Run the device's appliance (idempotent) and record its ports."""
        with self.store.session() as s:
            spec = self.device_spec(s, s.get(Device, serial))
        ports = await self.host.ensure_running(spec)
        with self.store.session() as s:
            device = s.get(Device, serial)
            device.ssh_port, device.mgmt_port, device.ntls_port = ports.ssh, ports.mgmt, ports.ntls
            device.host1_port, device.host2_port = ports.host1, ports.host2
        return ManagementClient(ManagementEndpoint(serial=serial, kind=spec.kind, address=spec.address,
                                                   port=ports.mgmt, token=spec.mgmt_token))

    async def _provision(self, op_id: str) -> None:
        with self.store.session() as s:
            hsm = self._hsm_of(s, op_id)
            hsm_id, serial, kind = hsm.id, hsm.device_serial, SKUS[hsm.sku].device_kind
        mgmt = await self.start_device(serial)
        check = await mgmt.pristine()
        if not check.get("pristine"):
            # Never hand a tenant a device with anything of a previous tenant on it.
            await mgmt.reset()
            check = await mgmt.pristine()
            if not check.get("pristine"):
                raise ServiceUnavailable(f"Device {serial} is not pristine: {check.get('findings')}",
                                         code="DeviceNotPristine")
        await mgmt.health()
        # A payment device is handed over unclaimed: its tenant claims the management credential
        # itself (controlplane/credentials.py), so the provider never holds it.
        if kind == "luna":
            # The factory password would let any local process take a fresh device first; the
            # tenant's first login takes this per-HSM password (derived, the same on a repeat).
            password = self.initial_secrets.admin_password(hsm_id=hsm_id, serial=serial)
            try:
                await mgmt.set_initial_admin_password(password)
            except InvalidRequest as exc:
                if exc.code != "AdminPasswordChanged":
                    raise
                # Someone changed the factory password in the moment before: the retry resets the device.
                raise ServiceUnavailable(f"Device {serial}'s admin password was changed before hand-over; "
                                         "resetting it again.", code="DeviceNotPristine") from None

    async def _on_failure(self, op_id: str, kind: str, error: HsmCloudError) -> None:
        with self.store.session() as s:
            hsm = self._hsm_of(s, op_id)
            serial = hsm.device_serial
        if kind == "hsm.create" and serial:
            await self._return_device(serial, reason="create failed")
        with self.store.session() as s:
            hsm = self._hsm_of(s, op_id)
            if kind == "hsm.create":
                for nic in self.host_nics(s, hsm):
                    s.delete(nic)
                hsm.device_serial, hsm.stamp_id = None, None
            hsm.provisioning_state = "Failed"
            hsm.status_message = error.message
            hsm.error = failure_record(error)
            subscriptions.record(s, "control-plane", f"{kind}.failed", arm_id(hsm), code=error.code)
        self._finish(op_id, failure_record(error))

    async def _return_device(self, serial: str, *, reason: str) -> bool:
        """Reset a device, check it pristine and put it back in the free pool; quarantine it otherwise."""
        mgmt = await self.start_device(serial)
        await mgmt.reset()
        check = await mgmt.pristine()
        pristine, findings = bool(check.get("pristine")), check.get("findings", [])
        await self.host.stop(serial)
        with self.store.session() as s:
            device = s.get(Device, serial)
            device.hsm_id = None
            device.tenant_credential_issued_at = None
            device.state = "free" if pristine else "failed"
            device.last_checked_pristine_at = utcnow() if pristine else device.last_checked_pristine_at
            subscriptions.record(s, "control-plane", "device.return" if pristine else "device.quarantine", serial,
                                 reason=reason, findings=findings)
        return pristine

    # ---- delete ---------------------------------------------------------------------------------
    async def _delete_step(self, op_id: str, step: str) -> str | None:
        with self.store.session() as s:
            hsm = self._hsm_of(s, op_id)
            serial = hsm.device_serial
        if serial:
            with self.store.session() as s:
                still_ours = s.get(Device, serial).hsm_id == hsm.id
            if still_ours:
                await self._return_device(serial, reason="hsm deleted")
        with self.store.session() as s:
            hsm = self._hsm_of(s, op_id)
            for nic in self.host_nics(s, hsm):
                s.delete(nic)
            hsm.live_key = None
            hsm.deleted_at = utcnow()
            hsm.provisioning_state, hsm.status_message = "Deleted", "The dedicated HSM was deleted."
            subscriptions.record(s, "control-plane", "hsm.deleted", arm_id(hsm), device=serial)
        return DELETE_STEPS[step]

    # ---- start-up -------------------------------------------------------------------------------
    async def restart_allocated_devices(self) -> None:
        """After a restart, bring back the appliances of devices that tenants hold."""
        with self.store.session() as s:
            serials = list(s.scalars(select(Device.serial).where(Device.state == "allocated")))
        for serial in serials:
            try:
                await self.start_device(serial)
            except HsmCloudError as exc:
                log.error("device %s did not come back: %s", serial, exc.message)

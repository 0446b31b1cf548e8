"""The steps of creating and deleting a dedicated HSM, declared as data and run by the operation engine.

Each kind lists its steps: the provisioningState the HSM shows while it is at a step, the step
after it, the device work (`act`, safe to repeat: starting an appliance, resetting it) and the
writes (`commit`). The engine (controlplane/engine.py) commits a step's writes together with the
next step and the shown state in one transaction, only while its worker still holds the lease.
A crash before that commit repeats the step; after it, resumes at the next one."""
from __future__ import annotations

import asyncio
import logging

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from hsmcloud.controlplane import device_operations, quota, subscriptions
from hsmcloud.controlplane.engine import Engine, OperationKind, Step, StepContext, StepFailed, WaitInLine
from hsmcloud.controlplane.hsms import STATUS, arm_id
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


def _show_hsm(s, op: Operation, state: str) -> None:
    hsm = s.get(DedicatedHsm, op.target)
    hsm.provisioning_state = state
    hsm.status_message = STATUS.get(state, "The dedicated HSM was deleted." if state == "Deleted" else state)


def _hsm_failed(s, op: Operation, error: dict) -> None:
    hsm = s.get(DedicatedHsm, op.target)
    hsm.provisioning_state = "Failed"
    hsm.status_message = error.get("message", "")
    hsm.error = error
    subscriptions.record(s, "control-plane", f"{op.kind}.failed", arm_id(hsm), code=error.get("code"))


class Lifecycle:
    def __init__(self, *, store: Store, settings, host: DeviceHost, network: NetworkService,
                 initial_secrets: InitialSecrets):
        self.store = store
        self.settings = settings
        self.host = host
        self.network = network
        self.initial_secrets = initial_secrets
        self.kinds = {k.name: k for k in (self.create_kind(), self.delete_kind(),
                                          *device_operations.kinds(self))}
        self.engine = Engine(store=store, kinds=self.kinds, worker_id=settings.worker_id,
                             lease_seconds=lambda: settings.operation_lease_seconds,
                             step_delay=lambda: settings.step_delay_seconds)

    # ---- the kinds, as data ----------------------------------------------------------------
    def create_kind(self) -> OperationKind:
        return OperationKind(
            name="hsm.create", first="CheckingQuota", show=_show_hsm, fail=_hsm_failed, on_failure="Releasing",
            undo_needed=self._holds_anything, steps={
                "CheckingQuota": Step(shown="CheckingQuota", next="Allocating", commit=self._check_quota),
                "Allocating": Step(shown="Allocating", next="Connecting", commit=self._allocate),
                "Connecting": Step(shown="Connecting", next="Provisioning", commit=self._connect),
                "Provisioning": Step(shown="Provisioning", next=None, act=self._provision,
                                     commit=self._handed_over),
                # After a failed step: the device (if one was allocated) goes back, the NICs go.
                "Releasing": Step(shown=None, next=None, act=self._reset_held_device,
                                  commit=self._release_failed_create),
            })

    def delete_kind(self) -> OperationKind:
        return OperationKind(
            name="hsm.delete", first="Reclaiming", show=_show_hsm, fail=_hsm_failed, succeeded="Deleted",
            steps={"Reclaiming": Step(shown="Deleting", next=None, act=self._reset_held_device,
                                      commit=self._deleted)})

    def _holds_anything(self, s, op: Operation) -> bool:
        """A failed create undoes something only once it holds a device or NICs (not after the quota
        steps: it then fails in the same transaction that takes it out of its quota line)."""
        hsm = self._hsm_of(s, op)
        return bool(hsm.device_serial or self.host_nics(s, hsm))

    # ---- worker ---------------------------------------------------------------------------
    def wake(self) -> None:
        """Called from request threads after they create an operation."""
        self.engine.wake()

    async def run_forever(self, stop: asyncio.Event) -> None:
        await self.engine.run_forever(stop)

    async def run_once(self) -> bool:
        return await self.engine.run_once()

    # ---- create -----------------------------------------------------------------------------
    @staticmethod
    def _hsm_of(s, op: Operation) -> DedicatedHsm:
        return s.get(DedicatedHsm, op.target)

    def _check_quota(self, ctx: StepContext, s, op: Operation) -> None:
        if quota.must_wait(s, op.id):
            raise WaitInLine()
        hsm = self._hsm_of(s, op)
        per_region, _ = subscriptions.quota_for(s, hsm.subscription_id, hsm.location)
        used = quota.used(s, hsm.subscription_id, hsm.location, other_than=hsm.id)
        if used >= per_region:
            raise StepFailed(Conflict(
                f"Quota exceeded: subscription {hsm.subscription_id} already has {used} dedicated HSM(s) in "
                f"{hsm.location} and its quota is {per_region} per region. Delete HSMs left by failed "
                f"deployments, or request more with 'hsmcloud quota request --region {hsm.location} "
                f"--per-region {per_region + 1}'.", code=quota.REFUSED))

    def _allocate(self, ctx: StepContext, s, op: Operation) -> None:
        hsm = self._hsm_of(s, op)
        if hsm.device_serial:  # a crash after allocating: the allocation is already committed
            return
        if quota.must_wait(s, op.id):
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

    def _connect(self, ctx: StepContext, s, op: Operation) -> None:
        hsm = self._hsm_of(s, op)
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
        """Run the device's appliance (idempotent) and record its ports.

        The ports are a fact about the running appliance, not a step's result: whoever started it
        records where it listens, whether or not its operation lease still holds."""
        def spec_of(s):
            return self.device_spec(s, s.get(Device, serial))

        spec = await self._in_thread(spec_of)
        ports = await self.host.ensure_running(spec)

        def record(s):
            device = s.get(Device, serial)
            device.ssh_port, device.mgmt_port, device.ntls_port = ports.ssh, ports.mgmt, ports.ntls
            device.host1_port, device.host2_port = ports.host1, ports.host2

        await self._in_thread(record)
        return ManagementClient(ManagementEndpoint(serial=serial, kind=spec.kind, address=spec.address,
                                                   port=ports.mgmt, token=spec.mgmt_token))

    async def _in_thread(self, fn):
        return await self.engine.in_thread(fn)

    async def _provision(self, ctx: StepContext) -> None:
        def read(s):
            hsm = s.get(DedicatedHsm, ctx.target)
            return hsm.id, hsm.device_serial, SKUS[hsm.sku].device_kind

        hsm_id, serial, kind = await ctx.read(read)
        mgmt = await self.start_device(serial)
        await ctx.checkpoint()
        check = await mgmt.pristine()
        if not check.get("pristine"):
            # Never hand a tenant a device with anything of a previous tenant on it.
            await ctx.checkpoint()
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
            await ctx.checkpoint()
            try:
                await mgmt.set_initial_admin_password(password)
            except InvalidRequest as exc:
                if exc.code != "AdminPasswordChanged":
                    raise
                # Someone changed the factory password in the moment before: the retry resets the device.
                raise ServiceUnavailable(f"Device {serial}'s admin password was changed before hand-over; "
                                         "resetting it again.", code="DeviceNotPristine") from None

    def _handed_over(self, ctx: StepContext, s, op: Operation) -> None:
        hsm = self._hsm_of(s, op)
        if hsm.billing_started_at is None:
            hsm.billing_started_at = utcnow()  # the device is the tenant's from now on
        subscriptions.record(s, "control-plane", "hsm.provisioned", arm_id(hsm), device=hsm.device_serial)

    async def _reset_held_device(self, ctx: StepContext) -> None:
        """Act of the steps that give a device back: reset it and check it pristine, if the HSM holds one."""
        def held(s):
            hsm = s.get(DedicatedHsm, ctx.target)
            device = s.get(Device, hsm.device_serial) if hsm.device_serial else None
            return device.serial if device is not None and device.hsm_id == hsm.id else None

        serial = await ctx.read(held)
        if serial is None:
            return
        mgmt = await self.start_device(serial)
        await ctx.checkpoint()
        await mgmt.reset()
        check = await mgmt.pristine()
        await self.host.stop(serial)
        ctx.carry["returned"] = (serial, bool(check.get("pristine")), check.get("findings", []))

    def _put_back(self, ctx: StepContext, s, hsm: DedicatedHsm, *, reason: str) -> None:
        """Commit of a device return: the pool gets it back when pristine; quarantined otherwise."""
        if "returned" not in ctx.carry:
            return
        serial, pristine, findings = ctx.carry["returned"]
        device = s.get(Device, serial)
        if device.hsm_id != hsm.id:  # already returned (and maybe allocated again): not ours to touch
            return
        device.hsm_id = None
        device.tenant_credential_issued_at = None
        device.state = "free" if pristine else "failed"
        device.last_checked_pristine_at = utcnow() if pristine else device.last_checked_pristine_at
        subscriptions.record(s, "control-plane", "device.return" if pristine else "device.quarantine", serial,
                             reason=reason, findings=findings)

    def _release_failed_create(self, ctx: StepContext, s, op: Operation) -> None:
        hsm = self._hsm_of(s, op)
        self._put_back(ctx, s, hsm, reason="create failed")
        for nic in self.host_nics(s, hsm):
            s.delete(nic)
        hsm.device_serial, hsm.stamp_id = None, None

    # ---- delete ---------------------------------------------------------------------------------
    def _deleted(self, ctx: StepContext, s, op: Operation) -> None:
        hsm = self._hsm_of(s, op)
        self._put_back(ctx, s, hsm, reason="hsm deleted")
        for nic in self.host_nics(s, hsm):
            s.delete(nic)
        hsm.live_key = None
        hsm.deleted_at = utcnow()
        subscriptions.record(s, "control-plane", "hsm.deleted", arm_id(hsm), device=hsm.device_serial)

    # ---- start-up -------------------------------------------------------------------------------
    async def restart_allocated_devices(self) -> None:
        """After a restart, bring back the appliances of devices that tenants hold."""
        serials = await self._in_thread(
            lambda s: list(s.scalars(select(Device.serial).where(Device.state == "allocated"))))
        for serial in serials:
            try:
                await self.start_device(serial)
            except HsmCloudError as exc:
                log.error("device %s did not come back: %s", serial, exc.message)

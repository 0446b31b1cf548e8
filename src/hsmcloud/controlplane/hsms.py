"""Dedicated HSM resources: the rules of creating, reading, tagging and deleting them."""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from hsmcloud.controlplane import subscriptions
from hsmcloud.controlplane.operations import in_progress_for, new_operation
from hsmcloud.controlplane.scope import key, require_group, require_region, utcnow
from hsmcloud.controlplane.skus import SKUS, lookup
from hsmcloud.errors import Conflict, InvalidRequest, NotFound
from hsmcloud.identity.tokens import Principal
from hsmcloud.network import ipam
from hsmcloud.network.service import GATEWAY_SUBNET, HSM_DELEGATION, NetworkService
from hsmcloud.resource_ids import hsm_id, parse_subnet_id
from hsmcloud.store.models import DedicatedHsm, Device, NetworkInterface, Operation, Stamp

NAME_RE = re.compile(r"^[a-zA-Z0-9-]{3,24}$")
STATUS = {
    "CheckingQuota": "Resource creation in progress. Validating subscription device quota...",
    "Allocating": "Resource creation in progress. Allocating a device in the stamp...",
    "Connecting": "Resource creation in progress. Connecting the device to the virtual network...",
    "Provisioning": "Resource creation in progress. Configuring the device...",
    "Succeeded": "The Dedicated HSM device is provisioned successfully and ready to use.",
    "Deleting": "Resource deletion in progress. Resetting the device and returning it to the pool...",
}


@dataclass(kw_only=True)
class CreateRequest:
    location: str
    sku: str
    zones: list | None
    tags: dict
    stamp: str | None
    subnet_ref: str
    ips: list[str | None]
    mgmt_subnet_ref: str | None
    mgmt_ips: list[str | None]


def arm_id(hsm: DedicatedHsm) -> str:
    return hsm_id(hsm.subscription_id, hsm.rg_name, hsm.name)


def live_key(sub: str, rg: str, name: str) -> str:
    return f"{sub}/{key(rg)}/{key(name)}"


def validate_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise InvalidRequest(f"The name '{name}' is invalid: a dedicated HSM name has 3 to 24 characters, letters, "
                             "digits and hyphens only (^[a-zA-Z0-9-]{3,24}$).", code="InvalidResourceName",
                             target="name")


def _ref_of(obj: object, target: str) -> str:
    if not isinstance(obj, dict):
        raise InvalidRequest(f"'{target}' must be an object with 'resourceId' (or 'id') naming the subnet.",
                             code="InvalidNetworkProfile", target=target)
    ref = obj.get("resourceId") or obj.get("id")
    if not ref:
        raise InvalidRequest(f"'{target}' needs 'resourceId' (api-version 2024-06-30-preview and later) or 'id' "
                             "(earlier versions) with the subnet's resource id.", code="InvalidNetworkProfile",
                             target=target)
    return ref


def _profile(props: dict, field: str, *, required: bool) -> tuple[str | None, list[str | None]]:
    prof = props.get(field)
    if prof is None:
        if required:
            raise InvalidRequest(f"properties.{field} is required: give the subnet the HSM joins, e.g. "
                                 "{\"subnet\": {\"resourceId\": \"/subscriptions/.../subnets/hsmsubnet\"}}.",
                                 code="InvalidNetworkProfile", target=f"properties.{field}")
        return None, []
    if not isinstance(prof, dict):
        raise InvalidRequest(f"properties.{field} must be an object.", code="InvalidNetworkProfile",
                             target=f"properties.{field}")
    ref = _ref_of(prof.get("subnet"), f"properties.{field}.subnet")
    nics = prof.get("networkInterfaces") or []
    if not isinstance(nics, list):
        raise InvalidRequest(f"properties.{field}.networkInterfaces must be an array.",
                             code="InvalidNetworkProfile", target=f"properties.{field}.networkInterfaces")
    ips: list[str | None] = []
    for i, nic in enumerate(nics):
        if not isinstance(nic, dict):
            raise InvalidRequest("Each network interface must be an object.", code="InvalidNetworkProfile",
                                 target=f"properties.{field}.networkInterfaces[{i}]")
        ip = nic.get("privateIpAddress")
        if ip is not None and not isinstance(ip, str):
            raise InvalidRequest("privateIpAddress must be a string.", code="InvalidPrivateIpAddress",
                                 target=f"properties.{field}.networkInterfaces[{i}].privateIpAddress")
        ips.append(ip or None)
    return ref, ips


def parse_create(body: object, api_version: str) -> CreateRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object describing the dedicated HSM.")
    location = body.get("location")
    if not isinstance(location, str) or not location.strip():
        raise InvalidRequest("'location' is required, e.g. \"eastus\".", code="LocationRequired", target="location")
    sku = body.get("sku")
    if not isinstance(sku, dict) or not isinstance(sku.get("name"), str):
        raise InvalidRequest(f"'sku.name' is required: one of {', '.join(SKUS)}.", code="InvalidSku",
                             target="sku.name")
    if lookup(sku["name"], api_version) is None:
        allowed = [n for n in SKUS if lookup(n, api_version)]
        raise InvalidRequest(f"The SKU '{sku['name']}' is not valid for api-version {api_version}: use one of "
                             f"{', '.join(allowed)}.", code="InvalidSku", target="sku.name")
    props = body.get("properties")
    if not isinstance(props, dict):
        raise InvalidRequest("'properties' is required and must be an object with a networkProfile.",
                             code="InvalidRequestContent", target="properties")
    zones = body.get("zones")
    if zones is not None and (not isinstance(zones, list) or not all(isinstance(z, str) for z in zones)):
        raise InvalidRequest("'zones' must be an array of strings.", target="zones")
    tags = body.get("tags") or {}
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise InvalidRequest("'tags' must be an object of string values.", code="InvalidTags", target="tags")
    stamp = props.get("stampId")
    if stamp is not None and not isinstance(stamp, str):
        raise InvalidRequest("properties.stampId must be a string such as \"stamp1\".", target="properties.stampId")
    subnet_ref, ips = _profile(props, "networkProfile", required=True)
    mgmt_ref, mgmt_ips = _profile(props, "managementNetworkProfile", required=False)
    payment = SKUS[sku["name"]].is_payment
    if not payment and (mgmt_ref or mgmt_ips):
        raise InvalidRequest("managementNetworkProfile applies to payment HSM SKUs only.",
                             code="InvalidNetworkProfile", target="properties.managementNetworkProfile")
    max_host = 2 if payment else 1
    if len(ips) > max_host:
        raise InvalidRequest(f"At most {max_host} network interface(s) can be given for SKU '{sku['name']}'.",
                             code="InvalidNetworkProfile", target="properties.networkProfile.networkInterfaces")
    if len(mgmt_ips) > 1:
        raise InvalidRequest("At most one management network interface can be given.",
                             code="InvalidNetworkProfile", target="properties.managementNetworkProfile")
    return CreateRequest(location=location.replace(" ", "").lower(), sku=sku["name"], zones=zones, tags=tags,
                         stamp=stamp, subnet_ref=subnet_ref, ips=ips or [None], mgmt_subnet_ref=mgmt_ref,
                         mgmt_ips=mgmt_ips)


class HsmService:
    def __init__(self, settings, network: NetworkService):
        self.settings = settings
        self.network = network

    # ---- reading -------------------------------------------------------------------------
    def find(self, s: Session, sub: str, rg: str, name: str) -> DedicatedHsm | None:
        return s.scalar(select(DedicatedHsm).where(DedicatedHsm.live_key == live_key(sub, rg, name)))

    def get(self, s: Session, sub: str, rg: str, name: str) -> DedicatedHsm:
        require_group(s, sub, rg)
        hsm = self.find(s, sub, rg, name)
        if hsm is None:
            raise NotFound(f"The Resource 'Microsoft.HardwareSecurityModules/dedicatedHSMs/{name}' under resource "
                           f"group '{rg}' was not found.")
        return hsm

    def list(self, s: Session, sub: str, rg: str | None) -> list[DedicatedHsm]:
        q = select(DedicatedHsm).where(DedicatedHsm.subscription_id == sub, DedicatedHsm.live_key.is_not(None))
        if rg is not None:
            require_group(s, sub, rg)
            q = q.where(DedicatedHsm.rg_key == key(rg))
        return list(s.scalars(q.order_by(DedicatedHsm.created_at, DedicatedHsm.id)))

    def nics_of(self, s: Session, hsm: DedicatedHsm) -> list[NetworkInterface]:
        return list(s.scalars(select(NetworkInterface).where(NetworkInterface.hsm_id == hsm.id)
                              .order_by(NetworkInterface.id)))

    def stamp_name(self, s: Session, hsm: DedicatedHsm) -> str | None:
        if hsm.stamp_id is None:
            return hsm.requested_stamp
        return s.get(Stamp, hsm.stamp_id).name

    def device_of(self, s: Session, hsm: DedicatedHsm) -> Device | None:
        return s.get(Device, hsm.device_serial) if hsm.device_serial else None

    # ---- creating ------------------------------------------------------------------------
    def create_or_update(self, s: Session, principal: Principal, sub: str, rg: str, name: str, body: object,
                         api_version: str) -> tuple[DedicatedHsm, Operation | None, bool]:
        """Create, retry or update an HSM: (the HSM, the create operation it started if any, whether it is new)."""
        validate_name(name)
        req = parse_create(body, api_version)
        group = require_group(s, sub, rg)
        existing = self.find(s, sub, rg, name)
        if existing is not None:
            return *self._put_existing(s, principal, existing, req), False
        subscriptions.require_allowlisted(s, sub)
        require_region(s, req.location, target="location")
        self._check_stamp(s, req.location, req.stamp)
        profile = self._check_network(s, sub, req.location, req.subnet_ref, req.ips, "networkProfile")
        mgmt_profile = None
        if SKUS[req.sku].is_payment:
            mgmt_profile = self._check_network(s, sub, req.location, req.mgmt_subnet_ref or req.subnet_ref,
                                               req.mgmt_ips or [None], "managementNetworkProfile",
                                               also_taken=[ip for ip in req.ips if ip])
        now = utcnow()
        hsm = DedicatedHsm(
            id=str(uuid.uuid4()), live_key=live_key(sub, rg, name), subscription_id=sub, rg_name=group.name,
            rg_key=key(rg), name=name, location=req.location, sku=req.sku, zones=req.zones, tags=req.tags,
            requested_stamp=req.stamp, network_profile=profile, management_network_profile=mgmt_profile,
            provisioning_state="CheckingQuota", status_message=STATUS["CheckingQuota"], error=None,
            orphaned=False, force_delete=False, created_at=now, created_by=principal.name, modified_at=now,
            modified_by=principal.name)
        s.add(hsm)
        s.flush()
        op = new_operation(s, kind="hsm.create", subscription_id=sub, location=req.location, target=hsm.id,
                           step="CheckingQuota")
        subscriptions.record(s, principal.name, "hsm.create", arm_id(hsm), sku=req.sku)
        return hsm, op, True

    @staticmethod
    def _check_stamp(s: Session, location: str, stamp: str | None) -> None:
        if stamp is not None and s.scalar(select(Stamp).where(Stamp.region == location,
                                                             Stamp.name == stamp)) is None:
            names = sorted(s.scalars(select(Stamp.name).where(Stamp.region == location)))
            raise InvalidRequest(f"Stamp '{stamp}' does not exist in {location}; use one of "
                                 f"{', '.join(names)} or omit stampId.", code="InvalidStampId",
                                 target="properties.stampId")

    def _put_existing(self, s: Session, principal: Principal, hsm: DedicatedHsm,
                      req: CreateRequest) -> tuple[DedicatedHsm, Operation | None]:
        if in_progress_for(s, hsm.id) is not None:
            raise Conflict(f"Dedicated HSM '{hsm.name}' is {hsm.provisioning_state}: wait for the running operation "
                           "to finish before changing it.", code="AnotherOperationInProgress")
        if req.location != hsm.location:
            raise InvalidRequest(f"The location of dedicated HSM '{hsm.name}' is {hsm.location} and cannot change to "
                                 f"{req.location}: a resource stays in the region it was created in. Delete it and "
                                 f"create a new one in {req.location}.", code="PropertyChangeNotAllowed",
                                 target="location")
        # A deployment that failed holds no device, so the PUT that reruns it may correct how it is
        # placed (subnet, IPs, stamp, zones, SKU of the same kind). A failed delete still holds one.
        rerun = hsm.provisioning_state == "Failed" and not hsm.device_serial
        if rerun:
            self._check_same_kind(hsm, req)
        else:
            changed = [f for f, old, new in (("sku.name", hsm.sku, req.sku), (
                "properties.networkProfile.subnet", hsm.network_profile.get("subnet_ref", "").lower(),
                req.subnet_ref.lower())) if old != new]
            changed += self._placement_changes(s, hsm, req)
            if changed:
                raise InvalidRequest(f"{', '.join(changed)} of an existing dedicated HSM cannot change. Delete it "
                                     "and create a new one instead.", code="PropertyChangeNotAllowed",
                                     target=changed[0])
        hsm.tags = req.tags
        hsm.modified_at, hsm.modified_by = utcnow(), principal.name
        if hsm.provisioning_state != "Failed":
            return hsm, None
        # Rerunning a failed deployment (e.g. after the gateway became ready) starts it over.
        subscriptions.require_allowlisted(s, hsm.subscription_id)
        if rerun:
            self._check_stamp(s, hsm.location, req.stamp)
            hsm.sku = req.sku
        hsm.network_profile = self._check_network(s, hsm.subscription_id, hsm.location, req.subnet_ref, req.ips,
                                                  "networkProfile")
        if SKUS[hsm.sku].is_payment:
            hsm.management_network_profile = self._check_network(
                s, hsm.subscription_id, hsm.location, req.mgmt_subnet_ref or req.subnet_ref,
                req.mgmt_ips or [None], "managementNetworkProfile", also_taken=[ip for ip in req.ips if ip])
        hsm.requested_stamp = req.stamp
        hsm.zones = req.zones
        hsm.provisioning_state, hsm.status_message, hsm.error = "CheckingQuota", STATUS["CheckingQuota"], None
        op = new_operation(s, kind="hsm.create", subscription_id=hsm.subscription_id, location=hsm.location,
                           target=hsm.id, step="CheckingQuota")
        subscriptions.record(s, principal.name, "hsm.retry", arm_id(hsm))
        return hsm, op

    @staticmethod
    def _check_same_kind(hsm: DedicatedHsm, req: CreateRequest) -> None:
        """A rerun may pick another SKU of the same kind, not turn a general-purpose HSM into a payment one."""
        def kind(sku: str) -> str:
            return "a payment HSM" if SKUS[sku].is_payment else "a general-purpose HSM"
        if kind(hsm.sku) != kind(req.sku):
            raise InvalidRequest(f"Dedicated HSM '{hsm.name}' is {kind(hsm.sku)} ('{hsm.sku}') and cannot become "
                                 f"{kind(req.sku)} ('{req.sku}'): choose a SKU of the same kind, or delete it and "
                                 "create a new one.", code="PropertyChangeNotAllowed", target="sku.name")

    def _placement_changes(self, s: Session, hsm: DedicatedHsm, req: CreateRequest) -> list[str]:
        """Fields of a PUT that would move a deployed HSM (which only a new HSM can do)."""
        changed = []
        if req.stamp is not None and req.stamp != self.stamp_name(s, hsm):
            changed.append("properties.stampId")
        if req.zones is not None and req.zones != (hsm.zones or []):
            changed.append("zones")
        host = [n for n in self.nics_of(s, hsm) if not n.name.endswith("_HSMMgmtNic")]
        for i, ip in enumerate(req.ips):
            if ip is not None and (i >= len(host) or host[i].private_ip != ip):
                changed.append(f"properties.networkProfile.networkInterfaces[{i}].privateIpAddress")
        if req.mgmt_subnet_ref and hsm.management_network_profile and \
                req.mgmt_subnet_ref.lower() != hsm.management_network_profile["subnet_ref"].lower():
            changed.append("properties.managementNetworkProfile.subnet")
        return changed

    def _check_network(self, s: Session, sub: str, location: str, subnet_ref: str, ips: list[str | None],
                       field: str, also_taken: list[str] | None = None) -> dict:
        target = f"properties.{field}.subnet"
        ref = parse_subnet_id(subnet_ref, target=target)
        if ref.subscription_id != sub:
            raise InvalidRequest("The subnet must belong to the same subscription as the dedicated HSM.",
                                 code="InvalidSubnetId", target=target)
        vnet, sn = self.network.resolve_subnet(s, ref, target=target)
        if vnet.location != location:
            raise InvalidRequest(f"Virtual network '{vnet.name}' is in {vnet.location} but the dedicated HSM is in "
                                 f"{location}: both must be in the same region.", code="VirtualNetworkLocationMismatch",
                                 target=target)
        if sn.name_key == key(GATEWAY_SUBNET):
            raise self._gateway_subnet_error(s, vnet, subnet_ref, target)
        if not any(d["serviceName"].lower() == HSM_DELEGATION.lower() for d in sn.delegations):
            raise InvalidRequest(
                f"Subnet '{sn.name}' of virtual network '{vnet.name}' is not delegated to {HSM_DELEGATION}. Add the "
                f"delegation and retry: az network vnet subnet update -g {ref.resource_group} --vnet-name {vnet.name} "
                f"-n {sn.name} --delegations {HSM_DELEGATION}.", code="SubnetNotDelegated", target=target)
        taken = self.network.taken_ips(s, sn) | set(also_taken or [])
        net = ipam.parse_prefix(sn.address_prefix, target=target)
        seen: set[str] = set()
        for i, ip in enumerate(ips):
            if ip is None:
                continue
            ipam.check_requested(net, ip, taken | seen,
                                 target=f"properties.{field}.networkInterfaces[{i}].privateIpAddress")
            seen.add(ip)
        return {"subnet_ref": subnet_ref, "subnet_id": sn.id, "ips": ips}

    def _gateway_subnet_error(self, s: Session, vnet, subnet_ref: str, target: str) -> InvalidRequest:
        """GatewaySubnet belongs to the virtual network's gateway: point at the HSM subnet instead."""
        delegated = [sn.name for sn in self.network.list_subnets_of(s, vnet)
                     if any(d["serviceName"].lower() == HSM_DELEGATION.lower() for d in sn.delegations)]
        subnets_of_vnet = subnet_ref.rstrip("/").rsplit("/", 1)[0]
        use = (f"Use the HSM subnet instead: {subnets_of_vnet}/{delegated[0]}" if delegated else
               f"Use a subnet of its own delegated to {HSM_DELEGATION} (e.g. 'hsmsubnet', as 'hsmcloud network "
               "create' makes it)")
        return InvalidRequest(f"Subnet 'GatewaySubnet' of virtual network '{vnet.name}' is reserved for the virtual "
                              f"network gateway and cannot hold dedicated HSMs. {use}.",
                              code="GatewaySubnetNotAllowed", target=target)

    # ---- tags ----------------------------------------------------------------------------
    def update_tags(self, s: Session, principal: Principal, sub: str, rg: str, name: str, body: object) -> DedicatedHsm:
        validate_name(name)
        hsm = self.get(s, sub, rg, name)
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object such as {\"tags\": {\"k\": \"v\"}}.")
        extra = sorted(set(body) - {"tags"})
        if extra:
            raise InvalidRequest(f"Only tags can be updated with PATCH; remove {', '.join(extra)}.",
                                 code="PropertyChangeNotAllowed", target=extra[0])
        tags = body.get("tags") or {}
        if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
            raise InvalidRequest("'tags' must be an object of string values.", code="InvalidTags", target="tags")
        hsm.tags = tags
        hsm.modified_at, hsm.modified_by = utcnow(), principal.name
        return hsm

    # ---- deleting ------------------------------------------------------------------------
    def begin_delete(self, s: Session, principal: Principal, hsm: DedicatedHsm, *, zeroized: bool | None,
                     released: bool | None = None) -> Operation:
        """Start deletion. `zeroized` is what the device reported (None: no device was handed over)."""
        running = in_progress_for(s, hsm.id)
        if running is not None:
            if running.kind == "hsm.delete":
                return running
            raise Conflict(f"Dedicated HSM '{hsm.name}' is {hsm.provisioning_state}: wait for the running operation "
                           "to finish before deleting it.", code="AnotherOperationInProgress")
        sku = SKUS[hsm.sku]
        if not hsm.force_delete and hsm.device_serial:
            if not sku.is_payment and zeroized is False:
                raise InvalidRequest(
                    f"Dedicated HSM '{hsm.name}' cannot be deleted because its device is not zeroized. Zeroize it "
                    "first: SSH to the appliance as admin and run 'hsm zeroize' (or enter the HSM SO password wrong 3 "
                    "times at 'hsm login'), then delete again.", code="HsmNotZeroized")
            if sku.is_payment and released is False:
                raise InvalidRequest(
                    f"Payment HSM '{hsm.name}' cannot be deleted because its device was not released. Release it "
                    "first ('hsmcloud payshield release'), then delete again.", code="PaymentHsmNotReleased")
        hsm.provisioning_state, hsm.status_message = "Deleting", STATUS["Deleting"]
        hsm.modified_at, hsm.modified_by = utcnow(), principal.name
        op = new_operation(s, kind="hsm.delete", subscription_id=hsm.subscription_id, location=hsm.location,
                           target=hsm.id, step="Reclaiming")
        subscriptions.record(s, principal.name, "hsm.delete", arm_id(hsm), force=hsm.force_delete)
        return op

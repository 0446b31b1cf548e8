"""Virtual networks, subnets with delegations, gateways and network interfaces."""
from __future__ import annotations

import ipaddress
import re
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from hsmcloud.controlplane.scope import key, require_group, utcnow
from hsmcloud.errors import Conflict, InvalidRequest, NotFound
from hsmcloud.network import ipam
from hsmcloud.resource_ids import SubnetRef, parse_subnet_id
from hsmcloud.store.models import NetworkInterface, Subnet, VirtualNetwork, VirtualNetworkGateway

HSM_DELEGATION = "Microsoft.HardwareSecurityModules/dedicatedHSMs"
GATEWAY_SUBNET = "GatewaySubnet"
GATEWAY_TYPES = ("ExpressRoute", "Vpn", "LocalGateway")
# Azure's naming rule for these types: a letter or digit first, a letter, digit or underscore last,
# letters, digits, underscores, periods and hyphens between; (shortest, longest) per type.
NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
NAME_LENGTHS = {"virtual network": (2, 64), "subnet": (1, 80), "virtual network gateway": (1, 80)}


def check_name(kind: str, name: str, *, target: str = "name") -> None:
    shortest, longest = NAME_LENGTHS[kind]
    if not (shortest <= len(name) <= longest and NAME_RE.match(name)):
        raise InvalidRequest(f"The {kind} name '{name}' is invalid: {shortest}-{longest} letters, digits, "
                             "underscores, periods and hyphens, starting with a letter or digit and ending with a "
                             "letter, digit or underscore.", code="InvalidResourceName", target=target)


def _props(body: dict, target: str) -> dict:
    props = body.get("properties", {})
    if props is None:
        props = {}
    if not isinstance(props, dict):
        raise InvalidRequest("'properties' must be an object.", target=target)
    return props


def _location(body: dict, fallback: str | None) -> str:
    loc = body.get("location") or fallback
    if not isinstance(loc, str) or not loc:
        raise InvalidRequest("'location' is required.", code="LocationRequired", target="location")
    return loc.replace(" ", "").lower()


def _tags(body: dict) -> dict:
    tags = body.get("tags") or {}
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise InvalidRequest("'tags' must be an object of string values.", code="InvalidTags", target="tags")
    return tags


def _delegations(raw: object, target: str) -> list[dict]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidRequest("'delegations' must be an array.", target=target)
    out = []
    for i, d in enumerate(raw):
        if not isinstance(d, dict):
            raise InvalidRequest("Each delegation must be an object.", target=f"{target}[{i}]")
        service = (d.get("properties") or {}).get("serviceName") or d.get("serviceName")
        if not isinstance(service, str) or "/" not in service:
            raise InvalidRequest("A delegation needs properties.serviceName, e.g. "
                                 f"'{HSM_DELEGATION}'.", code="InvalidServiceNameOnDelegation",
                                 target=f"{target}[{i}].properties.serviceName")
        out.append({"name": d.get("name") or f"delegation{i}", "serviceName": service})
    return out


class NetworkService:
    def __init__(self, settings):
        self.settings = settings

    # ---- virtual networks -------------------------------------------------------------
    def find_vnet(self, s: Session, sub: str, rg: str, name: str) -> VirtualNetwork | None:
        return s.scalar(select(VirtualNetwork).where(
            VirtualNetwork.subscription_id == sub, VirtualNetwork.rg_key == key(rg),
            VirtualNetwork.name_key == key(name)))

    def get_vnet(self, s: Session, sub: str, rg: str, name: str) -> VirtualNetwork:
        require_group(s, sub, rg)
        vnet = self.find_vnet(s, sub, rg, name)
        if vnet is None:
            raise NotFound(f"Virtual network '{name}' was not found in resource group '{rg}'.")
        return vnet

    def list_vnets(self, s: Session, sub: str, rg: str | None) -> list[VirtualNetwork]:
        q = select(VirtualNetwork).where(VirtualNetwork.subscription_id == sub)
        if rg is not None:
            require_group(s, sub, rg)
            q = q.where(VirtualNetwork.rg_key == key(rg))
        return list(s.scalars(q.order_by(VirtualNetwork.id)))

    def put_vnet(self, s: Session, sub: str, rg: str, name: str, body: dict) -> tuple[VirtualNetwork, bool]:
        group = require_group(s, sub, rg)
        check_name("virtual network", name)
        props = _props(body, "properties")
        prefixes_raw = (props.get("addressSpace") or {}).get("addressPrefixes")
        if not isinstance(prefixes_raw, list) or not prefixes_raw:
            raise InvalidRequest("properties.addressSpace.addressPrefixes must list at least one prefix, "
                                 "e.g. [\"10.2.0.0/16\"].", code="InvalidAddressSpace",
                                 target="properties.addressSpace.addressPrefixes")
        prefixes = [ipam.parse_prefix(p, target="properties.addressSpace.addressPrefixes") for p in prefixes_raw]
        for a in range(len(prefixes)):
            for b in range(a + 1, len(prefixes)):
                if prefixes[a].overlaps(prefixes[b]):
                    raise InvalidRequest(f"Address prefixes {prefixes[a]} and {prefixes[b]} overlap.",
                                         code="NetcfgInvalidAddressPrefixOverlap",
                                         target="properties.addressSpace.addressPrefixes")
        vnet = self.find_vnet(s, sub, rg, name)
        created = vnet is None
        if created:
            vnet = VirtualNetwork(subscription_id=sub, rg_key=key(rg), name=name, name_key=key(name),
                                  location=_location(body, group.location), created_at=utcnow())
            s.add(vnet)
        vnet.address_prefixes = [str(p) for p in prefixes]
        vnet.tags = _tags(body)
        s.flush()
        if "subnets" in props:
            subnets = props.get("subnets") or []
            if not isinstance(subnets, list):
                raise InvalidRequest("properties.subnets must be an array.", target="properties.subnets")
            wanted = {}
            for i, sn in enumerate(subnets):
                if not isinstance(sn, dict) or not isinstance(sn.get("name"), str):
                    raise InvalidRequest("Each subnet needs a name.", target=f"properties.subnets[{i}].name")
                wanted[key(sn["name"])] = sn
            for existing in self.list_subnets_of(s, vnet):
                if existing.name_key not in wanted:
                    self._delete_subnet_row(s, vnet, existing)
            for i, sn in enumerate(subnets):
                self._put_subnet_row(s, vnet, sn["name"], sn, target=f"properties.subnets[{i}]")
        return vnet, created

    def delete_vnet(self, s: Session, sub: str, rg: str, name: str) -> bool:
        require_group(s, sub, rg)
        vnet = self.find_vnet(s, sub, rg, name)
        if vnet is None:
            return False
        gw = s.scalar(select(VirtualNetworkGateway).where(VirtualNetworkGateway.vnet_id == vnet.id))
        if gw is not None:
            raise Conflict(f"Virtual network '{name}' still has gateway '{gw.name}'. Delete the gateway first.",
                           code="InUseVirtualNetworkCannotBeDeleted")
        for sn in self.list_subnets_of(s, vnet):
            self._delete_subnet_row(s, vnet, sn)
        s.delete(vnet)
        return True

    # ---- subnets ------------------------------------------------------------------------
    def list_subnets_of(self, s: Session, vnet: VirtualNetwork) -> list[Subnet]:
        return list(s.scalars(select(Subnet).where(Subnet.vnet_id == vnet.id).order_by(Subnet.id)))

    def find_subnet(self, s: Session, vnet: VirtualNetwork, name: str) -> Subnet | None:
        return s.scalar(select(Subnet).where(Subnet.vnet_id == vnet.id, Subnet.name_key == key(name)))

    def get_subnet(self, s: Session, sub: str, rg: str, vnet_name: str, name: str) -> tuple[VirtualNetwork, Subnet]:
        vnet = self.get_vnet(s, sub, rg, vnet_name)
        sn = self.find_subnet(s, vnet, name)
        if sn is None:
            raise NotFound(f"Subnet '{name}' was not found in virtual network '{vnet_name}'.")
        return vnet, sn

    def put_subnet(self, s: Session, sub: str, rg: str, vnet_name: str, name: str, body: dict):
        vnet = self.get_vnet(s, sub, rg, vnet_name)
        existed = self.find_subnet(s, vnet, name) is not None
        sn = self._put_subnet_row(s, vnet, name, body, target="properties")
        return vnet, sn, not existed

    def delete_subnet(self, s: Session, sub: str, rg: str, vnet_name: str, name: str) -> bool:
        vnet = self.get_vnet(s, sub, rg, vnet_name)
        sn = self.find_subnet(s, vnet, name)
        if sn is None:
            return False
        self._delete_subnet_row(s, vnet, sn)
        return True

    def _put_subnet_row(self, s: Session, vnet: VirtualNetwork, name: str, body: dict, *, target: str) -> Subnet:
        check_name("subnet", name, target=f"{target}.name" if target != "properties" else "name")
        props = _props(body, target)
        prefix = ipam.parse_prefix(props.get("addressPrefix"), target=f"{target}.properties.addressPrefix"
                                   if target != "properties" else "properties.addressPrefix")
        if not any(prefix.subnet_of(ipaddress.ip_network(p)) for p in vnet.address_prefixes):
            raise InvalidRequest(f"Subnet '{name}' prefix {prefix} is not inside the virtual network's address "
                                 f"space {', '.join(vnet.address_prefixes)}.",
                                 code="NetcfgSubnetRangeOutsideVnet", target=target)
        for other in self.list_subnets_of(s, vnet):
            if other.name_key != key(name) and ipaddress.ip_network(other.address_prefix).overlaps(prefix):
                raise InvalidRequest(f"Subnet '{name}' ({prefix}) overlaps subnet '{other.name}' "
                                     f"({other.address_prefix}).", code="NetcfgSubnetRangesOverlap", target=target)
        delegations = _delegations(props.get("delegations"), f"{target}.properties.delegations")
        sn = self.find_subnet(s, vnet, name)
        if sn is None:
            sn = Subnet(vnet_id=vnet.id, name=name, name_key=key(name), address_prefix=str(prefix),
                        delegations=delegations)
            s.add(sn)
        else:
            in_use = self._ips_in_subnet(s, sn)
            if in_use and str(prefix) != sn.address_prefix:
                raise Conflict(f"Subnet '{name}' has network interfaces attached and its prefix cannot change.",
                               code="InUseSubnetCannotBeUpdated", target=target)
            if in_use and not any(d["serviceName"].lower() == HSM_DELEGATION.lower() for d in delegations):
                raise Conflict(f"Subnet '{name}' hosts dedicated HSMs: its delegation to {HSM_DELEGATION} cannot "
                               "be removed while they exist.", code="InUseSubnetCannotBeUpdated", target=target)
            sn.address_prefix = str(prefix)
            sn.delegations = delegations
        s.flush()
        return sn

    def _delete_subnet_row(self, s: Session, vnet: VirtualNetwork, sn: Subnet) -> None:
        if self._ips_in_subnet(s, sn):
            raise Conflict(f"Subnet '{sn.name}' is in use by network interfaces of dedicated HSMs. Delete the "
                           "HSMs first.", code="InUseSubnetCannotBeDeleted")
        s.delete(sn)
        s.flush()

    def _ips_in_subnet(self, s: Session, sn: Subnet) -> set[str]:
        return set(s.scalars(select(NetworkInterface.private_ip).where(NetworkInterface.subnet_id == sn.id)))

    # ---- gateways -------------------------------------------------------------------------
    def find_gateway(self, s: Session, sub: str, rg: str, name: str) -> VirtualNetworkGateway | None:
        return s.scalar(select(VirtualNetworkGateway).where(
            VirtualNetworkGateway.subscription_id == sub, VirtualNetworkGateway.rg_key == key(rg),
            VirtualNetworkGateway.name_key == key(name)))

    def get_gateway(self, s: Session, sub: str, rg: str, name: str) -> VirtualNetworkGateway:
        require_group(s, sub, rg)
        gw = self.find_gateway(s, sub, rg, name)
        if gw is None:
            raise NotFound(f"Virtual network gateway '{name}' was not found in resource group '{rg}'.")
        return gw

    def list_gateways(self, s: Session, sub: str, rg: str) -> list[VirtualNetworkGateway]:
        require_group(s, sub, rg)
        return list(s.scalars(select(VirtualNetworkGateway).where(
            VirtualNetworkGateway.subscription_id == sub, VirtualNetworkGateway.rg_key == key(rg))
            .order_by(VirtualNetworkGateway.id)))

    def put_gateway(self, s: Session, sub: str, rg: str, name: str, body: dict):
        group = require_group(s, sub, rg)
        check_name("virtual network gateway", name)
        props = _props(body, "properties")
        gtype = props.get("gatewayType", "ExpressRoute")
        if gtype not in GATEWAY_TYPES:
            raise InvalidRequest(f"gatewayType '{gtype}' is not one of {', '.join(GATEWAY_TYPES)}.",
                                 code="InvalidGatewayType", target="properties.gatewayType")
        ipconfs = props.get("ipConfigurations")
        if not isinstance(ipconfs, list) or len(ipconfs) != 1 or not isinstance(ipconfs[0], dict):
            raise InvalidRequest("A gateway needs exactly one entry in properties.ipConfigurations whose "
                                 "properties.subnet.id is the virtual network's GatewaySubnet.",
                                 code="InvalidGatewayIpConfiguration", target="properties.ipConfigurations")
        ref_raw = ((ipconfs[0].get("properties") or {}).get("subnet") or {}).get("id")
        ref = parse_subnet_id(ref_raw, target="properties.ipConfigurations[0].properties.subnet.id")
        if ref.subscription_id != sub:
            raise InvalidRequest("The gateway subnet must be in the same subscription.",
                                 code="InvalidGatewayIpConfiguration", target="properties.ipConfigurations")
        if ref.subnet.lower() != GATEWAY_SUBNET.lower():
            raise InvalidRequest(f"A gateway must be placed in the subnet named '{GATEWAY_SUBNET}', not "
                                 f"'{ref.subnet}'. Add a subnet called GatewaySubnet to the virtual network.",
                                 code="GatewaySubnetRequired", target="properties.ipConfigurations")
        vnet, _sn = self.get_subnet(s, sub, ref.resource_group, ref.vnet, ref.subnet)
        gw = self.find_gateway(s, sub, rg, name)
        other = s.scalar(select(VirtualNetworkGateway).where(VirtualNetworkGateway.vnet_id == vnet.id))
        if other is not None and (gw is None or other.id != gw.id):
            raise Conflict(f"Virtual network '{vnet.name}' already has gateway '{other.name}': only one gateway "
                           "per virtual network is allowed. For an on-premises ExpressRoute connection use "
                           "another virtual network.", code="OnlyOneGatewayPerVirtualNetwork",
                           target="properties.ipConfigurations")
        created = gw is None
        now = utcnow()
        if created:
            gw = VirtualNetworkGateway(subscription_id=sub, rg_key=key(rg), name=name, name_key=key(name),
                                       location=_location(body, group.location), vnet_id=vnet.id,
                                       gateway_type=gtype, created_at=now,
                                       ready_at=now + timedelta(seconds=self.settings.gateway_provision_seconds))
            s.add(gw)
        elif gw.vnet_id != vnet.id:
            raise Conflict("A gateway cannot move to another virtual network; delete and recreate it.",
                           code="GatewayVirtualNetworkImmutable", target="properties.ipConfigurations")
        gw.gateway_type = gtype
        gw.sku = props.get("sku") or {"name": "Standard", "tier": "Standard"}
        gw.ip_configurations = [{"name": ipconfs[0].get("name") or "default", "subnet": ref_raw}]
        gw.tags = _tags(body)
        s.flush()
        return gw, created

    def delete_gateway(self, s: Session, sub: str, rg: str, name: str) -> bool:
        require_group(s, sub, rg)
        gw = self.find_gateway(s, sub, rg, name)
        if gw is None:
            return False
        s.delete(gw)
        return True

    @staticmethod
    def gateway_state(gw: VirtualNetworkGateway) -> str:
        return "Succeeded" if utcnow() >= gw.ready_at else "Updating"

    def gateway_for_vnet(self, s: Session, vnet_id: int) -> VirtualNetworkGateway | None:
        return s.scalar(select(VirtualNetworkGateway).where(VirtualNetworkGateway.vnet_id == vnet_id))

    # ---- resolving an HSM's subnet ---------------------------------------------------------
    def resolve_subnet(self, s: Session, ref: SubnetRef, *, target: str) -> tuple[VirtualNetwork, Subnet]:
        vnet = self.find_vnet(s, ref.subscription_id, ref.resource_group, ref.vnet)
        sn = self.find_subnet(s, vnet, ref.subnet) if vnet else None
        if sn is None:
            raise InvalidRequest(f"Subnet '{ref.subnet}' of virtual network '{ref.vnet}' in resource group "
                                 f"'{ref.resource_group}' does not exist. Create the virtual network and subnet "
                                 "first ('hsmcloud network create').", code="SubnetNotFound", target=target)
        return vnet, sn

    # ---- network interfaces ----------------------------------------------------------------
    def find_nic(self, s: Session, sub: str, rg: str, name: str) -> NetworkInterface | None:
        return s.scalar(select(NetworkInterface).where(
            NetworkInterface.subscription_id == sub, NetworkInterface.rg_key == key(rg),
            NetworkInterface.name_key == key(name)))

    def get_nic(self, s: Session, sub: str, rg: str, name: str) -> NetworkInterface:
        require_group(s, sub, rg)
        nic = self.find_nic(s, sub, rg, name)
        if nic is None:
            raise NotFound(f"Network interface '{name}' was not found in resource group '{rg}'.")
        return nic

    def list_nics(self, s: Session, sub: str, rg: str | None) -> list[NetworkInterface]:
        q = select(NetworkInterface).where(NetworkInterface.subscription_id == sub)
        if rg is not None:
            require_group(s, sub, rg)
            q = q.where(NetworkInterface.rg_key == key(rg))
        return list(s.scalars(q.order_by(NetworkInterface.id)))

    def delete_nic(self, s: Session, sub: str, rg: str, name: str) -> bool:
        require_group(s, sub, rg)
        nic = self.find_nic(s, sub, rg, name)
        if nic is None:
            return False
        if nic.hsm_id is not None:
            raise Conflict(f"Network interface '{name}' belongs to a dedicated HSM and follows it: delete the HSM "
                           "instead.", code="NicInUseByDedicatedHsm")
        s.delete(nic)
        return True

    def taken_ips(self, s: Session, sn: Subnet) -> set[str]:
        return self._ips_in_subnet(s, sn)

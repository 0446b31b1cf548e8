"""ARM JSON shapes of each resource, per api-version."""
from __future__ import annotations

from hsmcloud import resource_ids as ids
from hsmcloud.arm.api_versions import has_system_data, uses_resource_id
from hsmcloud.network.service import NetworkService
from hsmcloud.store.models import (DedicatedHsm, NetworkInterface, Operation, ResourceGroup, Subnet,
                                   VirtualNetwork, VirtualNetworkGateway)


def _ts(dt) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def _ref(api_version: str, value: str) -> dict:
    return {"resourceId": value} if uses_resource_id(api_version) else {"id": value}


def hsm(h: DedicatedHsm, *, nics: list[NetworkInterface], stamp: str | None, api_version: str) -> dict:
    def profile(prof: dict, kind: str) -> dict:
        mine = [n for n in nics if (n.name.endswith("_HSMMgmtNic") == (kind == "mgmt"))]
        if mine:
            interfaces = [dict(_ref(api_version, ids.network_id(h.subscription_id, n.rg_name, "networkInterfaces",
                                                                 n.name)), privateIpAddress=n.private_ip)
                          for n in mine]
        else:  # not connected yet: what was asked for, without ids (as the real service answers a PUT)
            interfaces = [{"privateIpAddress": ip} if ip else {} for ip in prof.get("ips", [])]
        return {"subnet": _ref(api_version, prof["subnet_ref"]), "networkInterfaces": interfaces}

    props = {"networkProfile": profile(h.network_profile, "host")}
    if h.management_network_profile and api_version != "2018-10-31-preview":
        props["managementNetworkProfile"] = profile(h.management_network_profile, "mgmt")
    if stamp:
        props["stampId"] = stamp
    props["statusMessage"] = h.status_message
    props["provisioningState"] = h.provisioning_state
    if h.provisioning_state == "Failed" and h.error:
        props["error"] = h.error  # hsmcloud extension: the failure's code and details (docs/differences.md)
    body = {
        "id": ids.hsm_id(h.subscription_id, h.rg_name, h.name),
        "name": h.name,
        "type": f"{ids.HSM_PROVIDER}/{ids.HSM_TYPE}",
        "location": h.location,
        "sku": {"name": h.sku},
        "tags": h.tags or {},
        "properties": props,
    }
    if h.zones:
        body["zones"] = h.zones
    if has_system_data(api_version):
        body["systemData"] = {"createdBy": h.created_by, "createdByType": "User", "createdAt": _ts(h.created_at),
                              "lastModifiedBy": h.modified_by, "lastModifiedByType": "User",
                              "lastModifiedAt": _ts(h.modified_at)}
    return body


def arm_error(error: dict) -> dict:
    """An error as ARM's ErrorDetail: code, message, target (when known) and details."""
    out = {"code": error.get("code"), "message": error.get("message")}
    if error.get("target"):
        out["target"] = error["target"]
    out["details"] = error.get("details") or []
    return out


def operation_status(op: Operation) -> dict:
    """The Azure-AsyncOperation status resource of an operation."""
    out = {"id": ids.operation_status_id(op.subscription_id, op.location, op.id), "name": op.id,
           "status": op.status, "startTime": op.created_at.isoformat()}
    if op.status != "InProgress":
        out["endTime"] = op.updated_at.isoformat()
    if op.error:
        out["error"] = arm_error(op.error)
    out["properties"] = {"kind": op.kind, "step": op.step}
    return out


def group(g: ResourceGroup) -> dict:
    return {"id": ids.group_id(g.subscription_id, g.name), "name": g.name, "type": "Microsoft.Resources/resourceGroups",
            "location": g.location, "tags": g.tags or {},
            "properties": {"provisioningState": "Deleting" if g.state == "Deleting" else "Succeeded"}}


def subnet(sub: str, rg: str, vnet: VirtualNetwork, sn: Subnet, nics: list[NetworkInterface]) -> dict:
    sid = ids.subnet_id(sub, rg, vnet.name, sn.name)
    return {
        "id": sid, "name": sn.name, "type": "Microsoft.Network/virtualNetworks/subnets",
        "properties": {
            "provisioningState": "Succeeded",
            "addressPrefix": sn.address_prefix,
            "delegations": [{"id": f"{sid}/delegations/{d['name']}", "name": d["name"],
                             "type": "Microsoft.Network/virtualNetworks/subnets/delegations",
                             "properties": {"serviceName": d["serviceName"], "provisioningState": "Succeeded",
                                            "actions": ["Microsoft.Network/networkinterfaces/*",
                                                        "Microsoft.Network/virtualNetworks/subnets/join/action"]}}
                            for d in sn.delegations],
            "ipConfigurations": [{"id": ids.network_id(sub, n.rg_name, "networkInterfaces", n.name)
                                  + "/ipConfigurations/ipconfig1"} for n in nics if n.subnet_id == sn.id],
        },
    }


def vnet(sub: str, rg: str, v: VirtualNetwork, subnets: list[Subnet], nics: list[NetworkInterface]) -> dict:
    return {
        "id": ids.network_id(sub, rg, "virtualNetworks", v.name), "name": v.name,
        "type": "Microsoft.Network/virtualNetworks", "location": v.location, "tags": v.tags or {},
        "properties": {"provisioningState": "Succeeded", "addressSpace": {"addressPrefixes": v.address_prefixes},
                       "subnets": [subnet(sub, rg, v, sn, nics) for sn in subnets]},
    }


def gateway(sub: str, rg: str, gw: VirtualNetworkGateway) -> dict:
    gid = ids.network_id(sub, rg, "virtualNetworkGateways", gw.name)
    state = NetworkService.gateway_state(gw)
    return {
        "id": gid, "name": gw.name, "type": "Microsoft.Network/virtualNetworkGateways", "location": gw.location,
        "tags": gw.tags or {},
        "properties": {
            "provisioningState": state, "gatewayType": gw.gateway_type, "sku": gw.sku,
            "ipConfigurations": [{"id": f"{gid}/ipConfigurations/{c['name']}", "name": c["name"],
                                  "properties": {"provisioningState": state, "privateIPAllocationMethod": "Dynamic",
                                                 "subnet": {"id": c["subnet"]}}} for c in gw.ip_configurations],
        },
    }


def nic(sub: str, n: NetworkInterface, subnet_ref: str, hsm_ref: str | None) -> dict:
    nid = ids.network_id(sub, n.rg_name, "networkInterfaces", n.name)
    body = {
        "id": nid, "name": n.name, "type": "Microsoft.Network/networkInterfaces", "location": n.location,
        "tags": {},
        "properties": {
            "provisioningState": "Succeeded",
            "ipConfigurations": [{"id": f"{nid}/ipConfigurations/ipconfig1", "name": "ipconfig1",
                                  "properties": {"provisioningState": "Succeeded", "privateIPAddress": n.private_ip,
                                                 "privateIPAllocationMethod": n.allocation_method,
                                                 "privateIPAddressVersion": "IPv4", "primary": True,
                                                 "subnet": {"id": subnet_ref}}}],
        },
    }
    if hsm_ref:
        body["properties"]["hostedWorkloads"] = [hsm_ref]
    return body

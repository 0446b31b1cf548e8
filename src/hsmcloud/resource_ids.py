"""Building and parsing ARM resource ids (case-insensitive, as ARM is)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from hsmcloud.errors import InvalidRequest

HSM_PROVIDER = "Microsoft.HardwareSecurityModules"
HSM_TYPE = "dedicatedHSMs"
NETWORK_PROVIDER = "Microsoft.Network"


def group_id(sub: str, rg: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}"


def hsm_id(sub: str, rg: str, name: str) -> str:
    return f"{group_id(sub, rg)}/providers/{HSM_PROVIDER}/{HSM_TYPE}/{name}"


def operation_status_id(sub: str, location: str, op_id: str) -> str:
    return f"/subscriptions/{sub}/providers/{HSM_PROVIDER}/locations/{location}/operationStatuses/{op_id}"


def network_id(sub: str, rg: str, rtype: str, name: str) -> str:
    return f"{group_id(sub, rg)}/providers/{NETWORK_PROVIDER}/{rtype}/{name}"


def subnet_id(sub: str, rg: str, vnet: str, subnet: str) -> str:
    return f"{network_id(sub, rg, 'virtualNetworks', vnet)}/subnets/{subnet}"


_SUBNET_RE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Network/"
    r"virtualNetworks/(?P<vnet>[^/]+)/subnets/(?P<subnet>[^/]+)/?$", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class SubnetRef:
    subscription_id: str
    resource_group: str
    vnet: str
    subnet: str


def parse_subnet_id(value: object, *, target: str) -> SubnetRef:
    if not isinstance(value, str) or not _SUBNET_RE.match(value):
        raise InvalidRequest(
            f"'{value}' is not a subnet resource id. Use /subscriptions/<sub>/resourceGroups/<rg>/"
            "providers/Microsoft.Network/virtualNetworks/<vnet>/subnets/<subnet>.",
            code="InvalidSubnetId", target=target)
    m = _SUBNET_RE.match(value)
    return SubnetRef(subscription_id=m["sub"].lower(), resource_group=m["rg"], vnet=m["vnet"], subnet=m["subnet"])

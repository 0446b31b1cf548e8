"""Helpers the tests share: the official SDK client, and network prerequisites over plain HTTP."""
from __future__ import annotations

import time

from azure.core.credentials import AccessToken

NET_API = "2023-09-01"
RG_API = "2022-09-01"
HSM_API = "2025-03-31"
LUNA = "SafeNet Luna Network HSM A790"


class StaticCredential:
    """A TokenCredential that hands out an hsmcloud token."""

    def __init__(self, token: str):
        self._token = token

    def get_token(self, *scopes, **kwargs) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + 3600)


def sdk_client(cloud, sub: str, **kwargs):
    from azure.mgmt.hardwaresecuritymodules import HardwareSecurityModulesMgmtClient

    return HardwareSecurityModulesMgmtClient(StaticCredential(cloud.token(sub)), sub, base_url=cloud.url,
                                             connection_verify=cloud.ca, polling_interval=0, retry_total=0, **kwargs)


def make_network(c, sub: str, rg: str = "hsm-rg", *, location: str = "eastus", vnet: str = "hsm-vnet",
                 delegate: bool = True, gateway: bool = True, prefix: str = "10.2") -> str:
    """Resource group, virtual network with a delegated HSM subnet and GatewaySubnet, and a gateway.

    Returns the HSM subnet's resource id."""
    r = c.put(f"/subscriptions/{sub}/resourcegroups/{rg}", params={"api-version": RG_API},
              json={"location": location})
    assert r.status_code in (200, 201), r.text
    delegations = [{"name": "hsm", "properties": {"serviceName": "Microsoft.HardwareSecurityModules/dedicatedHSMs"}}]
    body = {"location": location, "properties": {
        "addressSpace": {"addressPrefixes": [f"{prefix}.0.0/16"]},
        "subnets": [
            {"name": "hsmsubnet", "properties": {"addressPrefix": f"{prefix}.1.0/24",
                                                 "delegations": delegations if delegate else []}},
            {"name": "GatewaySubnet", "properties": {"addressPrefix": f"{prefix}.255.0/26"}},
        ]}}
    base = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network"
    r = c.put(f"{base}/virtualNetworks/{vnet}", params={"api-version": NET_API}, json=body)
    assert r.status_code in (200, 201), r.text
    if gateway:
        r = c.put(f"{base}/virtualNetworkGateways/{vnet}-gw", params={"api-version": NET_API}, json={
            "location": location, "properties": {"gatewayType": "ExpressRoute", "sku": {"name": "Standard"},
                                                 "ipConfigurations": [{"name": "default", "properties": {"subnet": {
                                                     "id": f"{base}/virtualNetworks/{vnet}/subnets/GatewaySubnet"}}}]}})
        assert r.status_code in (200, 201), r.text
    return f"{base}/virtualNetworks/{vnet}/subnets/hsmsubnet"


def hsm_body(subnet_id: str, *, location: str = "eastus", sku: str = LUNA, ip: str | None = None,
             stamp: str | None = None, tags: dict | None = None) -> dict:
    nic = {"privateIpAddress": ip} if ip else {}
    props = {"networkProfile": {"subnet": {"resourceId": subnet_id}, "networkInterfaces": [nic] if ip else []}}
    if stamp:
        props["stampId"] = stamp
    return {"location": location, "sku": {"name": sku}, "tags": tags or {}, "properties": props}


def wait_operation(c, location: str, *, polls: int = 1200, pause: float = 0.05):
    """Poll an operation's URL until it stops answering 202; its final answer.

    Fails the test when the operation is still running after `polls` polls, or when a poll
    answers anything but 202 on the way (an error while it runs is an error)."""
    for _ in range(polls):
        r = c.get(location)
        if r.status_code != 202:
            return r
        time.sleep(pause)
    raise AssertionError(f"the operation at {location} was still running after {polls} polls")

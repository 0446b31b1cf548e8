"""`hsmcloud network ...`: the resource group, virtual network, delegated subnet and gateway an HSM needs."""
from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.text import Text
from rich.tree import Tree

from hsmcloud.cli.client import GROUPS_API, HSM_API, HSM_DELEGATION, NETWORK_API, CliError, Poll, poll_interval
from hsmcloud.cli.common import Ctx, confirm, service_command
from hsmcloud.cli.output import styled_state

app = typer.Typer(help="Networks for dedicated HSMs: resource group, VNet, delegated subnet, ExpressRoute gateway.",
                  no_args_is_help=True)

Group = Annotated[str, typer.Option("--resource-group", "-g", help="Resource group.", show_default=False)]


def _state(body: dict) -> str | None:
    return (body.get("properties") or {}).get("provisioningState")


def vnet_body(location: str, address_prefix: str, subnet_name: str, subnet_prefix: str, gateway_prefix: str,
              delegate: bool) -> dict:
    delegations = [{"name": "hsm", "properties": {"serviceName": HSM_DELEGATION}}] if delegate else []
    return {"location": location, "properties": {
        "addressSpace": {"addressPrefixes": [address_prefix]},
        "subnets": [
            {"name": subnet_name, "properties": {"addressPrefix": subnet_prefix, "delegations": delegations}},
            {"name": "GatewaySubnet", "properties": {"addressPrefix": gateway_prefix}},
        ]}}


def gateway_body(location: str, gateway_subnet_id: str) -> dict:
    return {"location": location, "properties": {
        "gatewayType": "ExpressRoute", "sku": {"name": "Standard"},
        "ipConfigurations": [{"name": "default", "properties": {"subnet": {"id": gateway_subnet_id}}}]}}


@service_command(app, "create")
def create(cx: Ctx, resource_group: Group,
           location: Annotated[str, typer.Option("--location", "-l", help="Region.")] = "eastus",
           vnet_name: Annotated[str, typer.Option("--vnet-name", help="Virtual network name.")] = "hsm-vnet",
           address_prefix: Annotated[str, typer.Option("--address-prefix", help="VNet address space.")]
           = "10.2.0.0/16",
           subnet_name: Annotated[str, typer.Option("--subnet-name", help="HSM subnet name.")] = "hsmsubnet",
           subnet_prefix: Annotated[str, typer.Option("--subnet-prefix", help="HSM subnet prefix.")] = "10.2.1.0/24",
           gateway_subnet_prefix: Annotated[str, typer.Option("--gateway-subnet-prefix",
                                                              help="GatewaySubnet prefix.")] = "10.2.255.0/26",
           gateway_name: Annotated[Optional[str], typer.Option("--gateway-name", show_default=False,
                                                               help="Gateway name (default: <vnet>-gw).")] = None,
           no_delegation: Annotated[bool, typer.Option(
               "--no-delegation", help="Do NOT delegate the HSM subnet (reproduces the #1 deployment failure).")]
           = False,
           no_wait: Annotated[bool, typer.Option("--no-wait", help="Do not wait for the gateway.")] = False,
           interval: Annotated[Optional[float], typer.Option("--interval", show_default=False,
                                                             help="Seconds between polls.")] = None,
           timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the gateway.")] = 1800.0):
    """Create resource group, VNet, delegated HSM subnet, GatewaySubnet and ExpressRoute gateway; wait for it."""
    client = cx.client
    gateway_name = gateway_name or f"{vnet_name}-gw"
    out = cx.out
    quiet = cx.json

    def step(text: str) -> None:
        if not quiet:
            out.note(text)

    group = client.put(client.group_path(resource_group), {"location": location}, params={"api-version": GROUPS_API})
    step(f"resource group   {resource_group} ({group.get('location', location)})")
    vnet = client.put(client.network_path(resource_group, "virtualNetworks", vnet_name),
                      vnet_body(location, address_prefix, subnet_name, subnet_prefix, gateway_subnet_prefix,
                                delegate=not no_delegation), params={"api-version": NETWORK_API})
    subnets = {s.get("name"): s for s in (vnet.get("properties") or {}).get("subnets") or []}
    vnet_id = vnet.get("id") or client.network_path(resource_group, "virtualNetworks", vnet_name)
    subnet_id = (subnets.get(subnet_name) or {}).get("id") or f"{vnet_id}/subnets/{subnet_name}"
    gateway_subnet_id = (subnets.get("GatewaySubnet") or {}).get("id") or f"{vnet_id}/subnets/GatewaySubnet"
    step(f"virtual network  {vnet_name} {address_prefix}")
    step(f"subnet           {subnet_name} {subnet_prefix} "
         + ("(NOT delegated: 'hsm create' will fail with SubnetNotDelegated)" if no_delegation
            else f"delegated to {HSM_DELEGATION}"))
    step(f"subnet           GatewaySubnet {gateway_subnet_prefix}")
    gw_path = client.network_path(resource_group, "virtualNetworkGateways", gateway_name)
    gateway = client.put(gw_path, gateway_body(location, gateway_subnet_id), params={"api-version": NETWORK_API})
    step(f"gateway          {gateway_name} (ExpressRoute, Standard)")
    if not no_wait and _state(gateway) != "Succeeded":
        with out.progress(f"gateway {gateway_name}") as progress:
            poll = Poll(fetch=lambda: client.get(gw_path, params={"api-version": NETWORK_API}), state_of=_state,
                        done=lambda s: s in ("Succeeded", "Failed", "Canceled"), interval=poll_interval(interval),
                        timeout=timeout)
            gateway = poll.run(lambda s, _b: progress.update(s))
        if _state(gateway) != "Succeeded":
            raise CliError("GatewayFailed", f"Gateway '{gateway_name}' ended {_state(gateway)}.")
    result = {"resourceGroup": resource_group, "location": location, "subnetId": subnet_id,
              "virtualNetwork": vnet, "gateway": gateway}

    def human(_r: dict) -> None:
        state = _state(gateway)
        out.note(f"gateway state    {state}" + ("" if state == "Succeeded" else
                                                "  (an HSM created before it is Succeeded fails: wait for it)"))
        out.print(subnet_id)
        out.note(f"Next: hsmcloud hsm create -n <name> -g {resource_group} --subnet {subnet_id}", style="dim")
    out.result(result, human)


@service_command(app, "show")
def show(cx: Ctx, resource_group: Group):
    """Show the virtual networks (subnets and delegations) and gateways of a resource group."""
    client = cx.client
    group = client.get(client.group_path(resource_group), params={"api-version": GROUPS_API})
    vnets = client.get(client.network_path(resource_group, "virtualNetworks"),
                       params={"api-version": NETWORK_API}).get("value") or []
    gateways = client.get(client.network_path(resource_group, "virtualNetworkGateways"),
                          params={"api-version": NETWORK_API}).get("value") or []
    result = {"resourceGroup": group, "virtualNetworks": vnets, "gateways": gateways}

    def human(_r: dict) -> None:
        root = Tree(Text.assemble(("resource group ", "bold"), resource_group, f" ({group.get('location')})"))
        gw_by_subnet = {}
        for gw in gateways:
            for cfg in (gw.get("properties") or {}).get("ipConfigurations") or []:
                sid = (((cfg.get("properties") or {}).get("subnet") or {}).get("id") or "").lower()
                gw_by_subnet[sid] = gw
        for v in vnets:
            props = v.get("properties") or {}
            node = root.add(Text.assemble(("vnet ", "bold"), v.get("name", ""), "  ",
                                          ", ".join((props.get("addressSpace") or {}).get("addressPrefixes") or [])))
            for sn in props.get("subnets") or []:
                sp = sn.get("properties") or {}
                services = [(d.get("properties") or {}).get("serviceName") for d in sp.get("delegations") or []]
                line = Text.assemble(("subnet ", "bold"), sn.get("name", ""), "  ", sp.get("addressPrefix") or "")
                if services:
                    line.append("  delegated to " + ", ".join(s or "?" for s in services), style="green")
                elif sn.get("name") != "GatewaySubnet":
                    line.append("  not delegated (HSMs cannot use it)", style="yellow")
                used = len(sp.get("ipConfigurations") or [])
                if used:
                    line.append(f"  {used} NIC(s)")
                gw = gw_by_subnet.get((sn.get("id") or "").lower())
                if gw is not None:
                    line.append("  gateway ")
                    line.append(gw.get("name", ""))
                    line.append(" ")
                    line.append_text(styled_state(_state(gw)))
                sub_node = node.add(line)
                if services or sn.get("name") != "GatewaySubnet":
                    sub_node.add(Text(sn.get("id") or "", style="dim"))
        attached = {id(g) for g in gw_by_subnet.values()}
        for gw in gateways:
            if id(gw) not in attached:
                root.add(Text.assemble(("gateway ", "bold"), gw.get("name", ""), " ", styled_state(_state(gw))))
        if not vnets and not gateways:
            root.add(Text("(no virtual networks: hsmcloud network create -g " + resource_group + ")", style="dim"))
        cx.out.print(root)
    cx.out.result(result, human)


@service_command(app, "delete-group")
def delete_group(cx: Ctx, resource_group: Group,
                 yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
                 no_wait: Annotated[bool, typer.Option("--no-wait", help="Return at once.")] = False,
                 interval: Annotated[Optional[float], typer.Option("--interval", show_default=False,
                                                                  help="Seconds between polls.")] = None,
                 timeout: Annotated[float, typer.Option("--timeout", help="Seconds.")] = 600.0):
    """Delete a resource group and its network. Dedicated HSMs in it are NOT deleted: they become orphaned."""
    client = cx.client
    client.get(client.group_path(resource_group), params={"api-version": GROUPS_API})  # it must exist
    hsms = client.pages(client.hsm_path(resource_group), params={"api-version": HSM_API})
    names = [h.get("name") for h in hsms]
    if names:
        cx.out.note(f"WARNING: resource group '{resource_group}' holds dedicated HSM(s) {', '.join(names)}. Deleting "
                    "the group does NOT delete them: they become ORPHANED (out of your reach) and STAY BILLED until "
                    "the provider force-deletes them. Zeroize and delete them first ('hsmcloud hsm delete').",
                    style="bold red")
    if not yes:
        confirm(f"Delete resource group '{resource_group}' with its virtual networks and gateways?")
    resp = client.send("DELETE", client.group_path(resource_group), params={"api-version": GROUPS_API})
    location = resp.headers.get("Location")
    if resp.status_code == 202 and location and not no_wait:
        with cx.out.progress(f"deleting {resource_group}") as progress:
            progress.update("Deleting")
            client.wait_operation(location, interval=poll_interval(interval), timeout=timeout,
                                  on_tick=lambda _t: progress.tick())
        status = "Deleted"
    else:
        status = "Accepted" if resp.status_code == 202 else "Deleted"
    result = {"resourceGroup": resource_group, "status": status, "orphanedHsms": names}

    def human(_r: dict) -> None:
        cx.out.print(f"Resource group '{resource_group}' {status.lower()}.")
        if names:
            cx.out.warn(f"orphaned and still billed: {', '.join(names)} (operators: 'hsmcloud operator orphans').")
    cx.out.result(result, human)

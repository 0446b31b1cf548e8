"""What a tenant sees: network create, hsm create/list/show/update/endpoints/wait/delete, quota."""
from __future__ import annotations

import ipaddress

import pytest

from tests import appliance_ssh

RG = "cli-rg"


@pytest.fixture(scope="module")
def deployed(cli, cli_cloud):
    """One allowlisted subscription with a network and a Succeeded HSM, created through the CLI."""
    sub = cli_cloud.new_subscription()
    net = cli.json("network", "create", "-g", RG, sub=sub)
    assert net["gateway"]["properties"]["provisioningState"] == "Succeeded"
    subnet = net["subnetId"]
    assert subnet.endswith("/virtualNetworks/hsm-vnet/subnets/hsmsubnet")
    # Human output: a live record of the states on stderr, the resource on stdout.
    result = cli.ok("hsm", "create", "-n", "hsm1", "-g", RG, "--subnet", f"id={subnet}",
                    "-i", "private-ip-address=10.2.1.5", "--tags", "Dept=hsm", "--tags", "Env=dev Team=x", sub=sub)
    assert "CheckingQuota" in result.stderr
    assert "Succeeded" in result.stderr
    assert "Succeeded" in result.stdout and "10.2.1.5" in result.stdout
    return {"sub": sub, "subnet": subnet}


def test_network_create_prints_subnet_id(cli, deployed):
    result = cli.ok("network", "create", "-g", RG, sub=deployed["sub"])  # idempotent re-run
    assert result.stdout.strip() == deployed["subnet"]  # SUBNET=$(hsmcloud network create ...) works
    assert "Succeeded" in result.stderr


def test_hsm_create_reaches_succeeded_and_is_listed(cli, deployed):
    sub = deployed["sub"]
    items = cli.json("hsm", "list", sub=sub)
    mine = [h for h in items if h["name"] == "hsm1"]
    assert len(mine) == 1
    hsm = mine[0]
    assert hsm["properties"]["provisioningState"] == "Succeeded"
    assert hsm["properties"]["networkProfile"]["networkInterfaces"][0]["privateIpAddress"] == "10.2.1.5"
    assert hsm["tags"] == {"Dept": "hsm", "Env": "dev", "Team": "x"}
    assert [h["name"] for h in cli.json("hsm", "list", "-g", RG, sub=sub)] == ["hsm1"]
    table = cli.ok("hsm", "list", sub=sub).stdout
    assert "hsm1" in table and "Succeeded" in table and "10.2.1.5" in table
    shown = cli.json("hsm", "show", "-n", "hsm1", "-g", RG, sub=sub)
    assert shown["id"] == hsm["id"]
    cli.ok("hsm", "wait", "-n", "hsm1", "-g", RG, "--created", sub=sub)


def test_hsm_endpoints_give_loopback_address_and_ssh_port(cli, deployed):
    sub = deployed["sub"]
    ep = cli.json("hsm", "endpoints", "-n", "hsm1", "-g", RG, sub=sub)
    address = ipaddress.ip_address(ep["address"])
    assert address in ipaddress.ip_network("127.0.0.0/8")
    port = ep["ports"]["ssh"]
    assert isinstance(port, int) and port > 0
    assert ep["privateIpAddresses"] == ["10.2.1.5"]
    human = cli.ok("hsm", "endpoints", "-n", "hsm1", "-g", RG, sub=sub).stdout
    assert f"ssh -p {port} admin@{ep['address']}" in human
    # With the per-HSM password the first login takes (not the factory PASSWORD).
    assert ep["initialAdminPassword"] != "PASSWORD"
    assert f"initial admin password: {ep['initialAdminPassword']}" in human and "must change it" in human
    [(code, text)] = appliance_ssh.run(ep["address"], port, ep["initialAdminPassword"], "hsm show")
    assert code != 0 and "my password set" in text


def test_hsm_update_tags(cli, deployed):
    sub = deployed["sub"]
    hsm = cli.json("hsm", "update", "-n", "hsm1", "-g", RG, "--tags", "Dept=crypto", sub=sub)
    assert hsm["tags"] == {"Dept": "crypto"}


def test_network_show(cli, deployed):
    sub = deployed["sub"]
    data = cli.json("network", "show", "-g", RG, sub=sub)
    (vnet,) = data["virtualNetworks"]
    subnets = {s["name"]: s for s in vnet["properties"]["subnets"]}
    assert subnets["hsmsubnet"]["properties"]["delegations"][0]["properties"]["serviceName"] == \
        "Microsoft.HardwareSecurityModules/dedicatedHSMs"
    assert data["gateways"][0]["properties"]["provisioningState"] == "Succeeded"
    human = cli.ok("network", "show", "-g", RG, sub=sub).stdout
    assert "delegated to Microsoft.HardwareSecurityModules/dedicatedHSMs" in human
    assert "hsm-vnet-gw" in human


def test_quota_show_counts_the_hsm(cli, deployed):
    q = cli.json("quota", "show", "-l", "eastus", sub=deployed["sub"])
    assert q["used"] == 1 and q["allowlisted"] is True
    assert q["perRegion"] == 4 and q["perStamp"] == 2


def test_subnet_not_delegated_is_one_clear_line(cli, cli_cloud):
    sub = cli_cloud.new_subscription()
    net = cli.json("network", "create", "-g", "nodeleg", "--no-delegation", sub=sub)
    line = cli.fails("hsm", "create", "-n", "hsm1", "-g", "nodeleg", "--subnet", net["subnetId"], sub=sub,
                     code="SubnetNotDelegated")
    assert "--delegations Microsoft.HardwareSecurityModules/dedicatedHSMs" in line
    assert cli.json("hsm", "list", sub=sub) == []


def test_gateway_subnet_points_at_the_hsm_subnet(cli, cli_cloud):
    sub = cli_cloud.new_subscription()
    net = cli.json("network", "create", "-g", "gwsub", sub=sub)
    gateway_subnet = net["subnetId"].rsplit("/", 1)[0] + "/GatewaySubnet"
    line = cli.fails("hsm", "create", "-n", "hsm1", "-g", "gwsub", "--subnet", gateway_subnet, sub=sub)
    assert line == ("error: GatewaySubnetNotAllowed: Subnet 'GatewaySubnet' of virtual network 'hsm-vnet' is "
                    "reserved for the virtual network gateway and cannot hold dedicated HSMs. Use the HSM subnet "
                    f"instead: {net['subnetId']}.")
    assert "delegations" not in line  # never advises delegating the gateway's subnet
    assert cli.json("hsm", "list", sub=sub) == []


def test_not_allowlisted_then_operator_allowlists(cli, cli_cloud):
    sub = cli_cloud.new_subscription(allowlist=False)
    net = cli.json("network", "create", "-g", "rg", sub=sub)
    line = cli.fails("hsm", "create", "-n", "hsm1", "-g", "rg", "--subnet", net["subnetId"], sub=sub,
                     code="SubscriptionNotAllowlisted")
    assert f"hsmcloud operator allowlist {sub}" in line
    assert cli.json("quota", "show", "-l", "eastus", sub=sub)["allowlisted"] is False
    assert cli.json("operator", "allowlist", sub) == {"subscriptionId": sub, "allowlisted": True}
    assert cli.json("quota", "show", "-l", "eastus", sub=sub)["allowlisted"] is True
    assert cli.json("operator", "allowlist", sub, "--remove")["allowlisted"] is False


def test_failed_deployment_prints_status_message(cli, cli_cloud):
    sub = cli_cloud.new_subscription()
    cli.ok("operator", "quota", sub, "--region", "eastus", "--per-region", "0", "--per-stamp", "0")
    net = cli.json("network", "create", "-g", "rg", sub=sub)
    line = cli.fails("hsm", "create", "-n", "hsm1", "-g", "rg", "--subnet", net["subnetId"], sub=sub,
                     code="QuotaExceeded")
    assert "Quota exceeded" in line
    shown = cli.json("hsm", "show", "-n", "hsm1", "-g", "rg", sub=sub)
    assert shown["properties"]["provisioningState"] == "Failed"
    cli.fails("hsm", "wait", "-n", "hsm1", "-g", "rg", "--created", sub=sub)


def test_create_no_wait_then_wait_and_delete(cli, cli_cloud):
    sub = cli_cloud.new_subscription()
    net = cli.json("network", "create", "-g", "rg", "--address-prefix", "10.9.0.0/16", "--subnet-prefix",
                   "10.9.1.0/24", "--gateway-subnet-prefix", "10.9.255.0/26", sub=sub)
    first = cli.json("hsm", "create", "-n", "hsm-nw", "-g", "rg", "--subnet", net["subnetId"], "--no-wait",
                     "--stamp-id", "stamp2", sub=sub)
    assert first["properties"]["provisioningState"] not in ("Failed",)
    done = cli.json("hsm", "wait", "-n", "hsm-nw", "-g", "rg", "--created", "--interval", "0.05", sub=sub)
    assert done["properties"]["provisioningState"] == "Succeeded"
    assert done["properties"]["stampId"] == "stamp2"
    # Without --yes and without an answer nothing is deleted.
    cli.fails("hsm", "delete", "-n", "hsm-nw", "-g", "rg", sub=sub, input="", code="Cancelled")
    # A brand-new device counts as zeroized, so a plain delete goes through.
    gone = cli.json("hsm", "delete", "-n", "hsm-nw", "-g", "rg", "--yes", sub=sub)
    assert gone["status"] == "Deleted"
    cli.fails("hsm", "show", "-n", "hsm-nw", "-g", "rg", sub=sub, code="ResourceNotFound")
    cli.ok("hsm", "wait", "-n", "hsm-nw", "-g", "rg", "--deleted", sub=sub)
    again = cli.json("hsm", "delete", "-n", "hsm-nw", "-g", "rg", "--yes", sub=sub)
    assert again["status"] == "NotFound"


def test_quota_request_granted_by_operator(cli, cli_cloud):
    sub = cli_cloud.new_subscription()
    req = cli.json("quota", "request", "-l", "westus", "--per-region", "6", "--per-stamp", "3", "--reason",
                   "HA pair in two stamps", sub=sub)
    assert req["status"] == "Pending"
    human = cli.ok("quota", "list", "-l", "westus", sub=sub).stdout
    assert req["id"] in human and "Pending" in human
    pending = cli.json("operator", "quota-requests", "--status", "Pending")
    assert req["id"] in [r["id"] for r in pending]
    granted = cli.json("operator", "quota-grant", req["id"])
    assert granted["status"] == "Granted"
    q = cli.json("quota", "show", "--region", "westus", sub=sub)
    assert (q["perRegion"], q["perStamp"]) == (6, 3)
    cli.fails("operator", "quota-grant", req["id"], code="QuotaRequestDecided")
    req2 = cli.json("quota", "request", "-l", "westus", "--per-region", "8", sub=sub)
    assert cli.json("operator", "quota-reject", req2["id"])["status"] == "Rejected"
    assert cli.json("operator", "quota", sub, "--region", "westus")["perRegion"] == 6

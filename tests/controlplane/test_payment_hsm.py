"""Payment HSM resources: a payShield appliance per device, release before delete, reclaim on force delete."""
from __future__ import annotations

import socket
import struct
import time

import httpx

from tests.controlplane.test_rules import PAY, hsm_url, put_hsm, wait_terminal
from tests.helpers import HSM_API, hsm_body, make_network, wait_operation


def host_command(address: str, port: int, command: bytes, header: bytes = b"HEAD") -> bytes:
    with socket.create_connection((address, port), timeout=30) as s:
        msg = header + command
        s.sendall(struct.pack(">H", len(msg)) + msg)
        (length,) = struct.unpack(">H", s.recv(2))
        data = b""
        while len(data) < length:
            data += s.recv(length - len(data))
        return data


def endpoints(c, sub, name) -> dict:
    r = c.get(hsm_url(sub, "hsm-rg", name) + "/endpoints", params={"api-version": HSM_API})
    assert r.status_code == 200, r.text
    return r.json()


def claim(c, sub, name, body: dict | None = None) -> httpx.Response:
    return c.post(hsm_url(sub, "hsm-rg", name) + "/managementCredential", params={"api-version": HSM_API},
                  json=body)


def tenant_management(c, sub, name) -> httpx.Client:
    """The tenant's client of its payment HSM's management port, with a freshly claimed credential."""
    ep = endpoints(c, sub, name)
    r = claim(c, sub, name)
    assert r.status_code == 200, r.text
    return httpx.Client(base_url=f"http://{ep['address']}:{ep['ports']['management']}",
                        headers={"Authorization": f"Bearer {r.json()['managementToken']}"}, timeout=30)


def test_payment_hsm_has_host_ports_and_needs_release_before_delete(cloud):
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
        put_hsm(c, sub, "hsm-rg", "pay1", hsm_body(subnet, sku=PAY))
        hsm = wait_terminal(c, sub, "hsm-rg", "pay1")
        assert hsm["properties"]["provisioningState"] == "Succeeded"
        nics = [n["resourceId"].rsplit("/", 1)[1] for n in
                hsm["properties"]["networkProfile"]["networkInterfaces"]
                + hsm["properties"]["managementNetworkProfile"]["networkInterfaces"]]
        assert nics == ["pay1_HSMHost1Nic", "pay1_HSMMgmtNic"]
        ep = endpoints(c, sub, "pay1")
        assert ep["kind"] == "payshield" and ep["address"].startswith("127.")
        for port in (ep["ports"]["host1"], ep["ports"]["host2"]):
            reply = host_command(ep["address"], port, b"NO00")
            assert reply[:8] == b"HEADNP00"
        # The tenant puts customer content on the device through its management interface...
        mgmt = tenant_management(c, sub, "pay1")
        r = mgmt.put("/settings", json={"header_length": 2})
        assert r.status_code == 200, r.text
        # ...so a normal delete is refused until the device is released.
        r = c.delete(hsm_url(sub, "hsm-rg", "pay1"), params={"api-version": HSM_API})
        assert r.status_code == 400 and r.json()["error"]["code"] == "PaymentHsmNotReleased"
        assert mgmt.post("/release").status_code == 200
        r = c.delete(hsm_url(sub, "hsm-rg", "pay1"), params={"api-version": HSM_API})
        assert r.status_code == 202
        done = wait_operation(c, r.headers["location"])
        assert done.status_code == 200, done.text
        assert c.get(hsm_url(sub, "hsm-rg", "pay1"), params={"api-version": HSM_API}).status_code == 404
    with cloud.http(operator=True) as op:
        device = next(d for d in op.get("/operator/devices").json()["value"] if d["serial"] == ep["serial"])
        assert device["state"] == "free" and device["lastCheckedPristineAt"]


def test_force_delete_releases_a_payment_device_out_of_band(cloud):
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
        put_hsm(c, sub, "hsm-rg", "pay2", hsm_body(subnet, sku="payShield10K_LMK2_CPS2500"))
        wait_terminal(c, sub, "hsm-rg", "pay2")
        ep = endpoints(c, sub, "pay2")
        mgmt = tenant_management(c, sub, "pay2")
        assert mgmt.put("/settings", json={"header_length": 6}).status_code == 200
    with cloud.http(operator=True) as op:
        # Provider settings on a held device: lifting the licence limit for a benchmark. The request
        # is an operation a worker carries out; the operator follows it.
        r = op.put(f"/operator/devices/{ep['serial']}/licence", json={"cpsLimitLifted": True})
        assert r.status_code == 202, r.text
        done = follow(op, r)
        assert done.status_code == 200, done.text
        assert done.json()["kind"] == "device.licence" and done.json()["status"] == "Succeeded"
        assert done.json()["result"]["licence"]["cps_limit_lifted"] is True
        assert mgmt.get("/health").json()["licence"]["cps_limit_lifted"] is True
        # The provider patches only unallocated devices: refused when asked, no operation started.
        r = op.post(f"/operator/devices/{ep['serial']}/firmware", json={"version": "1.4a 1.8.3"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "DeviceAllocated"
        r = op.post(f"/operator/subscriptions/{sub}/resourceGroups/hsm-rg/dedicatedHSMs/pay2/forceDelete")
        assert r.status_code == 202
        assert follow(op, r, r.json()["location"]).status_code == 200
        device = next(d for d in op.get("/operator/devices").json()["value"] if d["serial"] == ep["serial"])
        assert device["state"] == "free"
        # A version below the supported base: the device refuses, the operation fails with its
        # reason, and the device is back in the pool.
        r = op.post(f"/operator/devices/{ep['serial']}/firmware", json={"version": "1.4a 1.8.2"})
        assert r.status_code == 202, r.text
        refused = follow(op, r)
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "FirmwareRefused", refused.text
        device = next(d for d in op.get("/operator/devices").json()["value"] if d["serial"] == ep["serial"])
        assert device["state"] == "free"
        r = op.post(f"/operator/devices/{ep['serial']}/firmware", json={"version": "1.4a 1.8.3"})
        assert r.status_code == 202, r.text
        done = follow(op, r)
        assert done.status_code == 200 and done.json()["result"]["firmware"] == "1.4a 1.8.3", done.text
        ops = op.get("/operator/operations", params={"target": ep["serial"]}).json()["value"]
        assert [(o["kind"], o["status"]) for o in ops] == [
            ("device.firmware", "Succeeded"), ("device.firmware", "Failed"), ("device.licence", "Succeeded")]


def follow(op, accepted, location=None):
    """Poll an operator operation until it ends; fails the test if it never does."""
    location = location or accepted.headers["location"]
    for _ in range(600):
        r = op.get(location)
        if r.status_code != 202:
            return r
        assert r.json()["status"] == "InProgress", r.text
        time.sleep(0.05)
    raise AssertionError(f"operation {location} still in progress")


def test_sdk_creates_a_payment_hsm_with_two_host_nics_and_a_management_profile(cloud):
    """The shape of the service's own example: host and management network profiles, explicit IPs."""
    from azure.mgmt.hardwaresecuritymodules import models as m

    from tests.helpers import sdk_client

    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
        base = subnet.rsplit("/", 1)[0]
        r = c.put(f"{base}/mgmtsubnet", params={"api-version": "2023-09-01"}, json={"properties": {
            "addressPrefix": "10.2.2.0/24", "delegations": [
                {"name": "d", "properties": {"serviceName": "Microsoft.HardwareSecurityModules/dedicatedHSMs"}}]}})
        assert r.status_code == 201, r.text
    client = sdk_client(cloud, sub)
    body = m.DedicatedHsm(
        location="eastus", sku=m.Sku(name="payShield10K_LMK1_CPS250"), zones=["1"],
        properties=m.DedicatedHsmProperties(
            network_profile=m.NetworkProfile(
                subnet=m.ApiEntityReference(resource_id=subnet),
                network_interfaces=[m.NetworkInterface(private_ip_address="10.2.1.50"),
                                    m.NetworkInterface(private_ip_address="10.2.1.51")]),
            management_network_profile=m.NetworkProfile(
                subnet=m.ApiEntityReference(resource_id=f"{base}/mgmtsubnet"),
                network_interfaces=[m.NetworkInterface(private_ip_address="10.2.2.60")])))
    hsm = client.dedicated_hsm.begin_create_or_update("hsm-rg", "pay3", body).result()
    host = [(n.resource_id.rsplit("/", 1)[1], n.private_ip_address)
            for n in hsm.properties.network_profile.network_interfaces]
    mgmt = [(n.resource_id.rsplit("/", 1)[1], n.private_ip_address)
            for n in hsm.properties.management_network_profile.network_interfaces]
    assert host == [("pay3_HSMHost1Nic", "10.2.1.50"), ("pay3_HSMHost2Nic", "10.2.1.51")]
    assert mgmt == [("pay3_HSMMgmtNic", "10.2.2.60")]
    assert hsm.zones == ["1"]
    with cloud.http(sub) as c:
        ep = endpoints(c, sub, "pay3")
        assert ep["privateIpAddresses"] == ["10.2.1.50", "10.2.1.51", "10.2.2.60"]
        mgmt_api = tenant_management(c, sub, "pay3")
        health = mgmt_api.get("/health").json()
        assert (health["licence"]["lmk_slots"], health["licence"]["cps"]) == (1, 250)  # the SKU's licence
        assert mgmt_api.post("/release").status_code == 200
    client.dedicated_hsm.begin_delete("hsm-rg", "pay3").result()

"""Payment HSM resources: a payShield appliance per device, release before delete, reclaim on force delete."""
from __future__ import annotations

import socket
import struct

import httpx

from tests.controlplane.test_rules import PAY, hsm_url, put_hsm, wait_terminal
from tests.helpers import HSM_API, hsm_body, make_network


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
        mgmt = httpx.Client(base_url=f"http://{ep['address']}:{ep['ports']['management']}",
                            headers={"Authorization": f"Bearer {ep['managementToken']}"}, timeout=30)
        r = mgmt.put("/settings", json={"header_length": 2})
        assert r.status_code == 200, r.text
        # ...so a normal delete is refused until the device is released.
        r = c.delete(hsm_url(sub, "hsm-rg", "pay1"), params={"api-version": HSM_API})
        assert r.status_code == 400 and r.json()["error"]["code"] == "PaymentHsmNotReleased"
        assert mgmt.post("/release").status_code == 200
        r = c.delete(hsm_url(sub, "hsm-rg", "pay1"), params={"api-version": HSM_API})
        assert r.status_code == 202
        for _ in range(600):
            if c.get(r.headers["location"]).status_code != 202:
                break
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
        mgmt = httpx.Client(base_url=f"http://{ep['address']}:{ep['ports']['management']}",
                            headers={"Authorization": f"Bearer {ep['managementToken']}"}, timeout=30)
        assert mgmt.put("/settings", json={"header_length": 6}).status_code == 200
    with cloud.http(operator=True) as op:
        # Provider settings on a held device: lifting the licence limit for a benchmark.
        r = op.put(f"/operator/devices/{ep['serial']}/licence", json={"cpsLimitLifted": True})
        assert r.status_code == 200, r.text
        # The provider patches only unallocated devices.
        r = op.post(f"/operator/devices/{ep['serial']}/firmware", json={"version": "1.4a 1.8.3"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "DeviceAllocated"
        r = op.post(f"/operator/subscriptions/{sub}/resourceGroups/hsm-rg/dedicatedHSMs/pay2/forceDelete")
        assert r.status_code == 202
        loc = r.json()["location"]
    with cloud.http(sub) as c:
        for _ in range(600):
            if c.get(loc).status_code != 202:
                break
        assert c.get(loc).status_code == 200
    with cloud.http(operator=True) as op:
        device = next(d for d in op.get("/operator/devices").json()["value"] if d["serial"] == ep["serial"])
        assert device["state"] == "free"
        r = op.post(f"/operator/devices/{ep['serial']}/firmware", json={"version": "1.4a 1.8.2"})
        assert r.status_code == 400, r.text
        r = op.post(f"/operator/devices/{ep['serial']}/firmware", json={"version": "1.4a 1.8.3"})
        assert r.status_code == 200, r.text

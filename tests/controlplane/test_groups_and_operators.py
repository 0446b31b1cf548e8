"""Resource groups, hidden types, orphans, force delete and billing."""
from __future__ import annotations

from tests import appliance_ssh
from tests.controlplane.test_rules import hsm_url, put_hsm, wait_terminal
from tests.helpers import HSM_API, RG_API, hsm_body, make_network


def test_group_resources_hide_dedicated_hsms_unless_asked(cloud):
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
        put_hsm(c, sub, "hsm-rg", "hidden1", hsm_body(subnet))
        wait_terminal(c, sub, "hsm-rg", "hidden1")
        url = f"/subscriptions/{sub}/resourceGroups/hsm-rg/resources"
        types = {r["type"] for r in c.get(url, params={"api-version": RG_API}).json()["value"]}
        assert "Microsoft.HardwareSecurityModules/dedicatedHSMs" not in types
        assert "Microsoft.Network/networkInterfaces" in types  # the NIC follows the HSM and is visible
        shown = c.get(url, params={"api-version": RG_API, "showHiddenTypes": "true"}).json()["value"]
        assert any(r["name"] == "hidden1" for r in shown)
        flt = c.get(url, params={"api-version": RG_API, "$filter":
                                 "resourceType eq 'Microsoft.HardwareSecurityModules/dedicatedHSMs'"}).json()["value"]
        assert [r["name"] for r in flt] == ["hidden1"]
        # Listing HSMs directly always shows them.
        direct = c.get(f"/subscriptions/{sub}/resourceGroups/hsm-rg/providers/Microsoft.HardwareSecurityModules/"
                       "dedicatedHSMs", params={"api-version": HSM_API}).json()["value"]
        assert [h["name"] for h in direct] == ["hidden1"]


def test_deleting_the_group_orphans_the_hsm_until_force_delete(cloud):
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub, rg="orphan-rg")
        put_hsm(c, sub, "orphan-rg", "orphan1", hsm_body(subnet))
        wait_terminal(c, sub, "orphan-rg", "orphan1")
        ep = c.get(hsm_url(sub, "orphan-rg", "orphan1") + "/endpoints", params={"api-version": HSM_API}).json()
        appliance_ssh.take_ownership(ep)
        r = c.delete(f"/subscriptions/{sub}/resourcegroups/orphan-rg", params={"api-version": RG_API})
        assert r.status_code == 202
        assert c.get(r.headers["location"]).status_code == 200
        assert c.get(f"/subscriptions/{sub}/resourcegroups/orphan-rg", params={"api-version": RG_API}).status_code == 404
    with cloud.http(operator=True) as op:
        orphans = [o for o in op.get("/operator/orphans").json()["value"] if o["subscriptionId"] == sub]
        assert [o["name"] for o in orphans] == ["orphan1"]
        bill = [b for b in op.get("/operator/billing", params={"subscription": sub}).json()["value"]]
        assert bill[0]["name"] == "orphan1" and bill[0]["billing"] == "running" and bill[0]["orphaned"]
        r = op.post(f"/operator/subscriptions/{sub}/resourceGroups/orphan-rg/dedicatedHSMs/orphan1/forceDelete")
        assert r.status_code == 202, r.text
        # The operator follows the force delete on the operator surface, not on the tenant's routes.
        loc = r.json()["location"]
        assert "/operator/operations/" in loc
        for _ in range(600):
            if op.get(loc).status_code != 202:
                break
        done = op.get(loc)
        assert done.status_code == 200 and done.json()["status"] == "Succeeded"
        assert [o for o in op.get("/operator/orphans").json()["value"] if o["subscriptionId"] == sub] == []
        bill = op.get("/operator/billing", params={"subscription": sub}).json()["value"]
        assert bill[0]["billing"] == "ended" and bill[0]["billedHours"] >= 1
        device = next(d for d in op.get("/operator/devices").json()["value"] if d["serial"] == ep["serial"])
        # Reclaimed out of band although the tenant never zeroized: back in the pool, pristine.
        assert device["state"] == "free" and device["lastCheckedPristineAt"]
        events = [e["action"] for e in op.get("/operator/events").json()["value"]]
        assert "hsm.force-delete" in events and "hsm.orphaned" in events


def test_force_delete_flag_lets_tenant_delete_unzeroized(cloud):
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
        put_hsm(c, sub, "hsm-rg", "forced1", hsm_body(subnet))
        wait_terminal(c, sub, "hsm-rg", "forced1")
        ep = c.get(hsm_url(sub, "hsm-rg", "forced1") + "/endpoints", params={"api-version": HSM_API}).json()
        appliance_ssh.take_ownership(ep)
        r = c.delete(hsm_url(sub, "hsm-rg", "forced1"), params={"api-version": HSM_API})
        assert r.status_code == 400 and r.json()["error"]["code"] == "HsmNotZeroized"
    with cloud.http(operator=True) as op:
        assert op.post(f"/operator/subscriptions/{sub}/resourceGroups/hsm-rg/dedicatedHSMs/forced1/forceDelete"
                       ).status_code == 202


def test_operator_views_need_operator_token(cloud):
    with cloud.http(operator=True) as op:
        stamps = op.get("/operator/stamps").json()["value"]
        east = [s for s in stamps if s["region"] == "eastus" and s["kind"] == "luna"]
        assert [s["stamp"] for s in east] == ["stamp1", "stamp2"]
        assert all(s["customerDevices"] == 12 and s["spares"] == 2 and s["testDevices"] == 1 for s in east)
        devices = op.get("/operator/devices", params={"region": "westus"}).json()["value"]
        assert len(devices) == 2 * 2 * 15
        assert len({d["address"] for d in devices}) == len(devices)  # one loopback address per device
        assert all(d["address"].startswith("127.") for d in devices)

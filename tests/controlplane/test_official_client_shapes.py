"""Requests exactly as the other official clients send them (raw HTTP), each test naming its source.

api-version 2021-11-30 is what Azure PowerShell's Az.DedicatedHsm, Terraform's azurerm provider
and the Payment HSM guide use; its references are `{"id": ...}`."""
from __future__ import annotations

from tests.controlplane.test_payment_hsm import tenant_management
from tests.controlplane.test_rules import PAY, hsm_url
from tests.helpers import LUNA, make_network, wait_operation

V2021 = {"api-version": "2021-11-30"}


def wait_terminal(c, sub, rg, name) -> dict:
    """The HSM as a 2021-11-30 client reads it, once its deployment has ended."""
    for _ in range(600):
        hsm = c.get(hsm_url(sub, rg, name), params=V2021).json()
        if hsm["properties"]["provisioningState"] in ("Succeeded", "Failed"):
            return hsm
    raise AssertionError(f"{name} did not finish deploying")


def _deleted(c, sub, name) -> None:
    r = c.delete(hsm_url(sub, "hsm-rg", name), params=V2021)
    assert r.status_code == 202, r.text
    done = wait_operation(c, r.headers["location"])
    assert done.status_code == 200, done.text
    assert c.get(hsm_url(sub, "hsm-rg", name), params=V2021).status_code == 404


def test_az_powershell_new_update_remove_azdedicatedhsm(cloud):
    """Az.DedicatedHsm is generated from the 2021-11-30 spec (Azure/azure-powershell
    src/DedicatedHsm/DedicatedHsm.Autorest/README.md, input-file .../stable/2021-11-30/dedicatedhsm.json).
    Its serializers (generated/api/Models/Api20211130/DedicatedHsmProperties.json.cs, NetworkInterface.json.cs)
    write networkProfile {subnet: {id}, networkInterfaces: [{privateIpAddress}]} and stampId; the body is that
    of the module's example `New-AzDedicatedHsm -Location eastus -Sku "SafeNet Luna Network HSM A790"
    -StampId stamp1 -SubnetId ... -NetworkInterface @{PrivateIPAddress = '10.2.1.120'}` (examples/
    New-AzDedicatedHsm.md) with -Tag and -Zone. Update-AzDedicatedHsm -Tag sends DedicatedHsmPatchParameters
    ({"tags": ...}); Remove-AzDedicatedHsm a DELETE."""
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
        body = {"location": "eastus", "sku": {"name": LUNA}, "tags": {"Environment": "dev"}, "zones": ["1"],
                "properties": {"networkProfile": {"subnet": {"id": subnet},
                                                  "networkInterfaces": [{"privateIpAddress": "10.2.1.120"}]},
                               "stampId": "stamp1"}}
        r = c.put(hsm_url(sub, "hsm-rg", "hsm-n7wfxi"), params=V2021, json=body)
        assert r.status_code == 201, r.text
        hsm = wait_terminal(c, sub, "hsm-rg", "hsm-n7wfxi")
        props = hsm["properties"]
        assert props["provisioningState"] == "Succeeded" and props["stampId"] == "stamp1"
        assert props["networkProfile"]["subnet"] == {"id": subnet}
        [nic] = props["networkProfile"]["networkInterfaces"]
        assert nic["privateIpAddress"] == "10.2.1.120" and nic["id"].endswith("/hsm-n7wfxi_HSMHost1Nic")
        assert hsm["zones"] == ["1"] and "systemData" in hsm
        r = c.patch(hsm_url(sub, "hsm-rg", "hsm-n7wfxi"), params=V2021, json={"tags": {"Dept": "hsm"}})
        assert r.status_code == 200 and r.json()["tags"] == {"Dept": "hsm"}
        _deleted(c, sub, "hsm-n7wfxi")


def test_terraform_azurerm_dedicated_hardware_security_module(cloud):
    """hashicorp/terraform-provider-azurerm internal/services/hsm/dedicated_hardware_security_module_resource.go
    (go-azure-sdk hardwaresecuritymodules/2021-11-30): Create GETs first (404 expected), then PUTs
    {location (normalized), properties: {networkProfile: {subnet: {id}, networkInterfaces:
    [{privateIpAddress}]}, stampId (stamp1|stamp2)}, sku: {name}, tags, zones}; Update PATCHes
    DedicatedHsmPatchParameters, which is `{}` when the tags did not change; Delete then polls."""
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
        url = hsm_url(sub, "hsm-rg", "acctest-hsm")
        assert c.get(url, params=V2021).status_code == 404  # the import check
        body = {"location": "eastus", "properties": {
            "networkProfile": {"networkInterfaces": [{"privateIpAddress": "10.2.1.8"}], "subnet": {"id": subnet}},
            "stampId": "stamp2"}, "sku": {"name": LUNA}, "tags": {"env": "Test"}, "zones": ["1"]}
        r = c.put(url, params=V2021, json=body)
        assert r.status_code == 201, r.text
        hsm = wait_terminal(c, sub, "hsm-rg", "acctest-hsm")
        assert hsm["properties"]["stampId"] == "stamp2" and hsm["sku"]["name"] == LUNA
        assert hsm["properties"]["networkProfile"]["subnet"]["id"] == subnet
        # A plan that changes nothing PATCHes {}: the tags stay.
        r = c.patch(url, params=V2021, json={})
        assert r.status_code == 200 and r.json()["tags"] == {"env": "Test"}
        r = c.patch(url, params=V2021, json={"tags": {"env": "Prod"}})
        assert r.status_code == 200 and r.json()["tags"] == {"env": "Prod"}
        assert c.get(url, params=V2021).json()["tags"] == {"env": "Prod"}
        _deleted(c, sub, "acctest-hsm")


def test_payment_hsm_performance_level_changes_with_a_sku_patch(cloud):
    """MicrosoftDocs azure-security-docs articles/payment-hsm/change-performance-level.md: "You can change
    performance level of an existing payment HSM by changing its SKU. There is no interruption", with
    `armclient PATCH <resource-id>?api-version=2021-11-30 "{ 'sku': { 'name': '<sku>' } }"` (the same body in
    its Invoke-RestMethod example). The body is sent as the guide writes it, single quotes and all."""
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
        url = hsm_url(sub, "hsm-rg", "pay-perf")
        r = c.put(url, params=V2021, json={"location": "eastus", "sku": {"name": PAY},
                                          "properties": {"networkProfile": {"subnet": {"id": subnet}}}})
        assert r.status_code == 201, r.text
        assert wait_terminal(c, sub, "hsm-rg", "pay-perf")["properties"]["provisioningState"] == "Succeeded"
        mgmt = tenant_management(c, sub, "pay-perf")
        assert mgmt.put("/settings", json={"header_length": 6}).status_code == 200  # the tenant's content
        assert mgmt.get("/health").json()["licence"]["cps"] == 60

        def patch(sku: str):
            return c.patch(url, params=V2021, headers={"Content-Type": "application/json"},
                           content=f"{{ 'sku': {{ 'name': '{sku}' }} }}")
        r = patch("payShield10K_LMK1_CPS250")
        assert r.status_code == 200, r.text
        assert r.json()["sku"]["name"] == "payShield10K_LMK1_CPS250"
        assert r.json()["properties"]["provisioningState"] == "Succeeded"
        # The device's calls-per-second licence followed; the tenant's credential and settings are intact.
        health = mgmt.get("/health").json()
        assert (health["licence"]["cps"], health["licence"]["lmk_slots"]) == (250, 1)
        assert mgmt.get("/settings").json()["header_length"] == 6
        audit = mgmt.get("/logs/audit").json()["entries"]
        assert any(e["action"] == "licence.cps" and e["actor"] == "provider" for e in audit), audit
        # The LMK count is another licence: not a performance change.
        r = patch("payShield10K_LMK2_CPS250")
        assert r.status_code == 400 and r.json()["error"]["code"] == "LmkCountChangeNotAllowed"
        assert mgmt.get("/health").json()["licence"]["cps"] == 250
        assert c.get(url, params=V2021).json()["sku"]["name"] == "payShield10K_LMK1_CPS250"
        r = patch(LUNA)
        assert r.status_code == 400 and r.json()["error"]["code"] == "PropertyChangeNotAllowed"
        assert mgmt.post("/release").status_code == 200
        _deleted(c, sub, "pay-perf")


def test_a_general_purpose_hsm_keeps_its_sku(cloud):
    """Only payment HSMs change performance level in place; a Luna HSM's PATCH with a SKU is refused
    and changes nothing (a tag in the same body is not applied either)."""
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
        url = hsm_url(sub, "hsm-rg", "luna-sku")
        c.put(url, params=V2021, json={"location": "eastus", "sku": {"name": LUNA}, "tags": {"a": "1"},
                                      "properties": {"networkProfile": {"subnet": {"id": subnet}}}})
        wait_terminal(c, sub, "hsm-rg", "luna-sku")
        r = c.patch(url, params=V2021, json={"sku": {"name": PAY}, "tags": {"a": "2"}})
        assert r.status_code == 400 and r.json()["error"]["code"] == "PropertyChangeNotAllowed"
        hsm = c.get(url, params=V2021).json()
        assert (hsm["sku"]["name"], hsm["tags"]) == (LUNA, {"a": "1"})
        r = c.patch(url, params=V2021, json={"sku": "big"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidSku"
        _deleted(c, sub, "luna-sku")

"""The rules of the service, each with its own error code and a message that names the fix."""
from __future__ import annotations

import contextlib
import time
from datetime import timedelta

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from sqlalchemy import update

from hsmcloud.controlplane.scope import utcnow
from hsmcloud.store.models import VirtualNetworkGateway

from tests.helpers import HSM_API, NET_API, hsm_body, make_network, sdk_client

PAY = "payShield10K_LMK1_CPS60"


def hsm_url(sub, rg, name):
    return (f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.HardwareSecurityModules/"
            f"dedicatedHSMs/{name}")


def put_hsm(c, sub, rg, name, body, api=HSM_API):
    return c.put(hsm_url(sub, rg, name), params={"api-version": api}, json=body)


def wait_terminal(c, sub, rg, name) -> dict:
    for _ in range(600):
        r = c.get(hsm_url(sub, rg, name), params={"api-version": HSM_API})
        assert r.status_code == 200, r.text
        state = r.json()["properties"]["provisioningState"]
        if state in ("Succeeded", "Failed"):
            return r.json()
        time.sleep(0.05)
    raise AssertionError("never reached a terminal state")


def test_not_allowlisted_subscription_is_refused(cloud):
    sub = cloud.new_subscription(allowlist=False)
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
        r = put_hsm(c, sub, "hsm-rg", "nope1", hsm_body(subnet))
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "SubscriptionNotAllowlisted"
        assert "hsmcloud operator allowlist" in r.json()["error"]["message"]
        assert c.get(hsm_url(sub, "hsm-rg", "nope1"), params={"api-version": HSM_API}).status_code == 404


def test_subnet_without_delegation_names_the_fix(cloud):
    sub = cloud.new_subscription()
    client = sdk_client(cloud, sub)
    with cloud.http(sub) as c:
        subnet = make_network(c, sub, delegate=False)
    with pytest.raises(HttpResponseError) as err:
        client.dedicated_hsm.begin_create_or_update("hsm-rg", "nodeleg", hsm_body(subnet))
    assert err.value.status_code == 400
    assert err.value.error.code == "SubnetNotDelegated"
    assert "--delegations Microsoft.HardwareSecurityModules/dedicatedHSMs" in err.value.message


def test_gateway_race_fails_then_retry_succeeds(cloud):
    sub = cloud.new_subscription()
    cloud.settings.gateway_provision_seconds = 3600  # the gateway is still Updating for as long as this test runs
    try:
        with cloud.http(sub) as c:
            subnet = make_network(c, sub)
    finally:
        cloud.settings.gateway_provision_seconds = 0.0
    client = sdk_client(cloud, sub)
    with pytest.raises(HttpResponseError) as err:
        client.dedicated_hsm.begin_create_or_update("hsm-rg", "race1", hsm_body(subnet)).result()
    assert err.value.error.code == "GatewayNotReady"
    assert "hsm-vnet-gw" in err.value.message and "retry the deployment" in err.value.message
    gw = f"/subscriptions/{sub}/resourceGroups/hsm-rg/providers/Microsoft.Network/virtualNetworkGateways/hsm-vnet-gw"
    with cloud.http(sub) as c:
        failed = wait_terminal(c, sub, "hsm-rg", "race1")
        assert failed["properties"]["provisioningState"] == "Failed"
        assert failed["properties"]["statusMessage"] == err.value.error.message
        assert c.get(gw, params={"api-version": NET_API}).json()["properties"]["provisioningState"] == "Updating"
        # The gateway's hour passes (its ready time moves into the past, as time passing does).
        with cloud.services.store.session() as s:
            s.execute(update(VirtualNetworkGateway).where(VirtualNetworkGateway.subscription_id == sub)
                      .values(ready_at=utcnow() - timedelta(seconds=1)))
        assert c.get(gw, params={"api-version": NET_API}).json()["properties"]["provisioningState"] == "Succeeded"
    # The same PUT again, as a redeployment would, now succeeds.
    hsm = client.dedicated_hsm.begin_create_or_update("hsm-rg", "race1", hsm_body(subnet)).result()
    assert hsm.properties.provisioning_state == "Succeeded"


def test_missing_gateway_fails_with_details(cloud):
    sub = cloud.new_subscription()
    client = sdk_client(cloud, sub)
    with cloud.http(sub) as c:
        subnet = make_network(c, sub, gateway=False)
    with pytest.raises(HttpResponseError) as err:
        client.dedicated_hsm.begin_create_or_update("hsm-rg", "nogw", hsm_body(subnet)).result()
    assert err.value.error.code == "GatewayNotFound"
    assert "create one in its GatewaySubnet" in err.value.message
    hsm = client.dedicated_hsm.get("hsm-rg", "nogw")
    assert hsm.properties.provisioning_state == "Failed"
    assert "has no gateway" in hsm.properties.status_message


def test_one_gateway_per_virtual_network(cloud):
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
        base = f"/subscriptions/{sub}/resourceGroups/hsm-rg/providers/Microsoft.Network"
        r = c.put(f"{base}/virtualNetworkGateways/second-gw", params={"api-version": NET_API}, json={
            "location": "eastus", "properties": {"gatewayType": "ExpressRoute", "ipConfigurations": [
                {"name": "x", "properties": {"subnet": {"id": subnet.replace("hsmsubnet", "GatewaySubnet")}}}]}})
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "OnlyOneGatewayPerVirtualNetwork"


def test_private_ip_outside_subnet_or_taken(cloud):
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
        r = put_hsm(c, sub, "hsm-rg", "ipout", hsm_body(subnet, ip="10.9.9.9"))
        assert r.status_code == 400 and r.json()["error"]["code"] == "PrivateIPAddressNotInSubnet"
        assert put_hsm(c, sub, "hsm-rg", "ip1", hsm_body(subnet, ip="10.2.1.20")).status_code == 201
        assert wait_terminal(c, sub, "hsm-rg", "ip1")["properties"]["provisioningState"] == "Succeeded"
        r = put_hsm(c, sub, "hsm-rg", "ip2", hsm_body(subnet, ip="10.2.1.20"))
        assert r.status_code == 409 and r.json()["error"]["code"] == "PrivateIPAddressInUse"
        # Automatic addresses skip the taken one and the reserved ones.
        assert put_hsm(c, sub, "hsm-rg", "ip3", hsm_body(subnet)).status_code == 201
        got = wait_terminal(c, sub, "hsm-rg", "ip3")["properties"]["networkProfile"]["networkInterfaces"][0]
        assert got["privateIpAddress"] == "10.2.1.4"


def test_bad_input_gets_specific_errors_and_changes_nothing(cloud):
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
        cases = [
            ("a", hsm_body(subnet), HSM_API, "InvalidResourceName"),
            ("bad_name!", hsm_body(subnet), HSM_API, "InvalidResourceName"),
            ("okname", hsm_body(subnet, sku="Thales Luna 7"), HSM_API, "InvalidSku"),
            ("okname", hsm_body(subnet, sku=PAY), "2018-10-31-preview", "InvalidSku"),
            ("okname", {"sku": {"name": "SafeNet Luna Network HSM A790"}, "properties": {}}, HSM_API,
             "LocationRequired"),
            ("okname", hsm_body(subnet), "2020-01-01", "InvalidApiVersionParameter"),
            ("okname", hsm_body(subnet, location="mars"), HSM_API, "LocationNotAvailableForResourceType"),
            ("okname", hsm_body(subnet.replace("hsmsubnet", "nosuch")), HSM_API, "SubnetNotFound"),
            ("okname", hsm_body(subnet, stamp="stamp9"), HSM_API, "InvalidStampId"),
        ]
        for name, body, api, code in cases:
            r = put_hsm(c, sub, "hsm-rg", name, body, api)
            assert r.status_code == 400, (code, r.text)
            assert r.json()["error"]["code"] == code
            assert r.json()["error"]["message"]
        r = c.put(hsm_url(sub, "hsm-rg", "okname"), params={"api-version": HSM_API}, content=b"{not json")
        assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidRequestContent"
        r = c.put(hsm_url(sub, "hsm-rg", "okname"), json=hsm_body(subnet))
        assert r.json()["error"]["code"] == "MissingApiVersionParameter"
        r = c.get(f"/subscriptions/{sub}/providers/Microsoft.HardwareSecurityModules/dedicatedHSMs",
                  params={"api-version": HSM_API})
        assert r.json()["value"] == []


def test_tokens_missing_forged_expired_and_other_subscription(cloud):
    sub = cloud.new_subscription()
    other = cloud.new_subscription()
    path = f"/subscriptions/{sub}/providers/Microsoft.HardwareSecurityModules/dedicatedHSMs"
    with cloud.http() as c:
        r = c.get(path, params={"api-version": HSM_API})
        assert r.status_code == 401 and r.json()["error"]["code"] == "AuthenticationFailedMissingToken"
        good = cloud.token(sub)
        forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
        r = c.get(path, params={"api-version": HSM_API}, headers={"Authorization": f"Bearer {forged}"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "InvalidAuthenticationToken"
        expired = cloud.services.tokens.issue(subscription_id=sub, lifetime=timedelta(seconds=-60))
        r = c.get(path, params={"api-version": HSM_API}, headers={"Authorization": f"Bearer {expired}"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "ExpiredAuthenticationToken"
        r = c.get(path, params={"api-version": HSM_API}, headers={"Authorization": f"Bearer {cloud.token(other)}"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "AuthorizationFailed"
        r = c.get("/operator/stamps", headers={"Authorization": f"Bearer {good}"})
        assert r.status_code == 403
    from azure.mgmt.hardwaresecuritymodules import HardwareSecurityModulesMgmtClient

    from tests.helpers import StaticCredential
    bad = HardwareSecurityModulesMgmtClient(StaticCredential(forged), sub, base_url=cloud.url,
                                            connection_verify=cloud.ca, retry_total=0)
    with pytest.raises(ClientAuthenticationError):
        list(bad.dedicated_hsm.list_by_subscription())


def test_tenants_never_see_each_other(cloud):
    a, b = cloud.new_subscription(), cloud.new_subscription()
    with cloud.http(a) as c:
        subnet = make_network(c, a)
        assert put_hsm(c, a, "hsm-rg", "mine", hsm_body(subnet)).status_code == 201
        wait_terminal(c, a, "hsm-rg", "mine")
    with cloud.http(b) as c:
        make_network(c, b)  # same group and network names in another subscription
        assert c.get(hsm_url(b, "hsm-rg", "mine"), params={"api-version": HSM_API}).status_code == 404
        assert c.get(f"/subscriptions/{b}/providers/Microsoft.HardwareSecurityModules/dedicatedHSMs",
                     params={"api-version": HSM_API}).json()["value"] == []
        # b cannot use a's subnet either.
        r = put_hsm(c, b, "hsm-rg", "steal", hsm_body(subnet))
        assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidSubnetId"
        r = c.delete(hsm_url(a, "hsm-rg", "mine"), params={"api-version": HSM_API})
        assert r.status_code == 403
    with cloud.http(a) as c:
        assert c.get(hsm_url(a, "hsm-rg", "mine"), params={"api-version": HSM_API}).status_code == 200


def test_quota_per_region_and_stamp_and_increase(cloud):
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
        for i, stamp in enumerate(["stamp1", "stamp1"]):
            assert put_hsm(c, sub, "hsm-rg", f"quota{i}", hsm_body(subnet, sku=PAY, stamp=stamp)).status_code == 201
            assert wait_terminal(c, sub, "hsm-rg", f"quota{i}")["properties"]["provisioningState"] == "Succeeded"
        # A third HSM in stamp1 exceeds the per-stamp quota of 2.
        put_hsm(c, sub, "hsm-rg", "quota2", hsm_body(subnet, sku=PAY, stamp="stamp1"))
        failed = wait_terminal(c, sub, "hsm-rg", "quota2")
        assert failed["properties"]["provisioningState"] == "Failed"
        assert "Quota exceeded" in failed["properties"]["statusMessage"]
        assert "stamp1" in failed["properties"]["statusMessage"]
        c.delete(hsm_url(sub, "hsm-rg", "quota2"), params={"api-version": HSM_API})
        for i in (3, 4):
            put_hsm(c, sub, "hsm-rg", f"quota{i}", hsm_body(subnet, sku=PAY))
            assert wait_terminal(c, sub, "hsm-rg", f"quota{i}")["properties"]["provisioningState"] == "Succeeded"
        # A fifth in the region exceeds the per-region quota of 4.
        put_hsm(c, sub, "hsm-rg", "quota5", hsm_body(subnet, sku=PAY))
        failed = wait_terminal(c, sub, "hsm-rg", "quota5")
        assert failed["properties"]["provisioningState"] == "Failed"
        assert "quota is 4 per region" in failed["properties"]["statusMessage"]
        # The tenant asks for more; an operator grants it; the retry succeeds.
        r = c.post(f"/subscriptions/{sub}/providers/Microsoft.HardwareSecurityModules/locations/eastus/quotaRequests",
                   params={"api-version": HSM_API}, json={"perRegion": 6, "perStamp": 3, "reason": "more"})
        assert r.status_code == 201, r.text
        req_id = r.json()["id"]
    with cloud.http(operator=True) as op:
        r = op.post(f"/operator/quotaRequests/{req_id}/grant")
        assert r.status_code == 200 and r.json()["status"] == "Granted"
    with cloud.http(sub) as c:
        put_hsm(c, sub, "hsm-rg", "quota5", hsm_body(subnet, sku=PAY))
        assert wait_terminal(c, sub, "hsm-rg", "quota5")["properties"]["provisioningState"] == "Succeeded"


def test_region_out_of_capacity(cloud):
    sub = cloud.new_subscription()
    with cloud.http(operator=True) as op:
        assert op.put(f"/operator/subscriptions/{sub}/quotas/capacitylab",
                      json={"perRegion": 30, "perStamp": 15}).status_code == 200
    with cloud.http(sub) as c:
        subnet = make_network(c, sub, location="capacitylab")
        for i in range(24):
            assert put_hsm(c, sub, "hsm-rg", f"cap{i}", hsm_body(subnet, sku=PAY, location="capacitylab")
                           ).status_code == 201
        for i in range(24):
            assert wait_terminal(c, sub, "hsm-rg", f"cap{i}")["properties"]["provisioningState"] == "Succeeded"
    with pytest.raises(HttpResponseError) as err:
        sdk_client(cloud, sub).dedicated_hsm.begin_create_or_update(
            "hsm-rg", "cap24", hsm_body(subnet, sku=PAY, location="capacitylab")).result()
    assert err.value.error.code == "InsufficientCapacity"
    assert "capacity is used up" in err.value.message and "hsmcloud operator stamps" in err.value.message
    with cloud.http(operator=True) as op:
        stamps = [s for s in op.get("/operator/stamps").json()["value"]
                  if s["region"] == "capacitylab" and s["kind"] == "payshield"]
        assert [s["allocated"] for s in stamps] == [12, 12]
        assert all(s["fillPercent"] == 100.0 and s["spares"] == 2 and s["testDevices"] == 1 for s in stamps)


def test_delete_is_a_long_running_operation(cloud, retry_after):
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
        put_hsm(c, sub, "hsm-rg", "lro1", hsm_body(subnet))
        wait_terminal(c, sub, "hsm-rg", "lro1")
        r = c.delete(hsm_url(sub, "hsm-rg", "lro1"), params={"api-version": HSM_API})
        assert r.status_code == 202
        assert "/providers/Microsoft.HardwareSecurityModules/locations/eastus/operationResults/" in r.headers["location"]
        status_url = r.headers["azure-asyncoperation"]
        assert status_url == r.headers["location"].replace("/operationResults/", "/operationStatuses/")
        assert r.headers["retry-after"] == str(retry_after)
        statuses = []
        for _ in range(600):
            p = c.get(r.headers["location"])
            statuses.append(p.status_code)
            if p.status_code != 202:
                break
            time.sleep(0.05)
        assert statuses[-1] == 200 and set(statuses) <= {200, 202}
        # Done: the result stays readable, and deleting again is a no-op.
        assert c.get(r.headers["location"]).status_code == 200
        done = c.get(status_url)
        assert done.json()["status"] == "Succeeded" and "retry-after" not in done.headers
        assert c.delete(hsm_url(sub, "hsm-rg", "lro1"), params={"api-version": HSM_API}).status_code == 204


def test_full_subnet_fails_the_deployment_cleanly(cloud):
    sub = cloud.new_subscription()
    with cloud.http(operator=True) as op:
        op.put(f"/operator/subscriptions/{sub}/quotas/westus", json={"perRegion": 8, "perStamp": 4})
    with cloud.http(sub) as c:
        make_network(c, sub, location="westus", prefix="10.7")
        base = f"/subscriptions/{sub}/resourceGroups/hsm-rg/providers/Microsoft.Network/virtualNetworks/hsm-vnet"
        r = c.put(f"{base}/subnets/tiny", params={"api-version": NET_API}, json={"properties": {
            "addressPrefix": "10.7.2.0/29", "delegations": [
                {"name": "d", "properties": {"serviceName": "Microsoft.HardwareSecurityModules/dedicatedHSMs"}}]}})
        assert r.status_code == 201, r.text
        tiny = f"{base}/subnets/tiny"
        for i in range(4):  # a /29 has 3 usable addresses
            assert put_hsm(c, sub, "hsm-rg", f"tiny{i}", hsm_body(tiny, location="westus")).status_code == 201
        states = [wait_terminal(c, sub, "hsm-rg", f"tiny{i}")["properties"] for i in range(4)]
        assert [p["provisioningState"] for p in states].count("Succeeded") == 3, [p.get("error") for p in states]
        failed = next(p for p in states if p["provisioningState"] == "Failed")
        assert failed["error"]["code"] == "SubnetIsFull"
    with cloud.http(operator=True) as op:
        billed = {b["name"]: b for b in op.get("/operator/billing", params={"subscription": sub}).json()["value"]}
        # A deployment that never got a device is not billed.
        assert sorted(b["billing"] for b in billed.values()) == ["not billed", "running", "running", "running"]


def test_changes_that_would_move_a_deployed_hsm_are_refused(cloud):
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
        put_hsm(c, sub, "hsm-rg", "fixed1", hsm_body(subnet, ip="10.2.1.40", tags={"a": "1"}))
        wait_terminal(c, sub, "hsm-rg", "fixed1")
        r = put_hsm(c, sub, "hsm-rg", "fixed1", hsm_body(subnet, ip="10.2.1.41"))
        assert r.status_code == 400 and r.json()["error"]["code"] == "PropertyChangeNotAllowed"
        assert "privateIpAddress" in r.json()["error"]["message"]
        # The same body with new tags is an update.
        r = put_hsm(c, sub, "hsm-rg", "fixed1", hsm_body(subnet, ip="10.2.1.40", tags={"a": "2"}))
        assert r.status_code == 200 and r.json()["tags"] == {"a": "2"}


def test_failed_hsm_takes_a_corrected_put(cloud):
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        no_gateway = make_network(c, sub, location="westus", vnet="first-vnet", prefix="10.11", gateway=False)
        put_hsm(c, sub, "hsm-rg", "fix1", hsm_body(no_gateway, location="westus", sku=PAY, ip="10.11.1.7"))
        assert wait_terminal(c, sub, "hsm-rg", "fix1")["properties"]["error"]["code"] == "GatewayNotFound"
        subnet = make_network(c, sub, location="westus", prefix="10.12")
        corrected = hsm_body(subnet, location="westus", sku="payShield10K_LMK2_CPS250", ip="10.12.1.9",
                             stamp="stamp2")
        # Moving it to another region, or making it another kind of HSM, still needs a new resource.
        for field, body in (("location", dict(corrected, location="eastus")),
                            ("sku.name", dict(corrected, sku={"name": "SafeNet Luna Network HSM A790"}))):
            r = put_hsm(c, sub, "hsm-rg", "fix1", body)
            assert r.status_code == 400 and r.json()["error"]["code"] == "PropertyChangeNotAllowed", r.text
            assert r.json()["error"]["target"] == field and "create a new one" in r.json()["error"]["message"]
        r = put_hsm(c, sub, "hsm-rg", "fix1", dict(corrected, properties=dict(corrected["properties"],
                                                                              stampId="stamp9")))
        assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidStampId"
        unchanged = c.get(hsm_url(sub, "hsm-rg", "fix1"), params={"api-version": HSM_API}).json()
        assert unchanged["sku"]["name"] == PAY and unchanged["properties"]["error"]["code"] == "GatewayNotFound"

        # The rerun with another subnet, address, stamp and SKU of the same kind goes through.
        r = put_hsm(c, sub, "hsm-rg", "fix1", corrected)
        assert r.status_code == 200 and "azure-asyncoperation" in r.headers, r.text
        done = wait_terminal(c, sub, "hsm-rg", "fix1")
        assert done["properties"]["provisioningState"] == "Succeeded", done["properties"]
        assert done["sku"]["name"] == "payShield10K_LMK2_CPS250"
        assert done["properties"]["stampId"] == "stamp2"
        assert done["properties"]["networkProfile"]["subnet"]["resourceId"] == subnet
        assert done["properties"]["networkProfile"]["networkInterfaces"][0]["privateIpAddress"] == "10.12.1.9"


@contextlib.contextmanager
def worker_paused(cloud):
    """The service's worker claims nothing meanwhile: what it is given waits, In Progress."""
    engine = cloud.services.lifecycle.engine

    async def claims_nothing() -> bool:
        return False

    engine.run_once = claims_nothing
    try:
        yield
    finally:
        del engine.run_once  # the engine's own again
        engine.wake()


def test_delete_during_create_is_refused_until_it_finishes(cloud):
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
        with worker_paused(cloud):
            assert put_hsm(c, sub, "hsm-rg", "busy1", hsm_body(subnet)).status_code == 201
            r = c.delete(hsm_url(sub, "hsm-rg", "busy1"), params={"api-version": HSM_API})
            assert r.status_code == 409 and r.json()["error"]["code"] == "AnotherOperationInProgress"
            # Refused, and nothing changed: the create is where it was.
            got = c.get(hsm_url(sub, "hsm-rg", "busy1"), params={"api-version": HSM_API}).json()
            assert got["properties"]["provisioningState"] == "CheckingQuota"
        assert wait_terminal(c, sub, "hsm-rg", "busy1")["properties"]["provisioningState"] == "Succeeded"
        r = c.delete(hsm_url(sub, "hsm-rg", "busy1"), params={"api-version": HSM_API})
        assert r.status_code == 202, r.text


def test_operator_inputs_are_checked(cloud):
    never = cloud.new_subscription(allowlist=False)
    approved = cloud.new_subscription()
    with cloud.http(operator=True) as op:
        for sub in (never, approved):
            r = op.put(f"/operator/subscriptions/{sub}/allowlist", json={"allowlisted": "false"})
            assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidRequestContent", r.text
        r = op.get("/operator/events", params={"limit": "abc"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidLimit"
        r = op.put(f"/operator/subscriptions/{approved}/quotas/mars", json={"perRegion": 1, "perStamp": 1})
        assert r.status_code == 400 and r.json()["error"]["code"] == "UnknownRegion"
        subs = {x["subscriptionId"]: x for x in op.get("/operator/subscriptions").json()["value"]}
        # The refused requests changed nothing: no row for the one never seen, the approval of the other kept.
        assert never not in subs
        assert subs[approved]["allowlisted"] is True

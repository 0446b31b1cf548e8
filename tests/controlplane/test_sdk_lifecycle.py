"""The official Azure SDK drives a dedicated HSM from create to delete, through its appliance."""
from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from tests import appliance_ssh
from tests.helpers import HSM_API, hsm_body, make_network, sdk_client


def endpoints(cloud, sub, rg, name) -> dict:
    with cloud.http(sub) as c:
        r = c.get(f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.HardwareSecurityModules/"
                  f"dedicatedHSMs/{name}/endpoints", params={"api-version": HSM_API})
        assert r.status_code == 200, r.text
        return r.json()


def device_row(cloud, serial):
    with cloud.http(operator=True) as c:
        return next(d for d in c.get("/operator/devices").json()["value"] if d["serial"] == serial)


def test_create_ssh_zeroize_delete_returns_device_pristine(cloud):
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
    client = sdk_client(cloud, sub)
    hsm = client.dedicated_hsm.begin_create_or_update("hsm-rg", "hsm1", hsm_body(subnet, ip="10.2.1.5")).result()
    assert hsm.properties.provisioning_state == "Succeeded"
    assert hsm.properties.status_message == "The Dedicated HSM device is provisioned successfully and ready to use."
    nic = hsm.properties.network_profile.network_interfaces[0]
    assert nic.private_ip_address == "10.2.1.5"
    assert nic.resource_id.endswith("/networkInterfaces/hsm1_HSMHost1Nic")
    assert hsm.properties.stamp_id in ("stamp1", "stamp2")

    ep = endpoints(cloud, sub, "hsm-rg", "hsm1")
    assert ep["address"].startswith("127.") and ep["address"] != "10.2.1.5"
    appliance_ssh.take_ownership(ep)

    # Initialized, not zeroized: deletion is refused and names the fix.
    with pytest.raises(HttpResponseError) as err:
        client.dedicated_hsm.begin_delete("hsm-rg", "hsm1").result()
    assert err.value.error.code == "HsmNotZeroized"
    assert "hsm zeroize" in err.value.message
    assert client.dedicated_hsm.get("hsm-rg", "hsm1").properties.provisioning_state == "Succeeded"

    shown = appliance_ssh.zeroize_by_bad_logins(ep["address"], ep["ports"]["ssh"])
    assert "zeroized" in shown.lower()
    client.dedicated_hsm.begin_delete("hsm-rg", "hsm1").result()
    with pytest.raises(ResourceNotFoundError):
        client.dedicated_hsm.get("hsm-rg", "hsm1")

    device = device_row(cloud, ep["serial"])
    assert device["state"] == "free" and device["hsm"] is None
    assert device["lastCheckedPristineAt"] is not None
    # The NIC followed the HSM away.
    with cloud.http(sub) as c:
        r = c.get(f"/subscriptions/{sub}/resourceGroups/hsm-rg/providers/Microsoft.Network/networkInterfaces/"
                  "hsm1_HSMHost1Nic", params={"api-version": "2023-09-01"})
        assert r.status_code == 404


def test_list_paging_and_tags_with_sdk(cloud):
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
    client = sdk_client(cloud, sub)
    for i in range(3):
        client.dedicated_hsm.begin_create_or_update("hsm-rg", f"page{i}", hsm_body(subnet)).result()
    names = [h.name for h in client.dedicated_hsm.list_by_resource_group("hsm-rg", top=1)]
    assert names == ["page0", "page1", "page2"]
    assert sorted(h.name for h in client.dedicated_hsm.list_by_subscription(top=2)) == names
    updated = client.dedicated_hsm.begin_update("hsm-rg", "page1", {"tags": {"Dept": "hsm"}}).result()
    assert updated.tags == {"Dept": "hsm"}
    assert client.dedicated_hsm.get("hsm-rg", "page1").tags == {"Dept": "hsm"}
    # Never-initialized devices hold no key material, so they delete without a zeroize.
    for i in range(3):
        client.dedicated_hsm.begin_delete("hsm-rg", f"page{i}").result()
    assert list(client.dedicated_hsm.list_by_resource_group("hsm-rg")) == []


def test_outbound_endpoints_and_operations_with_sdk(cloud):
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
    client = sdk_client(cloud, sub)
    client.dedicated_hsm.begin_create_or_update("hsm-rg", "ob1", hsm_body(subnet)).result()
    assert list(client.dedicated_hsm.list_outbound_network_dependencies_endpoints("hsm-rg", "ob1")) == []
    ops = [o.name for o in client.operations.list()]
    assert "Microsoft.HardwareSecurityModules/dedicatedhsms/read" in ops
    client.dedicated_hsm.begin_delete("hsm-rg", "ob1").result()


@pytest.mark.parametrize("api_version,ref", [("2021-11-30", "id"), ("2018-10-31-preview", "id"),
                                             ("2024-06-30-preview", "resourceId")])
def test_older_api_versions_use_their_reference_field(cloud, api_version, ref):
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
    client = sdk_client(cloud, sub, api_version=api_version)
    body = hsm_body(subnet)
    body["properties"]["networkProfile"]["subnet"] = {ref: subnet}
    client.dedicated_hsm.begin_create_or_update("hsm-rg", "old1", body).result()
    with cloud.http(sub) as c:
        r = c.get(f"/subscriptions/{sub}/resourceGroups/hsm-rg/providers/Microsoft.HardwareSecurityModules/"
                  "dedicatedHSMs/old1", params={"api-version": api_version})
        prof = r.json()["properties"]["networkProfile"]
        assert prof["subnet"] == {ref: subnet}
        assert ref in prof["networkInterfaces"][0]
        assert ("systemData" in r.json()) == (api_version != "2018-10-31-preview")
    client.dedicated_hsm.begin_delete("hsm-rg", "old1").result()


def test_sdk_model_objects_and_async_client(cloud):
    """The SDK's own model classes (serialized without read-only fields), and its aio client."""
    import asyncio

    from azure.mgmt.hardwaresecuritymodules import models as m
    from azure.mgmt.hardwaresecuritymodules.aio import HardwareSecurityModulesMgmtClient as AsyncClient

    from tests.helpers import StaticCredential

    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
    client = sdk_client(cloud, sub)
    model = m.DedicatedHsm(
        location="eastus", sku=m.Sku(name="SafeNet Luna Network HSM A790"), tags={"Environment": "dogfood"},
        properties=m.DedicatedHsmProperties(
            network_profile=m.NetworkProfile(subnet=m.ApiEntityReference(resource_id=subnet),
                                             network_interfaces=[m.NetworkInterface(private_ip_address="10.2.1.9")]),
            stamp_id="stamp2"))
    hsm = client.dedicated_hsm.begin_create_or_update("hsm-rg", "model1", model).result()
    assert hsm.properties.stamp_id == "stamp2"
    assert hsm.properties.network_profile.network_interfaces[0].private_ip_address == "10.2.1.9"
    assert hsm.system_data.created_by_type == "User"
    patched = client.dedicated_hsm.begin_update("hsm-rg", "model1",
                                                 m.DedicatedHsmPatchParameters(tags={"a": "b"})).result()
    assert patched.tags == {"a": "b"}

    async def with_aio():
        class AsyncCred:
            def __init__(self, tok):
                self._cred = StaticCredential(tok)

            async def get_token(self, *scopes, **kw):
                return self._cred.get_token(*scopes)

            async def close(self):
                pass

        async with AsyncClient(AsyncCred(cloud.token(sub)), sub, base_url=cloud.url, connection_verify=cloud.ca,
                               polling_interval=0, retry_total=0) as aclient:
            names = [h.name async for h in aclient.dedicated_hsm.list_by_resource_group("hsm-rg")]
            poller = await aclient.dedicated_hsm.begin_delete("hsm-rg", "model1")
            await poller.result()
            return names
    assert asyncio.run(with_aio()) == ["model1"]
    with pytest.raises(ResourceNotFoundError):
        client.dedicated_hsm.get("hsm-rg", "model1")

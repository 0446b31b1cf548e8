"""The official Azure SDK drives a dedicated HSM from create to delete."""
from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError

from tests.helpers import hsm_body, make_network, sdk_client


def test_create_get_delete_with_sdk(cloud):
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
    client = sdk_client(cloud, sub)
    hsm = client.dedicated_hsm.begin_create_or_update("hsm-rg", "hsm1", hsm_body(subnet, ip="10.2.1.5")).result()
    assert hsm.properties.provisioning_state == "Succeeded"
    nic = hsm.properties.network_profile.network_interfaces[0]
    assert nic.private_ip_address == "10.2.1.5"
    assert nic.resource_id.endswith("/networkInterfaces/hsm1_HSMHost1Nic")
    assert hsm.properties.stamp_id in ("stamp1", "stamp2")
    # Not zeroized yet: deletion is refused with the fix in the message.
    with pytest.raises(HttpResponseError) as err:
        client.dedicated_hsm.begin_delete("hsm-rg", "hsm1").result()
    assert "zeroize" in str(err.value).lower()

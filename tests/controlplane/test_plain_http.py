"""`hsmcloud up --http`: the SDK over plain HTTP, as azure-core allows with enforce_https=False."""
from __future__ import annotations

import pytest
from azure.core.exceptions import ServiceRequestError
from azure.mgmt.hardwaresecuritymodules import HardwareSecurityModulesMgmtClient

from tests.conftest import start_cloud
from tests.helpers import StaticCredential, hsm_body, make_network


def test_sdk_over_plain_http(tmp_path):
    cloud = start_cloud(tmp_path, backend="sqlite", tls=False)
    try:
        assert cloud.url.startswith("http://")
        sub = cloud.new_subscription()
        with cloud.http(sub) as c:
            subnet = make_network(c, sub)
        client = HardwareSecurityModulesMgmtClient(StaticCredential(cloud.token(sub)), sub, base_url=cloud.url,
                                                   polling_interval=0, retry_total=0)
        with pytest.raises(ServiceRequestError):  # bearer tokens over HTTP need the caller's consent
            client.dedicated_hsm.get("hsm-rg", "x")
        hsm = client.dedicated_hsm.begin_create_or_update("hsm-rg", "plain1", hsm_body(subnet),
                                                          enforce_https=False).result()
        assert hsm.properties.provisioning_state == "Succeeded"
        client.dedicated_hsm.begin_delete("hsm-rg", "plain1", enforce_https=False).result()
        assert list(client.dedicated_hsm.list_by_subscription(enforce_https=False)) == []
    finally:
        cloud.stop()
        cloud.services.store.close()

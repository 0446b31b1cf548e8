"""Creates and deletes as ARM asynchronous operations: 201 + Azure-AsyncOperation, the operation status
resource, Retry-After, and the SDK raising the failure's own code."""
from __future__ import annotations

import asyncio
import time

import pytest
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.transport import RequestsTransport

from hsmcloud.arm.api_versions import HSM_API_VERSIONS
from tests.controlplane.test_rules import hsm_url, put_hsm
from tests.helpers import StaticCredential, hsm_body, make_network, sdk_client


def set_quota(cloud, sub, region="eastus", per_region=0, per_stamp=0):
    with cloud.http(operator=True) as op:
        r = op.put(f"/operator/subscriptions/{sub}/quotas/{region}", json={"perRegion": per_region,
                                                                            "perStamp": per_stamp})
        assert r.status_code == 200, r.text


def poll_status(c, url) -> dict:
    for _ in range(600):
        r = c.get(url)
        assert r.status_code == 200, r.text
        if r.json()["status"] != "InProgress":
            assert "retry-after" not in r.headers
            return r.json()
        assert "retry-after" in r.headers
        time.sleep(0.02)
    raise AssertionError("the operation never finished")


@pytest.mark.parametrize("api_version", HSM_API_VERSIONS)
def test_create_answers_201_and_its_operation_status_reports_the_failure(cloud, api_version):
    sub = cloud.new_subscription()
    set_quota(cloud, sub)
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
        r = put_hsm(c, sub, "hsm-rg", "async1", hsm_body(subnet), api=api_version)
        assert r.status_code == 201, r.text
        assert r.json()["properties"]["provisioningState"] == "CheckingQuota"
        status_url = r.headers["azure-asyncoperation"]
        assert f"/subscriptions/{sub}/providers/Microsoft.HardwareSecurityModules/locations/eastus/" \
               "operationStatuses/" in status_url
        assert status_url.endswith(f"?api-version={api_version}")
        assert "retry-after" in r.headers and "location" not in r.headers

        status = poll_status(c, status_url)
        op_id = status_url.split("/operationStatuses/")[1].split("?")[0]
        assert status["name"] == op_id
        assert status["id"] == (f"/subscriptions/{sub}/providers/Microsoft.HardwareSecurityModules/locations/"
                                f"eastus/operationStatuses/{op_id}")
        assert status["status"] == "Failed" and status["startTime"] <= status["endTime"]
        assert status["error"]["code"] == "QuotaExceeded"
        assert "hsmcloud quota request --region eastus --per-region 1" in status["error"]["message"]
        assert status["error"]["details"] == [{"code": "QuotaExceeded", "message": status["error"]["message"]}]
        # The failed resource carries the same error.
        hsm = c.get(hsm_url(sub, "hsm-rg", "async1"), params={"api-version": api_version}).json()
        assert hsm["properties"]["provisioningState"] == "Failed"
        assert hsm["properties"]["error"] == status["error"]
        assert hsm["properties"]["statusMessage"] == status["error"]["message"]

        # Rerunning it is an update of an existing resource: 200, with a new operation to follow.
        r = put_hsm(c, sub, "hsm-rg", "async1", hsm_body(subnet), api=api_version)
        assert r.status_code == 200, r.text
        assert r.headers["azure-asyncoperation"] != status_url
        assert poll_status(c, r.headers["azure-asyncoperation"])["error"]["code"] == "QuotaExceeded"


@pytest.mark.parametrize("api_version", ["2025-03-31", "2021-11-30"])  # the SDK's default, and az's
def test_sdk_raises_the_quota_failure_with_its_code_and_fix(cloud, api_version):
    sub = cloud.new_subscription()
    set_quota(cloud, sub)
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
    client = sdk_client(cloud, sub, api_version=api_version)
    with pytest.raises(HttpResponseError) as err:
        client.dedicated_hsm.begin_create_or_update("hsm-rg", "noquota", hsm_body(subnet)).result()
    assert err.value.error.code == "QuotaExceeded"
    assert "hsmcloud quota request --region eastus" in err.value.message
    hsm = client.dedicated_hsm.get("hsm-rg", "noquota")
    assert hsm.properties.provisioning_state == "Failed"
    assert hsm.properties.status_message == err.value.error.message


class RecordingTransport(RequestsTransport):
    """The SDK's own HTTP transport, noting each request it sends and each pause its poller takes."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.requests: list[tuple[str, str]] = []
        self.sleeps: list[float] = []

    def send(self, request, **kwargs):
        self.requests.append((request.method, request.url))
        return super().send(request, **kwargs)

    def sleep(self, duration):
        self.sleeps.append(duration)
        super().sleep(duration)


def test_sdk_default_polling_follows_retry_after(cloud, retry_after):
    from azure.mgmt.hardwaresecuritymodules import HardwareSecurityModulesMgmtClient

    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
    transport = RecordingTransport(connection_verify=cloud.ca)
    # The SDK's default polling: no polling_interval, so without Retry-After it would wait 30 s a poll.
    client = HardwareSecurityModulesMgmtClient(StaticCredential(cloud.token(sub)), sub, base_url=cloud.url,
                                               transport=transport, retry_total=0)
    hsm = client.dedicated_hsm.begin_create_or_update("hsm-rg", "quick1", hsm_body(subnet)).result()
    assert hsm.properties.provisioning_state == "Succeeded"
    polls = [url for method, url in transport.requests if "/operationStatuses/" in url]
    assert transport.sleeps == [float(retry_after)] * len(transport.sleeps)
    # The poller reads the status once at once, then once after each pause.
    assert 1 <= len(transport.sleeps) <= 5 and len(polls) == len(transport.sleeps) + 1
    # After the status says Succeeded the SDK reads the resource once more, at its own URL.
    assert transport.requests[-1][0] == "GET" and transport.requests[-1][1].split("?")[0].endswith(
        "/dedicatedHSMs/quick1")

    # A PUT that only changes tags starts no operation: 200 at once, nothing to poll.
    with cloud.http(sub) as c:
        r = put_hsm(c, sub, "hsm-rg", "quick1", hsm_body(subnet, tags={"k": "v"}))
        assert r.status_code == 200 and r.json()["tags"] == {"k": "v"}
        assert "azure-asyncoperation" not in r.headers

    transport.sleeps.clear()
    client.dedicated_hsm.begin_delete("hsm-rg", "quick1").result()
    assert transport.sleeps and transport.sleeps == [float(retry_after)] * len(transport.sleeps)
    assert len(transport.sleeps) <= 5


def test_aio_client_create_succeeds_then_raises_the_quota_failure(cloud):
    from azure.mgmt.hardwaresecuritymodules.aio import HardwareSecurityModulesMgmtClient as AsyncClient

    sub = cloud.new_subscription()
    set_quota(cloud, sub, per_region=1, per_stamp=1)
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)

    class AsyncCred:
        async def get_token(self, *scopes, **kw):
            return StaticCredential(cloud.token(sub)).get_token(*scopes)

        async def close(self):
            pass

    async def scenario():
        async with AsyncClient(AsyncCred(), sub, base_url=cloud.url, connection_verify=cloud.ca,
                               polling_interval=0, retry_total=0) as aclient:
            poller = await aclient.dedicated_hsm.begin_create_or_update("hsm-rg", "aio1", hsm_body(subnet))
            first = await poller.result()
            poller = await aclient.dedicated_hsm.begin_create_or_update("hsm-rg", "aio2", hsm_body(subnet))
            with pytest.raises(HttpResponseError) as err:
                await poller.result()
            for name in ("aio2", "aio1"):
                await (await aclient.dedicated_hsm.begin_delete("hsm-rg", name)).result()
            return first, err.value

    first, error = asyncio.run(scenario())
    assert first.properties.provisioning_state == "Succeeded"
    assert error.error.code == "QuotaExceeded"
    assert "quota is 1 per region" in error.message

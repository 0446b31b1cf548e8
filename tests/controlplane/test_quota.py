"""Quota is exact: concurrent creates get exactly the quota, refused creates block nobody, and HSMs
failed by a later step hold their place until deleted."""
from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import fresh_pg_database, start_cloud
from tests.controlplane.test_async_operations import set_quota
from tests.controlplane.test_rules import hsm_url, put_hsm, wait_terminal
from tests.helpers import HSM_API, hsm_body, make_network


def quota_url(sub, region):
    return f"/subscriptions/{sub}/providers/Microsoft.HardwareSecurityModules/locations/{region}/quota"


def delete_and_wait(c, sub, name):
    r = c.delete(hsm_url(sub, "hsm-rg", name), params={"api-version": HSM_API})
    assert r.status_code == 202, r.text
    for _ in range(600):
        if c.get(r.headers["location"]).status_code != 202:
            break
        time.sleep(0.02)
    assert c.get(hsm_url(sub, "hsm-rg", name), params={"api-version": HSM_API}).status_code == 404


def test_twenty_concurrent_creates_get_exactly_the_quota(cloud):
    sub = cloud.new_subscription()  # the initial quota: 4 per region, 2 per stamp
    names = [f"race{i:02d}" for i in range(20)]
    with cloud.http(sub) as c:
        subnet = make_network(c, sub, location="westus", prefix="10.8")
        with ThreadPoolExecutor(max_workers=20) as pool:
            answers = list(pool.map(lambda n: put_hsm(c, sub, "hsm-rg", n, hsm_body(subnet, location="westus")),
                                    names))
        assert [r.status_code for r in answers] == [201] * 20
        final = {n: wait_terminal(c, sub, "hsm-rg", n) for n in names}
        states = Counter(h["properties"]["provisioningState"] for h in final.values())
        assert states == {"Succeeded": 4, "Failed": 16}
        assert {h["properties"]["error"]["code"] for h in final.values() if "error" in h["properties"]} == {
            "QuotaExceeded"}
        stamps = Counter(h["properties"]["stampId"] for h in final.values()
                         if h["properties"]["provisioningState"] == "Succeeded")
        assert stamps == {"stamp1": 2, "stamp2": 2}
        assert c.get(quota_url(sub, "westus")).json()["used"] == 4

        # The 15 other refused HSMs still exist, yet they hold no quota: freeing one place is enough.
        done = next(n for n, h in final.items() if h["properties"]["provisioningState"] == "Succeeded")
        refused = next(n for n, h in final.items() if h["properties"]["provisioningState"] == "Failed")
        delete_and_wait(c, sub, done)
        assert put_hsm(c, sub, "hsm-rg", refused, hsm_body(subnet, location="westus")).status_code == 200
        assert wait_terminal(c, sub, "hsm-rg", refused)["properties"]["provisioningState"] == "Succeeded"


def test_an_hsm_failed_by_a_later_step_holds_quota_until_deleted(cloud):
    sub = cloud.new_subscription()
    set_quota(cloud, sub, per_region=1, per_stamp=1)
    with cloud.http(sub) as c:
        no_gateway = make_network(c, sub, vnet="nogw-vnet", prefix="10.5", gateway=False)
        put_hsm(c, sub, "hsm-rg", "later1", hsm_body(no_gateway))
        assert wait_terminal(c, sub, "hsm-rg", "later1")["properties"]["error"]["code"] == "GatewayNotFound"
        subnet = make_network(c, sub, prefix="10.6")
        put_hsm(c, sub, "hsm-rg", "later2", hsm_body(subnet))
        failed = wait_terminal(c, sub, "hsm-rg", "later2")["properties"]
        assert failed["error"]["code"] == "QuotaExceeded" and "already has 1 dedicated HSM(s)" in failed["error"][
            "message"]
        assert c.get(quota_url(sub, "eastus")).json()["used"] == 1
        delete_and_wait(c, sub, "later1")
        put_hsm(c, sub, "hsm-rg", "later2", hsm_body(subnet))
        assert wait_terminal(c, sub, "hsm-rg", "later2")["properties"]["provisioningState"] == "Succeeded"


def test_quota_routes_take_no_api_version_but_refuse_a_bad_one(cloud):
    sub = cloud.new_subscription()
    base = f"/subscriptions/{sub}/providers/Microsoft.HardwareSecurityModules/locations/westus"
    with cloud.http(sub) as c:
        r = c.get(base + "/quota")
        assert r.status_code == 200, r.text
        assert r.json() == {"subscriptionId": sub, "region": "westus", "perRegion": 4, "perStamp": 2, "used": 0,
                            "allowlisted": True}
        r = c.post(base + "/quotaRequests", json={"perRegion": 5, "reason": "more"})
        assert r.status_code == 201, r.text
        r = c.get(base + "/quotaRequests")
        assert r.status_code == 200 and [q["perRegion"] for q in r.json()["value"]] == [5]
        assert c.get(base + "/quota", params={"api-version": HSM_API}).status_code == 200
        for bad in ("2020-01-01", "", "latest"):
            r = c.get(base + "/quota", params={"api-version": bad})
            assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidApiVersionParameter", (bad, r.text)
            r = c.post(base + "/quotaRequests", params={"api-version": bad}, json={"perRegion": 6})
            assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidApiVersionParameter"
        # A refused request changed nothing.
        assert [q["perRegion"] for q in c.get(base + "/quotaRequests").json()["value"]] == [5]


def test_two_workers_on_one_postgres_store_keep_quota_exact(tmp_path):
    with fresh_pg_database("hsmcloud_quota") as url:
        first = start_cloud(tmp_path, backend="postgres", database_url=url, worker_id="worker-a")
        second = start_cloud(tmp_path, backend="postgres", database_url=url, worker_id="worker-b")
        try:
            sub = first.new_subscription()
            names = [f"two{i:02d}" for i in range(12)]
            with first.http(sub) as c:
                subnet = make_network(c, sub)
                with ThreadPoolExecutor(max_workers=12) as pool:
                    list(pool.map(lambda n: put_hsm(c, sub, "hsm-rg", n, hsm_body(subnet)), names))
                final = [wait_terminal(c, sub, "hsm-rg", n)["properties"] for n in names]
            assert Counter(p["provisioningState"] for p in final) == {"Succeeded": 4, "Failed": 8}
            assert Counter(p["stampId"] for p in final if p["provisioningState"] == "Succeeded") == {
                "stamp1": 2, "stamp2": 2}
        finally:
            for cl in (second, first):
                cl.stop()
                cl.services.store.close()

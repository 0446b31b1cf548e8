"""Several API replicas on one PostgreSQL store: any replica answers, one worker runs the steps."""
from __future__ import annotations

import uuid

import pytest

from tests.conftest import fresh_pg_database, start_cloud
from tests.controlplane.test_rules import hsm_url, put_hsm, wait_terminal
from tests.helpers import HSM_API, hsm_body, make_network


@pytest.fixture
def pg_url():
    with fresh_pg_database("hsmcloud_replicas") as url:
        yield url


def test_api_only_replica_serves_requests_that_the_worker_replica_carries_out(tmp_path, pg_url):
    worker = start_cloud(tmp_path, backend="postgres", database_url=pg_url)
    api = start_cloud(tmp_path, backend="postgres", database_url=pg_url, run_worker=False)
    try:
        sub = str(uuid.uuid4())
        with api.http(operator=True) as op:
            assert op.put(f"/operator/subscriptions/{sub}/allowlist").status_code == 200
        with api.http(sub) as c:
            subnet = make_network(c, sub)
            assert put_hsm(c, sub, "hsm-rg", "rep1", hsm_body(subnet)).status_code == 201
            assert wait_terminal(c, sub, "hsm-rg", "rep1")["properties"]["provisioningState"] == "Succeeded"
        with worker.http(sub) as c:
            assert c.get(hsm_url(sub, "hsm-rg", "rep1"), params={"api-version": HSM_API}).status_code == 200
        with api.http(sub) as c:
            r = c.delete(hsm_url(sub, "hsm-rg", "rep1"), params={"api-version": HSM_API})
            assert r.status_code == 202
            for _ in range(600):
                if c.get(r.headers["location"]).status_code == 200:
                    break
            assert c.get(hsm_url(sub, "hsm-rg", "rep1"), params={"api-version": HSM_API}).status_code == 404
    finally:
        api.stop()
        worker.stop()
        api.services.store.close()
        worker.services.store.close()

"""Several API replicas on one PostgreSQL store: any replica answers, one worker runs the steps."""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from hsmcloud.store.models import DedicatedHsm

from tests.conftest import fresh_pg_database, start_cloud
from tests.controlplane.test_rules import hsm_url, put_hsm, wait_terminal
from tests.helpers import HSM_API, hsm_body, make_network, wait_operation


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
        with api.services.store.session() as s:
            hsm_id = s.scalar(select(DedicatedHsm.id).where(DedicatedHsm.subscription_id == sub))
        with worker.http(sub) as c:
            assert c.get(hsm_url(sub, "hsm-rg", "rep1"), params={"api-version": HSM_API}).status_code == 200
        with api.http(sub) as c:
            r = c.delete(hsm_url(sub, "hsm-rg", "rep1"), params={"api-version": HSM_API})
            assert r.status_code == 202
            done = wait_operation(c, r.headers["location"])
            assert done.status_code == 200, done.text  # carried out by the worker replica, and succeeded
            status = c.get(r.headers["azure-asyncoperation"]).json()
            assert status["status"] == "Succeeded" and "error" not in status, status
            assert c.get(hsm_url(sub, "hsm-rg", "rep1"), params={"api-version": HSM_API}).status_code == 404
        with worker.http(operator=True) as op:
            ops = {o["kind"]: o for o in op.get("/operator/operations", params={"target": hsm_id}).json()["value"]}
        # Both operations ended (the API-only replica has no worker; the worker replica ran them).
        assert {k: o["status"] for k, o in ops.items()} == {"hsm.create": "Succeeded", "hsm.delete": "Succeeded"}
    finally:
        api.stop()
        worker.stop()
        api.services.store.close()
        worker.services.store.close()

"""After hand-over the provider has no logical access to a device: operator tokens stay on the
operator surface, and the tenant's device credentials are the tenant's alone (not in the store,
not in the logs, not settable by the provider)."""
from __future__ import annotations

import hashlib
import logging
import re
import secrets

import asyncssh
import httpx
import pytest
from fastapi.routing import APIRoute
from sqlalchemy import select

from hsmcloud.store.models import Base, Device
from tests import appliance_ssh
from tests.controlplane.test_payment_hsm import claim, endpoints
from tests.controlplane.test_rules import PAY, hsm_url, put_hsm, wait_terminal
from tests.helpers import HSM_API, NET_API, RG_API, hsm_body, make_network

# A value for every path parameter a tenant route may have; a new parameter fails the walk below
# until it is added here, so no new route escapes it.
PARAMS = {"rg": "hsm-rg", "vnet": "hsm-vnet", "location": "eastus", "op_id": "some-operation"}
# The HSM the walk names where a route takes {name}: a real one, so a leak would show.
NAMES = {"dedicatedHSMs": "pay-op", "virtualNetworks": "hsm-vnet", "subnets": "hsmsubnet",
         "virtualNetworkGateways": "hsm-vnet-gw", "networkInterfaces": "pay-op_HSMHost1Nic"}


def api_version_for(path: str) -> str:
    if "/Microsoft.Network/" in path:
        return NET_API
    if "/Microsoft.HardwareSecurityModules" in path:
        return HSM_API
    return RG_API


def store_dump(cloud) -> str:
    """Every row of every table of the service's store, as text."""
    with cloud.services.store.engine.connect() as conn:
        return "\n".join(str(tuple(row)) for table in Base.metadata.sorted_tables
                         for row in conn.execute(select(table)))


def api_routes(routes, prefix: str = ""):
    """(path, route) of every API route of the app, also inside included routers."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield prefix + route.path, route
            continue
        included = getattr(route, "include_context", None)  # FastAPI >= 0.16x keeps included routers whole
        if included is not None:
            yield from api_routes(included.included_router.routes, prefix + included.prefix)


def tenant_routes(app) -> list[tuple[str, str]]:
    return sorted({(method, path) for path, route in api_routes(app.routes)
                   if path.startswith("/subscriptions/") for method in route.methods})


def fill(path: str, sub: str) -> str:
    def value(match: re.Match) -> str:
        param = match.group(1)
        if param == "subscription_id":
            return sub
        if param == "name":
            kind = path[:match.start()].rstrip("/").rsplit("/", 1)[-1]
            assert kind in NAMES, f"no name for a {kind} route ({path}): add one to NAMES"
            return NAMES[kind]
        assert param in PARAMS, f"no value for path parameter {param} ({path}): add one to PARAMS"
        return PARAMS[param]
    return re.sub(r"\{(\w+)\}", value, path)


def test_operator_token_is_refused_on_every_tenant_route(cloud):
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
        put_hsm(c, sub, "hsm-rg", "pay-op", hsm_body(subnet, sku=PAY))
        assert wait_terminal(c, sub, "hsm-rg", "pay-op")["properties"]["provisioningState"] == "Succeeded"
    routes = tenant_routes(cloud.server.config.app)
    # Resource groups, network, HSMs, /endpoints, the credential, quota and operation results.
    assert len(routes) >= 35 and ("POST", "/subscriptions/{subscription_id}/resourceGroups/{rg}/providers/"
                                  "Microsoft.HardwareSecurityModules/dedicatedHSMs/{name}/managementCredential") in routes
    with cloud.http(operator=True) as op:
        for method, path in routes:
            url = fill(path, sub)
            body = {} if method in ("PUT", "POST", "PATCH") else None
            r = op.request(method, url, params={"api-version": api_version_for(path)}, json=body)
            assert r.status_code == 403, f"{method} {path}: {r.status_code} {r.text}"
            if method != "HEAD":
                error = r.json()["error"]
                assert error["code"] == "OperatorNotTenant", f"{method} {path}: {r.text}"
                assert "/operator" in error["message"]
    # Nothing the operator sent changed anything: the tenant's resources are all still there.
    with cloud.http(sub) as c:
        assert c.get(f"/subscriptions/{sub}/resourceGroups/hsm-rg", params={"api-version": RG_API}).status_code == 200
        ep = endpoints(c, sub, "pay-op")
        assert ep["managementCredentialIssuedAt"] is None  # the operator's claim attempt was refused
        assert claim(c, sub, "pay-op").status_code == 200


def test_payment_management_credential_is_the_tenants_alone(cloud, caplog):
    caplog.set_level(logging.DEBUG)
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
        put_hsm(c, sub, "hsm-rg", "pay-cred", hsm_body(subnet, sku=PAY))
        wait_terminal(c, sub, "hsm-rg", "pay-cred")
        ep = endpoints(c, sub, "pay-cred")
        assert "managementToken" not in ep and ep["managementCredentialIssuedAt"] is None
        url = f"http://{ep['address']}:{ep['ports']['management']}"
        # The tenant chooses its token and sends only its digest: the service never sees the token.
        token = secrets.token_urlsafe(32)
        digest = hashlib.sha256(token.encode()).hexdigest()
        first = claim(c, sub, "pay-cred", {"tokenSha256": digest})
        assert first.status_code == 200, first.text
        assert "managementToken" not in first.json() and first.headers["cache-control"] == "no-store"
        assert claim(c, sub, "pay-cred", {"tokenSha256": digest}).status_code == 200  # a lost answer, repeated
        again = claim(c, sub, "pay-cred")
        assert again.status_code == 409
        error = again.json()["error"]
        assert error["code"] == "ManagementCredentialAlreadyIssued"
        assert "credential rotate" in error["message"] and "force delete" in error["message"]
        assert endpoints(c, sub, "pay-cred")["managementCredentialIssuedAt"] == first.json()["issuedAt"]
        for bad in ({"tokenSha256": "ABC"}, {"tokenSha256": 1}, {"token": token}, ["x"]):
            r = claim(c, sub, "pay-cred", bad)
            assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidRequestContent", r.text
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as tenant:
            assert tenant.put("/settings", json={"header_length": 6}).status_code == 200
    # The provider holds the device's management token (it is in the store); it opens nothing of the tenant's.
    with cloud.services.store.session() as s:
        provider_token = s.get(Device, ep["serial"]).mgmt_token
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {provider_token}"}, timeout=30) as provider:
        assert provider.post("/keys/export-components", json={"type": "000", "key": "U" + "0" * 32,
                                                              "components": 2}).status_code == 403
        assert provider.get("/settings").status_code == 403
        own = hashlib.sha256(b"provider-chosen-token").hexdigest()
        assert provider.post("/provider/claim", json={"token_sha256": own}).status_code == 409
        assert provider.post("/tenant/credential", json={"token_sha256": own}).status_code == 403
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as tenant:
        assert tenant.get("/settings").json()["header_length"] == 6  # still the tenant's, still in
    dump = store_dump(cloud)
    assert token not in dump and digest not in dump
    assert not [r for r in caplog.records if token in r.getMessage() or digest in r.getMessage()]


def test_tenant_release_lets_the_tenant_claim_again_and_a_returned_device_is_unclaimed(cloud):
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
        put_hsm(c, sub, "hsm-rg", "pay-rel", hsm_body(subnet, sku=PAY))
        wait_terminal(c, sub, "hsm-rg", "pay-rel")
        ep = endpoints(c, sub, "pay-rel")
        url = f"http://{ep['address']}:{ep['ports']['management']}"
        issued = claim(c, sub, "pay-rel")
        token = issued.json()["managementToken"]
        assert issued.headers["cache-control"] == "no-store"
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as tenant:
            assert tenant.post("/release").status_code == 200
            assert tenant.get("/settings").status_code == 401  # a released device holds no tenant credential
        again = claim(c, sub, "pay-rel")
        assert again.status_code == 200, again.text
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {again.json()['managementToken']}"},
                          timeout=30) as tenant:
            assert tenant.get("/settings").status_code == 200
            assert tenant.post("/release").status_code == 200
        r = c.delete(hsm_url(sub, "hsm-rg", "pay-rel"), params={"api-version": HSM_API})
        assert r.status_code == 202, r.text
        for _ in range(600):
            if c.get(r.headers["location"]).status_code != 202:
                break
    with cloud.services.store.session() as s:
        device = s.get(Device, ep["serial"])
        assert device.state == "free" and device.tenant_credential_issued_at is None


def test_luna_first_login_takes_the_per_hsm_initial_password(cloud, caplog):
    caplog.set_level(logging.DEBUG, logger="hsmcloud")
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
        put_hsm(c, sub, "hsm-rg", "luna-init", hsm_body(subnet))
        wait_terminal(c, sub, "hsm-rg", "luna-init")
        ep = endpoints(c, sub, "luna-init")
        initial = ep["initialAdminPassword"]
        assert endpoints(c, sub, "luna-init")["initialAdminPassword"] == initial  # the same at every read
    address, port = ep["address"], ep["ports"]["ssh"]
    # The factory password no longer opens a handed-over device, whoever connects first.
    with pytest.raises(asyncssh.PermissionDenied):
        appliance_ssh.run(address, port, "PASSWORD", "hsm show")
    [(code, text)] = appliance_ssh.run(address, port, initial, "hsm show")
    assert code != 0 and "my password set" in text  # the documented first login: change it at once
    appliance_ssh.take_ownership(ep)
    with pytest.raises(asyncssh.PermissionDenied):
        appliance_ssh.run(address, port, initial, "hsm show")  # useless once changed
    assert initial not in store_dump(cloud)
    assert not [r for r in caplog.records if initial in r.getMessage()]
    # Another HSM gets another initial password.
    with cloud.http(sub) as c:
        put_hsm(c, sub, "hsm-rg", "luna-other", hsm_body(subnet))
        wait_terminal(c, sub, "hsm-rg", "luna-other")
        assert endpoints(c, sub, "luna-other")["initialAdminPassword"] != initial

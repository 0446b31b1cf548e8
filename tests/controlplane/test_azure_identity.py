"""The Entra-compatible token endpoint, driven by azure-identity's own credentials (MSAL inside):
service principals with a secret or a certificate get tokens the ARM surface accepts, act only
where they may, and stop working when they are deleted."""
from __future__ import annotations

import base64
import logging
import time
import uuid

import httpx
import jwt
import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.identity import CertificateCredential, ClientSecretCredential
from azure.mgmt.hardwaresecuritymodules import HardwareSecurityModulesMgmtClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import update

from hsmcloud.cli.sp import new_certificate
from hsmcloud.controlplane.scope import utcnow
from hsmcloud.store.models import ServicePrincipal
from tests.controlplane.test_provider_access import store_dump
from tests.controlplane.test_rules import wait_terminal
from tests.helpers import HSM_API, RG_API, hsm_body, make_network

ARM_SCOPE = "https://management.azure.com/.default"


def new_sp(c, sub: str | None = None, **body) -> dict:
    path = f"/subscriptions/{sub}/servicePrincipals" if sub else "/operator/servicePrincipals"
    r = c.post(path, json=body or None)
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    return r.json()


def secret_credential(cloud, sp: dict, **kwargs) -> ClientSecretCredential:
    return ClientSecretCredential(sp["tenant"], sp["appId"], sp["password"], authority=cloud.url,
                                  disable_instance_discovery=True, connection_verify=cloud.ca, **kwargs)


def sdk(cloud, credential, sub: str) -> HardwareSecurityModulesMgmtClient:
    return HardwareSecurityModulesMgmtClient(credential, sub, base_url=cloud.url, connection_verify=cloud.ca,
                                             polling_interval=0, retry_total=0)


def form_token(cloud, tenant: str, **form) -> httpx.Response:
    with cloud.http() as c:
        return c.post(f"/{tenant}/oauth2/v2.0/token", data=form)


def test_client_secret_credential_drives_the_sdk_through_create_list_and_delete(cloud, caplog):
    caplog.set_level(logging.DEBUG)
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
        sp = new_sp(c, sub, displayName="sdk-app")
    assert sp["displayName"] == "sdk-app" and sp["credentialType"] == "Password" and len(sp["password"]) >= 32
    client = sdk(cloud, secret_credential(cloud, sp), sub)
    hsm = client.dedicated_hsm.begin_create_or_update("hsm-rg", "idsecret", hsm_body(subnet)).result()
    assert hsm.properties.provisioning_state == "Succeeded"
    assert hsm.system_data.created_by == sp["appId"]  # the application, not a minted user token
    assert [h.name for h in client.dedicated_hsm.list_by_resource_group("hsm-rg")] == ["idsecret"]
    client.dedicated_hsm.begin_delete("hsm-rg", "idsecret").result()
    assert list(client.dedicated_hsm.list_by_resource_group("hsm-rg")) == []
    # The secret is shown once: the store holds a scrypt hash only, and no log line carries it.
    dump = store_dump(cloud)
    assert sp["password"] not in dump and "scrypt$" in dump
    assert not [r for r in caplog.records if sp["password"] in r.getMessage()]
    with cloud.http(sub) as c:
        listed = c.get(f"/subscriptions/{sub}/servicePrincipals").json()["value"]
    assert [x["appId"] for x in listed] == [sp["appId"]] and "password" not in listed[0]


def test_client_certificate_credential_drives_the_sdk(cloud, tmp_path):
    sub = cloud.new_subscription()
    key_pem, cert_pem = new_certificate("cert-app", 1)
    pem = tmp_path / "cert-app.pem"
    pem.write_text(key_pem + cert_pem)
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
        refused = c.post(f"/subscriptions/{sub}/servicePrincipals", json={"certificate": key_pem + cert_pem})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "InvalidCertificate"
        sp = new_sp(c, sub, displayName="cert-app", certificate=cert_pem)
    assert sp["password"] is None and sp["credentialType"] == "Certificate"
    for chain in (False, True):  # RS256 with x5t, and with the certificate chain (x5c) sent along
        credential = CertificateCredential(sp["tenant"], sp["appId"], certificate_path=str(pem),
                                                 authority=cloud.url, disable_instance_discovery=True,
                                                 connection_verify=cloud.ca, send_certificate_chain=chain)
        client = sdk(cloud, credential, sub)
        name = f"idcert{int(chain)}"
        client.dedicated_hsm.begin_create_or_update("hsm-rg", name, hsm_body(subnet)).result()
        assert name in [h.name for h in client.dedicated_hsm.list_by_subscription()]
        client.dedicated_hsm.begin_delete("hsm-rg", name).result()
    # Another key with a copy of the subject is not the registered certificate.
    other_key, other_cert = new_certificate("cert-app", 1)
    forged = tmp_path / "forged.pem"
    forged.write_text(other_key + other_cert)
    credential = CertificateCredential(sp["tenant"], sp["appId"], certificate_path=str(forged),
                                             authority=cloud.url, disable_instance_discovery=True,
                                             connection_verify=cloud.ca)
    with pytest.raises(ClientAuthenticationError, match="AADSTS700027"):
        credential.get_token(ARM_SCOPE)


def test_tokens_act_only_where_the_principal_may(cloud):
    sub, other = cloud.new_subscription(), cloud.new_subscription()
    with cloud.http(sub) as c:
        tenant_sp = new_sp(c, sub)
    with cloud.http(operator=True) as op:
        operator_sp = new_sp(op)
    assert operator_sp["role"] == "operator" and operator_sp["subscriptionId"] is None
    tenant_token = secret_credential(cloud, tenant_sp).get_token(ARM_SCOPE).token
    operator_token = secret_credential(cloud, operator_sp).get_token(ARM_SCOPE).token
    with cloud.http(token=tenant_token) as c:
        assert c.get(f"/subscriptions/{sub}/resourcegroups", params={"api-version": RG_API}).status_code == 200
        r = c.get(f"/subscriptions/{other}/resourcegroups", params={"api-version": RG_API})
        assert r.status_code == 403 and r.json()["error"]["code"] == "AuthorizationFailed"
        r = c.get("/operator/stamps")
        assert r.status_code == 403 and r.json()["error"]["code"] == "OperatorRoleRequired"
        assert [s["subscriptionId"] for s in c.get("/subscriptions", params={"api-version": RG_API})
                .json()["value"]] == [sub]
    with cloud.http(token=operator_token) as op:
        assert op.get("/operator/stamps").status_code == 200
        r = op.get(f"/subscriptions/{sub}/resourcegroups", params={"api-version": RG_API})
        assert r.status_code == 403 and r.json()["error"]["code"] == "OperatorNotTenant"
        assert op.get("/subscriptions", params={"api-version": RG_API}).json() == {"value": []}
        # An operator principal manages operator principals only, never a tenant's.
        r = op.delete(f"/operator/servicePrincipals/{tenant_sp['appId']}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "ServicePrincipalNotFound"


def test_a_deleted_principal_stops_at_once(cloud):
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        sp = new_sp(c, sub)
        keep = new_sp(c, sub)
    token = secret_credential(cloud, sp).get_token(ARM_SCOPE).token
    url, params = f"/subscriptions/{sub}/resourcegroups", {"api-version": RG_API}
    with cloud.http(token=token) as c:
        assert c.get(url, params=params).status_code == 200
        assert c.delete(f"/subscriptions/{sub}/servicePrincipals/{sp['appId']}").status_code == 200
        r = c.get(url, params=params)  # the same, still unexpired token
    assert r.status_code == 401 and r.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert "deleted" in r.json()["error"]["message"]
    with pytest.raises(ClientAuthenticationError, match="AADSTS700016"):
        secret_credential(cloud, sp).get_token(ARM_SCOPE)
    with cloud.http(token=secret_credential(cloud, keep).get_token(ARM_SCOPE).token) as c:
        assert c.get(url, params=params).status_code == 200  # others are untouched


def test_wrong_and_expired_credentials_are_refused_with_entra_errors(cloud):
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        sp = new_sp(c, sub)
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000215"):
        secret_credential(cloud, dict(sp, password=sp["password"][:-1] + "x")).get_token(ARM_SCOPE)
    # MSAL reads the tenant's OpenID discovery first, and a tenant not found there ends it.
    with pytest.raises(ClientAuthenticationError, match="Unable to get authority configuration"):
        secret_credential(cloud, dict(sp, tenant=str(uuid.uuid4()))).get_token(ARM_SCOPE)
    r = form_token(cloud, sp["tenant"], grant_type="client_credentials", client_id=sp["appId"],
                   client_secret=sp["password"], scope="https://vault.azure.net/.default")
    assert r.status_code == 400 and r.json()["error"] == "invalid_resource"
    assert r.json()["error_codes"] == [500011]
    r = form_token(cloud, sp["tenant"], grant_type="password", client_id=sp["appId"], scope=ARM_SCOPE)
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    # Basic authentication and the double slash az sends (resource 'https://management.azure.com/') work.
    basic = base64.b64encode(f"{sp['appId']}:{sp['password']}".encode()).decode()
    with cloud.http() as c:
        r = c.post(f"/{sp['tenant']}/oauth2/v2.0/token", headers={"Authorization": f"Basic {basic}"},
                   data={"grant_type": "client_credentials", "scope": "https://management.azure.com//.default"})
    assert r.status_code == 200 and r.json()["token_type"] == "Bearer" and r.json()["expires_in"] == 3600
    with cloud.services.store.session() as s:
        s.execute(update(ServicePrincipal).where(ServicePrincipal.app_id == sp["appId"])
                  .values(expires_at=utcnow()))
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000222"):
        secret_credential(cloud, sp).get_token(ARM_SCOPE)


def test_discovery_and_keys_verify_the_tokens_independently(cloud):
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        sp = new_sp(c, sub)
    token = secret_credential(cloud, sp).get_token(ARM_SCOPE).token
    with cloud.http() as c:
        config = c.get(f"/{sp['tenant']}/v2.0/.well-known/openid-configuration").json()
        assert config["token_endpoint"] == f"{cloud.url}/{sp['tenant']}/oauth2/v2.0/token"
        assert config["authorization_endpoint"].startswith(cloud.url) and "client_credentials" in config[
            "grant_types_supported"]
        keys = c.get(config["jwks_uri"]).json()["keys"]
        unknown = c.get(f"/{uuid.uuid4()}/v2.0/.well-known/openid-configuration")
    assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_tenant"
    [key] = [k for k in keys if k["kid"] == jwt.get_unverified_header(token)["kid"]]
    raw = base64.urlsafe_b64decode(key["x"] + "=" * (-len(key["x"]) % 4))
    claims = jwt.decode(token, Ed25519PublicKey.from_public_bytes(raw), algorithms=["EdDSA"],
                        audience="https://management.azure.com/", issuer=config["issuer"])
    assert (claims["tid"], claims["appid"], claims["sid"], claims["idtyp"]) == (sp["tenant"], sp["appId"], sub, "app")
    assert claims["exp"] - claims["iat"] == 3600 and claims["exp"] > time.time()


def test_subscriptions_tenants_providers_and_cloud_metadata(cloud):
    sub = cloud.new_subscription()
    tenant = cloud.services.token_endpoint.tenant_id
    with cloud.http(sub) as c:
        one = c.get(f"/subscriptions/{sub}", params={"api-version": "2022-12-01"}).json()
        assert (one["subscriptionId"], one["tenantId"], one["state"]) == (sub, tenant, "Enabled")
        assert c.get("/tenants", params={"api-version": "2022-12-01"}).json()["value"][0]["tenantId"] == tenant
        provider = c.get(f"/subscriptions/{sub}/providers/microsoft.hardwaresecuritymodules",
                         params={"api-version": "2024-11-01"}).json()
        [hsms] = [t for t in provider["resourceTypes"] if t["resourceType"] == "dedicatedHSMs"]
        # Newest first: `az resource` takes the first stable one.
        assert hsms["apiVersions"][0] == HSM_API and "2021-11-30" in hsms["apiVersions"]
        assert provider["registrationState"] == "Registered"
        r = c.get(f"/subscriptions/{sub}/providers/Microsoft.Compute", params={"api-version": "2024-11-01"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "InvalidResourceNamespace"
    with cloud.http() as anonymous:
        meta = anonymous.get("/metadata/endpoints", params={"api-version": "2022-09-01"}).json()
        listed = anonymous.get("/metadata/endpoints", params={"api-version": "2019-05-01"}).json()
    assert meta["resourceManager"] == cloud.url + "/" and meta["authentication"]["loginEndpoint"] == cloud.url + "/"
    assert meta["authentication"]["audiences"] == ["https://management.azure.com/"] and listed == [meta]


def test_generic_resource_list_filters_as_az_resource_list_asks(cloud):
    """`az resource list -g RG [--resource-type T] [--name N] [--tag k=v]` sends these $filter clauses
    (azure-cli's _list_resources_odata_filter_builder) with $expand=createdTime,changedTime,provisioningState."""
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
        c.put(f"/subscriptions/{sub}/resourceGroups/hsm-rg/providers/Microsoft.HardwareSecurityModules/dedicatedHSMs/"
              "listed1", params={"api-version": HSM_API}, json=hsm_body(subnet, tags={"env": "Dev"}))
        wait_terminal(c, sub, "hsm-rg", "listed1")

        def names(flt: str) -> list[str]:
            r = c.get(f"/subscriptions/{sub}/resources", params={
                "api-version": "2024-11-01", "$filter": flt, "$expand": "createdTime,changedTime,provisioningState"})
            assert r.status_code == 200, r.text
            return sorted(x["name"] for x in r.json()["value"])
        # The HSM is a hidden type; its NIC is not.
        assert names("resourceGroup eq 'HSM-RG'") == ["hsm-vnet", "hsm-vnet-gw", "listed1_HSMHost1Nic"]
        hsm_type = "resourceType eq 'Microsoft.HardwareSecurityModules/dedicatedHSMs'"
        assert names(f"resourceGroup eq 'hsm-rg' and {hsm_type}") == ["listed1"]
        assert names(f"{hsm_type} and name eq 'listed1' and location eq 'eastus'") == ["listed1"]
        assert names(f"{hsm_type} and tagname eq 'env' and tagvalue eq 'dev'") == ["listed1"]
        assert names(f"{hsm_type} and tagname eq 'env' and tagvalue eq 'prod'") == []
        item = c.get(f"/subscriptions/{sub}/resources", params={
            "api-version": "2024-11-01", "$filter": hsm_type, "$expand": "provisioningState"}).json()["value"][0]
        assert item["provisioningState"] and "createdTime" not in item
        r = c.get(f"/subscriptions/{sub}/resources", params={"api-version": "2024-11-01",
                                                             "$filter": "substringof('x', name)"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidFilterInQueryString"


def test_sdk_error_of_a_principal_on_a_subscription_it_does_not_own(cloud):
    sub, other = cloud.new_subscription(), cloud.new_subscription()
    with cloud.http(sub) as c:
        sp = new_sp(c, sub)
    client = sdk(cloud, secret_credential(cloud, sp), other)
    with pytest.raises(HttpResponseError) as info:
        list(client.dedicated_hsm.list_by_subscription())
    assert info.value.status_code == 403 and info.value.error.code == "AuthorizationFailed"

"""`hsmcloud sp` and `hsmcloud az-cloud`: the identities and the cloud definition Azure tooling uses."""
from __future__ import annotations

import json
import os
import stat

from azure.identity import CertificateCredential, ClientSecretCredential
from azure.mgmt.hardwaresecuritymodules import HardwareSecurityModulesMgmtClient

from hsmcloud.cli.az_cloud import commands

ARM_SCOPE = "https://management.azure.com/.default"


def test_sp_create_json_is_what_az_ad_sp_create_for_rbac_prints(cli, tmp_path):
    sub = cli.cloud.new_subscription()
    sp = cli.json("sp", "create", "-n", "ci-app", sub=sub)
    assert set(sp) == {"appId", "displayName", "password", "tenant"} and sp["displayName"] == "ci-app"
    assert sp["tenant"] == cli.cloud.services.token_endpoint.tenant_id
    credential = ClientSecretCredential(sp["tenant"], sp["appId"], sp["password"], authority=cli.cloud.url,
                                        disable_instance_discovery=True, connection_verify=cli.cloud.ca)
    client = HardwareSecurityModulesMgmtClient(credential, sub, base_url=cli.cloud.url,
                                               connection_verify=cli.cloud.ca)
    assert list(client.dedicated_hsm.list_by_subscription()) == []
    listed = cli.ok("sp", "list", sub=sub).stdout
    assert sp["appId"] in listed and "ci-app" in listed and sp["password"] not in listed
    human = cli.ok("sp", "create", "-n", "second", sub=sub)
    assert "password:" in human.stdout and "az login --service-principal" in human.stderr
    cli.ok("sp", "delete", sp["appId"], "--yes", sub=sub)
    assert sp["appId"] not in cli.ok("sp", "list", sub=sub).stdout
    cli.fails("sp", "delete", sp["appId"], "--yes", sub=sub, code="ServicePrincipalNotFound")


def test_sp_create_cert_keeps_the_key_on_the_client_side(cli):
    sub = cli.cloud.new_subscription()
    sp = cli.json("sp", "create", "-n", "cert-app", "--create-cert", sub=sub)
    assert sp["password"] is None
    pem = sp["fileWithCertAndPrivateKey"]
    assert pem.startswith(str(cli.client_home)) and stat.S_IMODE(os.stat(pem).st_mode) == 0o600
    credential = CertificateCredential(sp["tenant"], sp["appId"], certificate_path=pem, authority=cli.cloud.url,
                                       disable_instance_discovery=True, connection_verify=cli.cloud.ca)
    assert credential.get_token(ARM_SCOPE).token
    key = open(pem).read().split("-----BEGIN CERTIFICATE-----")[0]
    assert "PRIVATE KEY" in key and key.strip() not in json.dumps(cli.json("sp", "list", sub=sub))
    # --cert takes a file with the key too (as az login does) and sends only the certificate.
    again = cli.json("sp", "create", "-n", "cert-again", "--cert", pem, sub=sub)
    assert CertificateCredential(again["tenant"], again["appId"], certificate_path=pem, authority=cli.cloud.url,
                                 disable_instance_discovery=True, connection_verify=cli.cloud.ca).get_token(ARM_SCOPE)
    cli.fails("sp", "create", "--cert", pem, "--create-cert", sub=sub, code="InvalidArgument")


def test_operator_principals(cli):
    sp = cli.json("sp", "create", "--operator")
    assert sp["appId"] in cli.ok("sp", "list", "--operator").stdout
    sub = cli.cloud.new_subscription()
    assert sp["appId"] not in cli.ok("sp", "list", sub=sub).stdout
    cli.ok("sp", "delete", sp["appId"], "--operator", "--yes")


def test_az_cloud_prints_the_lines_to_paste(cli):
    out = cli.ok("az-cloud").stdout.splitlines()
    assert out == commands(cli.cloud.url, cli.cloud.ca, "hsmcloud")
    assert out[0] == f"export REQUESTS_CA_BUNDLE={cli.cloud.ca}"
    assert out[1] == "az config set core.instance_discovery=false"
    assert out[2] == f"az cloud register --name hsmcloud --endpoint-resource-manager {cli.cloud.url}/"
    config = json.loads(cli.ok("az-cloud", "--cloud-config").stdout)
    assert config["endpoints"]["activeDirectory"] == config["endpoints"]["resourceManager"] == cli.cloud.url + "/"
    assert config["endpoints"]["activeDirectoryResourceId"] == "https://management.azure.com/"
    assert cli.json("az-cloud", "-n", "lab")["commands"][-1] == "az cloud set --name lab"

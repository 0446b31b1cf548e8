"""The Azure CLI from PyPI, unchanged, against the service: register the cloud with the lines
`hsmcloud az-cloud` prints, sign in with a service principal, and create, wait for, show, list
and delete a resource group, a network and a dedicated HSM with the generic ARM commands.

Slow (az starts in about a second and the first run installs it), so marked `azcli`: .ci/run
runs it with `-m azcli`. No az command may leave the machine: every proxy variable points at a
closed loopback port, so a request to anywhere but the service fails instead of going out."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.azure_cli import ensure_installed
from tests.conftest import start_cloud

pytestmark = pytest.mark.azcli

HSM_TYPE = "Microsoft.HardwareSecurityModules/dedicatedHSMs"
LUNA = "SafeNet Luna Network HSM A790"
HSMCLOUD = str(Path(sys.executable).parent / "hsmcloud")


@pytest.fixture(scope="module")
def az_bin() -> Path:
    return ensure_installed()


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    """One service on SQLite: the routes az uses run on both backends in the other tests."""
    c = start_cloud(tmp_path_factory.mktemp("cloud-azcli"), backend="sqlite")
    yield c
    c.stop()
    c.services.store.close()


class Az:
    """Runs az with its own configuration directory and no way off the machine."""

    def __init__(self, az: Path, home: Path, extra_env: dict[str, str]):
        self.az = az
        self.env = dict(os.environ, AZURE_CONFIG_DIR=str(home / "azure"), AZURE_CORE_COLLECT_TELEMETRY="false",
                        AZURE_CORE_SURVEY_MESSAGE="false", AZURE_CORE_NO_COLOR="true",
                        AZURE_EXTENSION_USE_DYNAMIC_INSTALL="no", AZURE_CORE_LOGIN_EXPERIENCE_V2="off",
                        HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
                        NO_PROXY="127.0.0.1,localhost", PATH=f"{az.parent}{os.pathsep}{os.environ['PATH']}",
                        **extra_env)

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([str(self.az), *args, "--only-show-errors"], env=self.env, capture_output=True,
                              text=True, timeout=300)
        if ok:
            assert done.returncode == 0, f"az {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done

    def json(self, *args: str):
        return json.loads(self.run(*args, "-o", "json").stdout or "null")


def test_az_cli_signs_in_and_drives_the_generic_arm_commands(cloud, az_bin, tmp_path):
    sub = cloud.new_subscription()
    state = str(cloud.settings.state_dir)
    sp = json.loads(subprocess.run([HSMCLOUD, "sp", "create", "-n", "az-ci", "--json", "--subscription", sub,
                                    "--state-dir", state, "--endpoint", cloud.url], capture_output=True, text=True,
                                   check=True).stdout)
    lines = subprocess.run([HSMCLOUD, "az-cloud", "--state-dir", state, "--endpoint", cloud.url],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    assert lines[0] == f"export REQUESTS_CA_BUNDLE={shlex.quote(cloud.ca)}"
    az = Az(az_bin, tmp_path, {"REQUESTS_CA_BUNDLE": cloud.ca})
    for line in lines[1:]:  # as a user pastes them: az config set, az cloud register, az cloud set
        words = shlex.split(line)
        assert words[0] == "az", line
        az.run(*words[1:])
    cloud_def = az.json("cloud", "show", "-n", "hsmcloud")
    assert cloud_def["endpoints"]["resourceManager"] == cloud.url + "/" and cloud_def["isActive"]

    accounts = az.json("login", "--service-principal", "-u", sp["appId"], "-p", sp["password"],
                       "--tenant", sp["tenant"])
    assert [(a["id"], a["tenantId"], a["user"]) for a in accounts] == [
        (sub, sp["tenant"], {"name": sp["appId"], "type": "servicePrincipal"})]

    rg = f"az-{uuid.uuid4().hex[:6]}"
    assert az.json("group", "create", "-n", rg, "-l", "eastus")["properties"]["provisioningState"] == "Succeeded"
    net = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/hsm-vnet"
    delegation = [{"name": "hsm", "properties": {"serviceName": HSM_TYPE}}]
    vnet = az.json("resource", "create", "-g", rg, "-n", "hsm-vnet", "--resource-type",
                   "Microsoft.Network/virtualNetworks", "--is-full-object", "--properties", json.dumps({
                       "location": "eastus", "properties": {
                           "addressSpace": {"addressPrefixes": ["10.7.0.0/16"]},
                           "subnets": [{"name": "hsmsubnet", "properties": {"addressPrefix": "10.7.1.0/24",
                                                                            "delegations": delegation}},
                                       {"name": "GatewaySubnet",
                                        "properties": {"addressPrefix": "10.7.255.0/26"}}]}}))
    assert vnet["id"] == net
    gateway_ip = {"name": "default", "properties": {"subnet": {"id": f"{net}/subnets/GatewaySubnet"}}}
    az.run("resource", "create", "-g", rg, "-n", "hsm-gw", "--resource-type",
           "Microsoft.Network/virtualNetworkGateways", "--is-full-object", "--properties", json.dumps({
               "location": "eastus", "properties": {"gatewayType": "ExpressRoute", "ipConfigurations": [gateway_ip],
                                                    "sku": {"name": "Standard", "tier": "Standard"}}}))
    hsm_args = ["-g", rg, "-n", "az-hsm1", "--resource-type", HSM_TYPE]
    created = az.json("resource", "create", *hsm_args, "--is-full-object", "--properties", json.dumps({
        "location": "eastus", "sku": {"name": LUNA}, "tags": {"made-by": "az"},
        "properties": {"networkProfile": {"subnet": {"id": f"{net}/subnets/hsmsubnet"}}}}))
    assert created["properties"]["provisioningState"] == "Succeeded"
    az.run("resource", "wait", "--created", *hsm_args, "--timeout", "120")
    shown = az.json("resource", "show", *hsm_args)
    assert shown["sku"]["name"] == LUNA and shown["tags"] == {"made-by": "az"}
    assert shown["properties"]["stampId"] in ("stamp1", "stamp2")
    assert shown["properties"]["networkProfile"]["networkInterfaces"][0]["privateIpAddress"].startswith("10.7.1.")

    in_group = {r["name"]: r["type"] for r in az.json("resource", "list", "-g", rg)}
    assert in_group == {"hsm-vnet": "Microsoft.Network/virtualNetworks",
                        "hsm-gw": "Microsoft.Network/virtualNetworkGateways",
                        "az-hsm1_HSMHost1Nic": "Microsoft.Network/networkInterfaces"}  # dedicatedHSMs are hidden
    assert [r["name"] for r in az.json("resource", "list", "--resource-type", HSM_TYPE)] == ["az-hsm1"]
    listed = az.json("rest", "--method", "get", "--url", f"/subscriptions/{{subscriptionId}}/resourceGroups/{rg}/"
                     "providers/Microsoft.HardwareSecurityModules/dedicatedHSMs?api-version=2021-11-30")
    assert [h["properties"]["networkProfile"]["subnet"] for h in listed["value"]] == [
        {"id": f"{net}/subnets/hsmsubnet"}]

    az.run("resource", "delete", *hsm_args)
    az.run("resource", "wait", "--deleted", *hsm_args, "--timeout", "120")
    assert az.run("resource", "show", *hsm_args, ok=False).returncode != 0
    az.run("group", "delete", "-n", rg, "--yes")
    assert az.run("group", "exists", "-n", rg).stdout.strip() == "false"
    # The principal's token is gone with it: a deleted principal's az session stops working.
    subprocess.run([HSMCLOUD, "sp", "delete", sp["appId"], "--yes", "--subscription", sub, "--state-dir", state,
                    "--endpoint", cloud.url], check=True, capture_output=True)
    refused = az.run("group", "list", ok=False)
    assert refused.returncode != 0 and "deleted" in refused.stderr

"""A user's own tools against a provisioned HSM: OpenSSH to the appliance, ARM paths in any case."""
from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess

import pytest

from tests.controlplane.test_rules import hsm_url, put_hsm, wait_terminal
from tests.helpers import HSM_API, hsm_body, make_network

SSH = shutil.which("ssh")


@pytest.mark.skipif(SSH is None, reason="OpenSSH client (ssh) is not installed")
def test_openssh_client_reaches_the_allocated_appliance(cloud, tmp_path):
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
        put_hsm(c, sub, "hsm-rg", "ssh1", hsm_body(subnet, ip="10.2.1.30"))
        assert wait_terminal(c, sub, "hsm-rg", "ssh1")["properties"]["provisioningState"] == "Succeeded"
        ep = c.get(hsm_url(sub, "hsm-rg", "ssh1") + "/endpoints", params={"api-version": HSM_API}).json()
    assert ep["privateIpAddresses"] == ["10.2.1.30"]
    initial = ep["initialAdminPassword"]
    askpass = tmp_path / "askpass.sh"

    def answer(password: str) -> None:
        askpass.write_text(f"#!/bin/sh\necho {shlex.quote(password)}\n")
        askpass.chmod(askpass.stat().st_mode | stat.S_IXUSR)
    env = dict(os.environ, SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0")

    def ssh(command: str):
        return subprocess.run([SSH, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                               "-o", "PreferredAuthentications=password,keyboard-interactive",
                               "-o", "LogLevel=ERROR", "-p", str(ep["ports"]["ssh"]), f"admin@{ep['address']}",
                               command], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=60)

    # Any local process could try the factory password first; a handed-over device refuses it.
    answer("PASSWORD")
    denied = ssh("hsm show")
    assert denied.returncode == 255 and "Permission denied" in denied.stderr
    answer(initial)
    refused = ssh("hsm show")
    assert refused.returncode != 0
    assert "my password set" in refused.stdout + refused.stderr
    changed = ssh(f"my password set -oldpassword {initial} -newpassword Tenant-Pass-1")
    assert changed.returncode == 0, changed.stdout + changed.stderr
    answer("Tenant-Pass-1")
    shown = ssh("hsm show")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "7.0.3" in shown.stdout and ep["serial"] in shown.stdout


def test_arm_paths_are_case_insensitive(cloud):
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        subnet = make_network(c, sub)
        put_hsm(c, sub, "hsm-rg", "case1", hsm_body(subnet))
        wait_terminal(c, sub, "hsm-rg", "case1")
        odd = (f"/SUBSCRIPTIONS/{sub}/resourcegroups/HSM-RG/providers/microsoft.hardwaresecuritymodules/"
               "DEDICATEDHSMS/CASE1")
        r = c.get(odd, params={"api-version": HSM_API})
        assert r.status_code == 200 and r.json()["name"] == "case1"
        assert r.json()["id"] == hsm_url(sub, "hsm-rg", "case1")

"""Killing the service mid-operation loses nothing: a restart finishes or fails the operation cleanly."""
from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from hsmcloud.identity.tokens import TokenAuthority
from tests import appliance_ssh
from tests.conftest import fresh_pg_database
from tests.controlplane.test_rules import hsm_url
from tests.helpers import HSM_API, hsm_body, make_network


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request):
    if request.param == "sqlite":
        yield None
        return
    with fresh_pg_database("hsmcloud_crash") as url:
        yield url


class Service:
    """`hsmcloud up` as a separate process, as a user runs it."""

    def __init__(self, state_dir: Path, database_url: str | None, *extra_args: str):
        self.state_dir, self.database_url, self.extra_args = state_dir, database_url, extra_args
        self.proc = None

    def start(self) -> None:
        (self.state_dir / "endpoint.json").unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "hsmcloud.cli.main", "up", "--state-dir", str(self.state_dir), "--port", "0",
               "--step-delay", "0.4", "--gateway-provision-seconds", "0", "--region", "eastus"]
        if self.database_url:
            cmd += ["--database-url", self.database_url]
        cmd += list(self.extra_args)  # later options win
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(600):
            if (self.state_dir / "endpoint.json").exists():
                break
            assert self.proc.poll() is None, self.proc.stderr.read().decode()
            time.sleep(0.05)
        info = json.loads((self.state_dir / "endpoint.json").read_text())
        self.url, self.ca = info["endpoint"], info["ca"]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def http(self, sub=None, operator=False) -> httpx.Client:
        tok = TokenAuthority(self.state_dir).issue(subscription_id=sub, operator=operator)
        return httpx.Client(base_url=self.url, verify=ssl.create_default_context(cafile=self.ca), timeout=30,
                            headers={"Authorization": f"Bearer {tok}"})


def state_of(c, sub, name) -> str:
    return c.get(hsm_url(sub, "hsm-rg", name), params={"api-version": HSM_API}).json()["properties"][
        "provisioningState"]


def wait_for(pred, what: str):
    for _ in range(1200):
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def allocated_devices(svc) -> list[dict]:
    with svc.http(operator=True) as op:
        return [d for d in op.get("/operator/devices").json()["value"] if d["state"] == "allocated"]


def test_kill_during_create_and_delete_then_restart(tmp_path, database_url):
    svc = Service(tmp_path, database_url)
    svc.start()
    try:
        sub = str(uuid.uuid4())
        with svc.http(operator=True) as op:
            assert op.put(f"/operator/subscriptions/{sub}/allowlist").status_code == 200
        with svc.http(sub) as c:
            subnet = make_network(c, sub)
            assert c.put(hsm_url(sub, "hsm-rg", "crash1"), params={"api-version": HSM_API},
                         json=hsm_body(subnet)).status_code == 201
            wait_for(lambda: state_of(c, sub, "crash1") in ("Connecting", "Provisioning"), "allocation")
        svc.kill()  # the device is allocated, the deployment is half done

        svc.start()
        with svc.http(sub) as c:
            wait_for(lambda: state_of(c, sub, "crash1") in ("Succeeded", "Failed"), "create to finish")
            assert state_of(c, sub, "crash1") == "Succeeded"
            ep = c.get(hsm_url(sub, "hsm-rg", "crash1") + "/endpoints", params={"api-version": HSM_API}).json()
        held = allocated_devices(svc)
        assert [d["serial"] for d in held] == [ep["serial"]]  # exactly one device, not leaked, not doubled
        appliance_ssh.take_ownership(ep)
        svc.stop()

        # A clean restart keeps the resource and the appliance's own state (the changed password).
        svc.start()
        with svc.http(sub) as c:
            assert state_of(c, sub, "crash1") == "Succeeded"
            ep = c.get(hsm_url(sub, "hsm-rg", "crash1") + "/endpoints", params={"api-version": HSM_API}).json()
        [(code, text)] = appliance_ssh.run(ep["address"], ep["ports"]["ssh"], appliance_ssh.ADMIN_PASSWORD, "hsm show")
        assert code == 0 and "tenant" in text
        appliance_ssh.zeroize_by_bad_logins(ep["address"], ep["ports"]["ssh"])
        with svc.http(sub) as c:
            r = c.delete(hsm_url(sub, "hsm-rg", "crash1"), params={"api-version": HSM_API})
            assert r.status_code == 202, r.text
        svc.kill()  # mid-deletion

        svc.start()
        with svc.http(sub) as c:
            wait_for(lambda: c.get(hsm_url(sub, "hsm-rg", "crash1"), params={"api-version": HSM_API}).status_code
                     == 404, "delete to finish")
        assert allocated_devices(svc) == []
        with svc.http(operator=True) as op:
            device = next(d for d in op.get("/operator/devices").json()["value"] if d["serial"] == ep["serial"])
            assert device["state"] == "free" and device["lastCheckedPristineAt"]
    finally:
        svc.stop()


def test_ctrl_c_stops_cleanly_with_a_client_still_connected(tmp_path):
    svc = Service(tmp_path, None)
    svc.start()
    client = svc.http(operator=True)  # a keep-alive TLS connection, idle after this request
    try:
        assert client.get("/operator/stamps").status_code == 200
        svc.proc.send_signal(signal.SIGINT)
        assert svc.proc.wait(timeout=60) == 0
        err = svc.proc.stderr.read().decode()
        assert "graceful shutdown exceeded" not in err and "Traceback" not in err, err
    finally:
        client.close()
        svc.stop()

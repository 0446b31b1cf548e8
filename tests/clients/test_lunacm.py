"""`hsmcloud lunacm` against a real appliance core behind its real NTLS listener.

The client side is set up as a user does it: `hsmcloud client cert new`, the certificate registered
and assigned on the appliance, `hsmcloud client server add` with the appliance's server.pem, and
`hsmcloud client slot add`; then LunaCM initializes the partition and its roles over NTLS."""
from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from hsmcloud.appliances.luna.core.appliance_core import ApplianceCore
from hsmcloud.appliances.luna.core.passwords import hash_password
from hsmcloud.appliances.luna.lunash.shell import ShellSession
from hsmcloud.appliances.luna.ntls.dispatcher import NtlsDispatcher
from hsmcloud.appliances.luna.ntls.server import NtlsServer
from hsmcloud.cli.main import app

SERIAL = "154799001"
SO_PASSWORD = "hsm-so-secret-1"
PO = "Po-Passw0rd-1"
CO1, CO2 = "Co-Passw0rd-1", "Co-Passw0rd-2"
CU = "Cu-Passw0rd-1"


class _Terminal:
    interactive = False

    def __init__(self):
        self.output = []

    def write(self, text):
        self.output.append(text)

    async def ask(self, prompt, *, secret=False):
        raise AssertionError("no prompt expected")


def lunash(core, line):
    session = getattr(core, "_test_shell", None)
    if session is None:
        session = core._test_shell = ShellSession(core)
    terminal = _Terminal()
    status = asyncio.run(session.execute(line, terminal))
    assert status == 0, "".join(terminal.output)
    return "".join(terminal.output)


@pytest.fixture
def appliance(tmp_path, monkeypatch):
    monkeypatch.setenv("HSMCLOUD_CLIENT_HOME", str(tmp_path / "client-home"))
    monkeypatch.delenv("HSMCLOUD_CONF", raising=False)
    core = ApplianceCore.open(tmp_path / "appliance", SERIAL)
    core.state.set_admin_password(hash_password("Adm1n-Passw0rd"))  # the admin's first login is not tested here
    lunash(core, f"hsm init -label lab -domain labDomain -password {SO_PASSWORD}")
    lunash(core, f"hsm login -password {SO_PASSWORD}")
    lunash(core, "partition create -partition app1")
    server = NtlsServer(core, NtlsDispatcher)
    port = server.start("127.0.0.1", 0)
    yield core, port, tmp_path
    server.stop()
    core.close()


def cli(*args):
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    return result


def connect_client(core, port, tmp_path):
    made = json.loads(cli("client", "cert", "new", "--name", "app1host", "--key-type", "ec", "--json").stdout)
    core.clients.register("app1host", hostname="app1host", certificate_pem=open(made["certificate"], "rb").read())
    core.clients.assign("app1host", core.partitions.by_name("app1").serial)
    server_pem = tmp_path / "server.pem"
    server_pem.write_text(core.clients.server_certificate().certificate_pem)
    assert cli("client", "server", "add", "--address", "127.0.0.1", "--port", port, "--server-cert", server_pem,
               "--name", "hsm1").exit_code == 0
    assert cli("client", "slot", "add", "--server", "hsm1", "--partition", "app1").exit_code == 0


def lunacm(*commands, keep_going=False):
    args = ["lunacm"] + [a for cmd in commands for a in ("-c", cmd)] + (["--keep-going"] if keep_going else [])
    return cli(*args)


def test_lunacm_initializes_the_partition_and_its_roles_over_ntls(appliance):
    core, port, tmp_path = appliance
    connect_client(core, port, tmp_path)
    serial = core.partitions.by_name("app1").serial

    r = lunacm("slot list")
    assert r.exit_code == 0, r.stdout
    assert "Slot Id ->" in r.stdout and serial in r.stdout and "(not initialized)" in r.stdout

    r = lunacm("partition init -label app1-label -password " + PO,
               "role login -name po -password " + PO,
               "role init -name co -password " + CO1,
               "role logout",
               "role login -name co -password " + CO1,
               "role changepw -name co -oldpw " + CO1 + " -newpw " + CO2,
               "role init -name cu -password " + CU,
               "role list")
    assert r.exit_code == 0, r.stdout
    assert r.stdout.count("Command Result : No Error") == 8
    assert "must be changed now" in r.stdout  # the CO's first login after role init
    status = core.partitions.get(serial)
    assert status.initialized and status.label == "app1-label"
    roles = {role.value: s for role, s in status.roles.items()}
    assert roles["co"].initialized and not roles["co"].must_change and roles["cu"].initialized

    # The CO logs in with the changed password in a new LunaCM (a new application).
    r = lunacm("role login -name co -password " + CO2, "partition showinfo", "partition showpolicies")
    assert r.exit_code == 0, r.stdout
    assert "Partition Label ->" in r.stdout and "app1-label" in r.stdout
    assert " 20: " in r.stdout  # max failed user logins is listed


def test_lunacm_reports_the_appliance_error_codes_and_stops(appliance):
    core, port, tmp_path = appliance
    connect_client(core, port, tmp_path)
    lunacm("partition init -label app1 -password " + PO, "role login -name po -password " + PO,
           "role init -name co -password " + CO1)
    r = lunacm("role login -name co -password wrong-password", "slot list")
    assert r.exit_code == 1
    assert "CKR_PIN_INCORRECT" in r.stdout and "Slot Id ->" not in r.stdout  # stopped at the failure
    status = core.partitions.get(core.partitions.by_name("app1").serial)
    assert {role.value: s.failed_logins for role, s in status.roles.items()}["co"] == 1
    r = lunacm("role login -name xx -password a")
    assert r.exit_code == 1 and "is not a role" in r.stdout
    r = lunacm("role bogus")
    assert r.exit_code == 1 and "not a valid subcommand" in r.stdout
    r = lunacm("partition init -label app1 -password " + PO)  # destructive without -force, no terminal
    assert r.exit_code == 1 and "-force" in r.stdout


def test_lunacm_without_a_registered_certificate_says_what_to_fix(appliance):
    core, port, tmp_path = appliance
    connect_client(core, port, tmp_path)
    core.clients.delete("app1host")
    r = lunacm("slot list")
    assert "unreachable: The TLS handshake with hsm1" in r.stdout and "registered" in r.stdout


def _fresh_partition(label, *extra):
    """LunaCM commands that (re-)initialize the partition and leave the CO logged in."""
    return ("partition init -label " + label + " -password " + PO + " -force" + "".join(extra),
            "role login -name po -password " + PO, "role init -name co -password " + CO1, "role logout",
            "role login -name co -password " + CO1, "role changepw -name co -oldpw " + CO1 + " -newpw " + CO2)


def test_lunacm_backs_up_and_restores_only_within_the_cloning_domain(appliance):
    import os
    import stat

    core, port, tmp_path = appliance
    connect_client(core, port, tmp_path)
    serial = core.partitions.by_name("app1").serial
    assert lunacm(*_fresh_partition("app1")).exit_code == 0
    status = core.partitions.get(serial)
    core.keystore.create(serial, generation=status.generation, attributes={
        0x000: 0, 0x001: True, 0x003: "backed-up", 0x011: b"\x01\x02 some data"})  # a token data object
    backup = tmp_path / "app1.bak"

    r = lunacm("role login -name co -password " + CO2, "partition backup -file " + str(backup), "partition showinfo")
    assert r.exit_code == 0, r.stdout
    assert stat.S_IMODE(os.stat(backup).st_mode) == 0o600 and b"some data" not in backup.read_bytes()
    assert "Cloning Domain ID ->" in r.stdout and "Private Key Cloning (policy 0) ->" in r.stdout
    r = lunacm("role login -name co -password " + CO2, "partition backup -file " + str(backup))
    assert r.exit_code == 1 and "exists already" in r.stdout

    # the partition is re-initialized (its objects are gone) in the same domain: the backup restores
    r = lunacm(*_fresh_partition("app1-again"), "partition restore -file " + str(backup))
    assert r.exit_code == 0, r.stdout
    assert "Restored 1 object(s)" in r.stdout
    status = core.partitions.get(serial)
    assert [rec.attributes[0x011] for rec in core.keystore.objects(serial)] == [b"\x01\x02 some data"]

    # in another cloning domain it is refused, with a clear error, and nothing changes
    r = lunacm(*_fresh_partition("app1-other", " -domain otherDomain"), "partition restore -file " + str(backup))
    assert r.exit_code == 1
    assert "not in the same cloning domain" in r.stdout and "CKR_WRAPPED_KEY_INVALID" in r.stdout
    assert core.keystore.objects(serial) == []


def test_lunacm_clones_between_two_appliances_of_one_domain(appliance, tmp_path):
    import os

    from hsmcloud.clients.luna import config as client_config

    core, port, _ = appliance
    connect_client(core, port, tmp_path)
    other = ApplianceCore.open(tmp_path / "appliance2", "154799002")
    other.state.set_admin_password(hash_password("Adm1n-Passw0rd"))
    lunash(other, f"hsm init -label lab2 -domain labDomain -password {SO_PASSWORD}")
    lunash(other, f"hsm login -password {SO_PASSWORD}")
    lunash(other, "partition create -partition app1")
    server = NtlsServer(other, NtlsDispatcher)
    other_port = server.start("127.0.0.1", 0)
    try:
        mine = client_config.load().client
        other.clients.register("app1host", hostname="app1host", certificate_pem=open(mine.certificate, "rb").read())
        other.clients.assign("app1host", other.partitions.by_name("app1").serial)
        pem = tmp_path / "server2.pem"
        pem.write_text(other.clients.server_certificate().certificate_pem)
        assert cli("client", "server", "add", "--address", "127.0.0.1", "--port", other_port, "--server-cert", pem,
                   "--name", "hsm2").exit_code == 0
        assert cli("client", "slot", "add", "--server", "hsm2", "--partition", "app1").exit_code == 0
        r = lunacm("slot set -slot 0", *_fresh_partition("app1"), "slot set -slot 1", *_fresh_partition("app1"))
        assert r.exit_code == 0, r.stdout
        source = core.partitions.by_name("app1")
        value = os.urandom(32)
        core.keystore.create(source.serial, generation=source.generation, attributes={
            0x000: 4, 0x100: 0x1F, 0x001: True, 0x003: "shared-aes", 0x161: 32, 0x103: True}, secret=value)
        core.keystore.create(source.serial, generation=source.generation, attributes={
            0x000: 0, 0x001: True, 0x003: "shared-data", 0x011: b"public data"})
        login_both = ("slot set -slot 1", "role login -name co -password " + CO2,
                      "slot set -slot 0", "role login -name co -password " + CO2)
        r = lunacm(*login_both, "partition clone -slot 1", "partition showinfo")
        assert r.exit_code == 0, r.stdout
        assert "Cloned 2 object(s) from slot 0 to slot 1." in r.stdout
        target = other.partitions.by_name("app1").serial
        assert sorted((rec.secret or b"") for rec in other.keystore.objects(target)) == sorted([b"", value])
        r = lunacm(*login_both, "partition clone -slot 0")
        assert r.exit_code == 1 and "current slot" in r.stdout

        # the second appliance's partition moves to another cloning domain: cloning is refused
        r = lunacm("slot set -slot 1", *_fresh_partition("app1", " -domain elsewhere"))
        assert r.exit_code == 0, r.stdout
        r = lunacm(*login_both, "partition clone -slot 1")
        assert r.exit_code == 1
        assert "not in the same cloning domain" in r.stdout and "CKR_WRAPPED_KEY_INVALID" in r.stdout
        assert other.keystore.objects(target) == []
    finally:
        server.stop()
        other.close()

"""A tenant connects an application host to its dedicated HSM: `hsmcloud client connect`, then LunaCM.

Everything goes through the real paths: the service's `/endpoints` (address, SSH and NTLS ports),
the appliance's SSH shell and SFTP (certificate upload, `client register`, `client assignPartition`,
`server.pem` download), and NTLS for LunaCM."""
from __future__ import annotations

import json
import stat

import pytest

from hsmcloud.clients.luna.ntls_client import NtlsClient
from hsmcloud.protocols.pkcs11 import constants as c
from tests import appliance_ssh

RG = "connect-rg"
PO, CO = "Po-Passw0rd-1", "Co-Passw0rd-1"


@pytest.fixture(scope="module")
def owned_hsm(cli, cli_cloud):
    sub = cli_cloud.new_subscription()
    subnet = cli.json("network", "create", "-g", RG, sub=sub)["subnetId"]
    cli.ok("hsm", "create", "-n", "luna1", "-g", RG, "--subnet", f"id={subnet}", sub=sub)
    ep = cli.json("hsm", "endpoints", "-n", "luna1", "-g", RG, sub=sub)
    appliance_ssh.take_ownership(ep)
    [(code, text), (code2, text2)] = appliance_ssh.run(
        ep["address"], ep["ports"]["ssh"], appliance_ssh.ADMIN_PASSWORD,
        f"hsm login -password {appliance_ssh.SO_PASSWORD}", "partition create -partition app1")
    assert code == 0 and code2 == 0, text + text2
    return {"sub": sub, "ep": ep}


def test_endpoints_give_the_ntls_port(cli, owned_hsm):
    ep = owned_hsm["ep"]
    assert isinstance(ep["ports"]["ntls"], int) and ep["ports"]["ntls"] > 0
    human = cli.ok("hsm", "endpoints", "-n", "luna1", "-g", RG, sub=owned_hsm["sub"])
    assert "ntls port" in human.stdout and "hsmcloud client connect" in human.stderr


def test_connect_registers_the_client_and_lunacm_sets_up_the_partition(cli, owned_hsm):
    sub, ep = owned_hsm["sub"], owned_hsm["ep"]
    done = cli.json("client", "connect", "-g", RG, "-n", "luna1", "--partition", "app1", "--client-name", "apphost",
                    "--admin-password", appliance_ssh.ADMIN_PASSWORD, sub=sub)
    assert done["slot"] == 0 and done["client"] == "apphost" and done["port"] == ep["ports"]["ntls"]
    # The appliance knows the client and its partition now.
    [(code, shown)] = appliance_ssh.run(ep["address"], ep["ports"]["ssh"], appliance_ssh.ADMIN_PASSWORD,
                                        "client show -client apphost")
    assert code == 0 and "app1" in shown
    # The client home holds the pinned server certificate, the key and the SSH host key, all private.
    home = cli.client_home
    for path in home.rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path
    assert (home / "cert" / "server" / "luna1.pem").exists() and (home / "known_hosts").exists()
    # Running it again changes nothing and keeps slot 0.
    again = cli.json("client", "connect", "-g", RG, "-n", "luna1", "--partition", "app1",
                     "--admin-password", appliance_ssh.ADMIN_PASSWORD, sub=sub)
    assert again["slot"] == 0

    env = {"HSMCLOUD_CLIENT_HOME": str(home)}
    # Policy 21 off first, so the CO's first password need not be changed before use.
    r = cli("lunacm", "-c", f"partition init -label app1 -password {PO}", "-c", f"role login -name po -password {PO}",
            "-c", "partition changepolicy -policy 21 -value 0", "-c", f"role init -name co -password {CO}", env=env)
    assert r.exit_code == 0, r.stdout
    assert r.stdout.count("Command Result : No Error") == 4

    # An application now uses the slot over NTLS as its Crypto Officer.
    cfg = json.loads(cli.ok("client", "config", "show", "--json").stdout)
    server = cfg["servers"][0]
    with NtlsClient.connect(server["address"], server["port"], certificate=cfg["client"]["certificate"],
                            private_key=cfg["client"]["privateKey"], server_certificate=server["certificate"]) as nt:
        (partition,) = nt.list_partitions()
        session = nt.open_session(partition.serial)
        nt.login(session, c.CKU_USER, CO.encode())
        assert len(nt.generate_random(session, 32)) == 32


def test_connect_refuses_a_wrong_admin_password_and_a_payment_hsm(cli, owned_hsm, cli_cloud):
    sub = owned_hsm["sub"]
    line = cli.fails("client", "connect", "-g", RG, "-n", "luna1", "--partition", "app1", "--client-name", "other",
                     "--admin-password", "Wrong-Passw0rd!", sub=sub, env={"HSMCLOUD_CLIENT_HOME": str(
                         cli.client_home.parent / "other-home")})
    assert line.startswith("error: AuthenticationFailed: ")

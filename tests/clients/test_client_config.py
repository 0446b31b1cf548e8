"""The tenant-side client configuration and `hsmcloud client` cert/server/slot/config commands."""
from __future__ import annotations

import datetime
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner

from hsmcloud.cli.main import app
from hsmcloud.clients.luna import certificates, config as client_config
from hsmcloud.clients.luna.config import ConfigError


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "client-home"
    monkeypatch.setenv("HSMCLOUD_CLIENT_HOME", str(h))
    monkeypatch.delenv("HSMCLOUD_CONF", raising=False)
    return h


def run(*args, env=None):
    result = CliRunner().invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)
    return result


def ok(*args):
    r = run(*args)
    assert r.exit_code == 0, (r.stdout, r.stderr)
    return r


def error_line(*args) -> str:
    r = run(*args)
    assert r.exit_code == 1, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def server_pem(tmp_path: Path, name="appliance") -> Path:
    made = certificates.create_client_certificate(name, directory=tmp_path / "fake-server", key_type="ec")
    return made.certificate


def test_cert_new_creates_private_key_and_certificate_and_configures_identity(home):
    data = json.loads(ok("client", "cert", "new", "--name", "app-host1", "--json").stdout)
    cert_path, key_path = Path(data["certificate"]), Path(data["privateKey"])
    assert cert_path.name == "app-host1.pem" and key_path.name == "app-host1Key.pem"
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert.subject == cert.issuer  # self-signed, as vtl createCert makes them
    assert "app-host1" in cert.subject.rfc4514_string()
    for p in (cert_path, key_path, Path(data["config"])):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    for d in (home, home / "cert", home / "cert" / "client"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    cfg = client_config.load()
    assert cfg.client.name == "app-host1" and cfg.client.private_key == key_path


def test_cert_new_refuses_to_overwrite_without_force(home):
    ok("client", "cert", "new", "--name", "c1")
    first = (home / "cert" / "client" / "c1.pem").read_bytes()
    assert error_line("client", "cert", "new", "--name", "c1").startswith("error: CertificateExists: ")
    assert (home / "cert" / "client" / "c1.pem").read_bytes() == first
    ok("client", "cert", "new", "--name", "c1", "--force")
    assert (home / "cert" / "client" / "c1.pem").read_bytes() != first


@pytest.mark.parametrize("args, code", [
    (["--name", "bad name"], "InvalidName"),
    (["--name", "../escape"], "InvalidName"),
    (["--name", "ok", "--key-type", "dsa"], "InvalidKeyType"),
    (["--name", "ok", "--days", "0"], "InvalidValidity"),
])
def test_cert_new_bad_input_changes_nothing(home, args, code):
    assert error_line("client", "cert", "new", *args).startswith(f"error: {code}: ")
    assert not (home / "client.conf").exists()


def test_server_add_pins_the_certificate_and_slots_follow(home, tmp_path):
    pem = server_pem(tmp_path)
    ok("client", "server", "add", "--address", "127.1.2.10", "--server-cert", pem, "--name", "hsm1")
    stored = home / "cert" / "server" / "hsm1.pem"
    assert stored.read_bytes() == pem.read_bytes()
    assert json.loads(ok("client", "slot", "add", "--server", "hsm1", "--partition", "7001001", "--json")
                      .stdout)["slot"] == 0
    assert json.loads(ok("client", "slot", "add", "--server", "hsm1", "--partition", "7001002", "--json")
                      .stdout)["slot"] == 1
    shown = json.loads(ok("client", "config", "show", "--json").stdout)
    assert [s["partition"] for s in shown["slots"]] == ["7001001", "7001002"]
    assert shown["servers"][0]["port"] == 1792 and shown["servers"][0]["fingerprint"].count(":") == 31
    ok("client", "slot", "remove", "--slot", "0")
    assert [s.partition for s in client_config.load().slots] == ["7001002"]
    ok("client", "server", "remove", "--name", "hsm1")
    cfg = client_config.load()
    assert cfg.servers == {} and cfg.slots == []


@pytest.mark.parametrize("address", ["10.2.1.4", "192.168.1.1", "example.com"])
def test_server_add_refuses_addresses_that_are_not_loopback(home, tmp_path, address):
    pem = server_pem(tmp_path)
    assert error_line("client", "server", "add", "--address", address, "--server-cert", pem) \
        .startswith("error: InvalidAddress: ")
    assert not (home / "client.conf").exists()


def test_server_add_refuses_a_file_that_is_not_a_certificate(home, tmp_path):
    junk = tmp_path / "server.pem"
    junk.write_text("not a certificate")
    assert error_line("client", "server", "add", "--address", "127.0.0.5", "--server-cert", junk) \
        .startswith("error: InvalidCertificate: ")
    assert error_line("client", "server", "add", "--address", "127.0.0.5", "--server-cert", tmp_path / "nope.pem") \
        .startswith("error: CertificateNotFound: ")


def test_slot_add_needs_a_configured_server(home):
    assert error_line("client", "slot", "add", "--server", "ghost", "--partition", "1") \
        .startswith("error: ServerNotFound: ")


def test_hsmcloud_conf_points_at_another_file(home, tmp_path, monkeypatch):
    other = tmp_path / "elsewhere" / "app.conf"
    monkeypatch.setenv("HSMCLOUD_CONF", str(other))
    ok("client", "cert", "new", "--name", "c2")
    assert other.exists() and not (home / "client.conf").exists()
    assert client_config.load().client.name == "c2"


def test_config_file_round_trips_and_reports_its_errors_by_line(tmp_path):
    text = """
# a comment
[client]
name = c1
certificate = /tmp/c1.pem
private_key = /tmp/c1Key.pem
receive_timeout_seconds = 30

[server hsm1]
address = 127.0.0.9
certificate = /tmp/hsm1.pem

[slot]
server = hsm1
partition = 123
"""
    cfg = client_config.parse(text)
    assert cfg.receive_timeout_seconds == 30 and cfg.servers["hsm1"].port == 1792
    assert client_config.parse(cfg.render()) == cfg
    with pytest.raises(ConfigError, match="line 3"):
        client_config.parse("[client]\nname c1\n[x]\n".replace("[x]\n", "").replace("name c1", "\nname c1"))
    with pytest.raises(ConfigError, match="unknown section"):
        client_config.parse("[bogus]\n")
    with pytest.raises(ConfigError, match="has no \\[server\\] section"):
        client_config.parse("[slot]\nserver = nope\npartition = 1\n")
    with pytest.raises(ConfigError, match="receive_timeout_seconds must be 1 to 300"):
        client_config.parse("[client]\nreceive_timeout_seconds = 0\n")


def test_config_show_flags_an_expired_client_certificate(home):
    made = certificates.create_client_certificate(
        "old", days=1, not_before=datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=10))
    cfg = client_config.load()
    cfg.client = client_config.ClientIdentity(name="old", certificate=made.certificate, private_key=made.private_key)
    client_config.save(cfg)
    shown = json.loads(ok("client", "config", "show", "--json").stdout)
    assert shown["client"]["problem"].startswith("expired")


HA_TEXT = """[client]
ha_only = yes
[server a]
address = 127.0.0.1
certificate = a.pem
[server b]
address = 127.0.0.2
certificate = b.pem
[slot]
server = a
partition = app1
[slot]
server = b
partition = app1
[hagroup prod]
serial = 1154700001001
members = a/app1, b/app1
standby = b/app1
retry_count = -1
interval_seconds = 120
"""


def test_ha_groups_round_trip_and_their_members_must_be_slots(tmp_path):
    cfg = client_config.parse(HA_TEXT)
    group = cfg.hagroup("PROD")
    assert (cfg.ha_only, group.members, group.standby, group.retry_count, group.interval_seconds,
            group.recovery_request) == (True, ["a/app1", "b/app1"], ["b/app1"], -1, 120, 0)
    again = client_config.parse(cfg.render())
    assert again.hagroups == cfg.hagroups and again.ha_only
    for bad, message in ((HA_TEXT.replace("b/app1, ", "b/app1, c/app9, ").replace("members = a/app1, b/app1",
                                                                                   "members = a/app1, c/app9"),
                          "not a [slot]"),
                         (HA_TEXT.replace("interval_seconds = 120", "interval_seconds = 30"), "60 to 1200"),
                         (HA_TEXT.replace("retry_count = -1", "retry_count = -2"), "retry_count"),
                         (HA_TEXT.replace("standby = b/app1", "standby = a/app2"), "not a [slot]")):
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            client_config.parse(bad)


def test_a_slot_in_an_ha_group_cannot_be_removed(tmp_path):
    cfg = client_config.parse(HA_TEXT)
    with pytest.raises(ConfigError) as exc:
        cfg.remove_slot(1)
    assert exc.value.code == "SlotInHAGroup" and len(cfg.slots) == 2
    with pytest.raises(ConfigError):
        cfg.remove_server("a")
    assert set(cfg.servers) == {"a", "b"}

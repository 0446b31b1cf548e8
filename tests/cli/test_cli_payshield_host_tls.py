"""`hsmcloud payshield host-tls ...`: a tenant locks its payment HSM's host ports to its own clients."""
from __future__ import annotations

import datetime
import socket
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

RG = "tls-rg"
pytestmark = pytest.mark.filterwarnings("ignore:.*TripleDES.*")


def certificate(subject: str, key, issuer_name: str, issuer_key, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(issuer_key, hashes.SHA256()))


def host_nc(address: str, port: int, context: ssl.SSLContext | None) -> bytes:
    """NC over TCP, TLS when a context is given; the response without its header."""
    with socket.create_connection((address, port), timeout=10) as raw:
        sock = context.wrap_socket(raw, server_hostname=address) if context else raw
        sock.sendall(b"\x00\x06HEADNC")
        data = b""
        while len(data) < 2 or len(data) < 2 + int.from_bytes(data[:2], "big"):
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionResetError("closed by the appliance")
            data += chunk
        return data[6:]


def test_host_tls_commands_lock_the_host_ports_to_the_tenants_clients(cli, cli_cloud, tmp_path):
    sub = cli_cloud.new_subscription()
    subnet = cli.json("network", "create", "-g", RG, sub=sub)["subnetId"]
    cli.json("hsm", "create", "-n", "tls1", "-g", RG, "--subnet", subnet, "--sku", "payShield10K_LMK1_CPS60", sub=sub)
    ep = cli.json("hsm", "endpoints", "-n", "tls1", "-g", RG, sub=sub)
    target = ("-g", RG, "-n", "tls1")

    ca_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate("Apps CA", ca_key, "Apps CA", ca_key, ca=True)
    client = certificate("payments-app", client_key, "Apps CA", ca_key, ca=False)
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "client.pem").write_bytes(client.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "client.key").write_bytes(client_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    line = cli.fails("payshield", "host-tls", "set", *target, "--host1", "mutual", sub=sub,
                     code="NoTrustedClientCertificate")
    assert "host-tls trust" in line
    cli.fails("payshield", "host-tls", "set", *target, "--host1", "strict", sub=sub, code="InvalidArgument")
    cli.fails("payshield", "host-tls", "trust", *target, "--cert", str(tmp_path / "client.key"), sub=sub,
              code="InvalidCertificate")

    trusted = cli.json("payshield", "host-tls", "trust", *target, "--cert", str(tmp_path / "ca.pem"), sub=sub)
    assert [t["subject"] for t in trusted["trusted"]] == ["CN=Apps CA"]
    shown = cli.json("payshield", "host-tls", "set", *target, "--host1", "mutual", "--host2", "on", sub=sub)
    assert shown["ports"] == {"host1": "mutual", "host2": "on"}
    cli.ok("payshield", "host-tls", "server-cert", *target, "--out", str(tmp_path / "server.pem"), sub=sub)
    human = cli.ok("payshield", "host-tls", "show", *target, sub=sub).stdout
    assert "mutual" in human and "CN=Apps CA" in human and shown["server_certificate"]["fingerprint"] in human

    pinned = ssl.create_default_context(cafile=str(tmp_path / "server.pem"))
    mutual = ssl.create_default_context(cafile=str(tmp_path / "server.pem"))
    mutual.load_cert_chain(tmp_path / "client.pem", tmp_path / "client.key")
    host1, host2 = ep["ports"]["host1"], ep["ports"]["host2"]
    assert host_nc(ep["address"], host1, mutual)[:4] == b"ND13"  # answered (no LMK loaded yet: error 13)
    assert host_nc(ep["address"], host2, pinned)[:4] == b"ND13"
    for port, context in ((host1, pinned), (host1, None), (host2, None)):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            host_nc(ep["address"], port, context)

    fingerprint = trusted["trusted"][0]["fingerprint"]
    cli.fails("payshield", "host-tls", "untrust", *target, "--fingerprint", fingerprint, sub=sub,
              code="NoTrustedClientCertificate")
    cli.json("payshield", "host-tls", "set", *target, "--host1", "off", "--host2", "off", sub=sub)
    assert cli.json("payshield", "host-tls", "untrust", *target, "--fingerprint", fingerprint, sub=sub)["trusted"] == []
    assert host_nc(ep["address"], host1, None)[:4] == b"ND13"
    cli.ok("payshield", "release", *target, "--yes", sub=sub)

"""TLS on the host ports, with client certificates: real TLS clients (Python ssl) send real frames."""

from __future__ import annotations

import asyncio
import datetime
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from payshield_helpers import (
    HostClient,
    allocate,
    config,
    guarded,
    load_lmk,
    management,
    ok,
    running,
    tenant,
)

CVK = b"U9B4934384B19946B040CD702B4D58145"  # under the Thales test LMK (ThalesSim vector)
CW = b"CW" + CVK + b"4123456789012345;8701101"


class Issuer:
    """A certificate authority of the tenant's host applications."""

    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = self._build(self.name, self.name, self.key.public_key(), ca=True)

    def _build(self, subject, issuer, public_key, *, ca: bool) -> x509.Certificate:
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def client(self, common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        return self._build(subject, self.name, key.public_key(), ca=False), key

    @property
    def pem(self) -> str:
        return pem(self.cert)


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def client_context(tmp_path, server_pem: str, identity=None) -> ssl.SSLContext:
    """A client that pins the appliance's certificate and, if given, presents (cert, key)."""
    context = ssl.create_default_context(cadata=server_pem)
    if identity is not None:
        cert, key = identity
        cert_file, key_file = tmp_path / f"{cert.serial_number}.crt", tmp_path / f"{cert.serial_number}.key"
        cert_file.write_text(pem(cert))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        context.load_cert_chain(cert_file, key_file)
    return context


async def connect(appliance, which: int, context: ssl.SSLContext | None) -> HostClient:
    port = appliance.host1_port if which == 1 else appliance.host2_port
    address = appliance.config.address if which == 1 else appliance.host2_address
    return await HostClient.connect(address, port, ssl=context)


async def refused(appliance, which: int, context: ssl.SSLContext | None) -> bool:
    """True if a host command over this connection gets no answer: the handshake failed."""
    try:
        client = await connect(appliance, which, context)
        await client.call(b"NC")
    except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
        return True
    await client.close()
    return False


async def ready(appliance) -> str:
    await allocate(appliance)
    return (await load_lmk(appliance))["check_value"]


async def tls_errors(appliance) -> list[str]:
    async with tenant(appliance) as api:
        entries = (await api.get("/logs/error")).json()["entries"]
    return [f"{e['source']} {e['message']}" for e in entries if e["error_code"] == "tls"]


def test_mutual_tls_serves_trusted_clients_and_refuses_the_rest(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            check_value = await ready(appliance)
            apps, stranger = Issuer("Tenant host applications CA"), Issuer("Someone else's CA")
            async with tenant(appliance) as api:
                view = (await api.get("/host-tls")).json()
                assert view == {"ports": {"host1": "off", "host2": "off"}, "trusted": [], "server_certificate": None}
                server_pem = (await api.get("/host-tls/server-certificate")).text
                trusted = (await api.post("/host-tls/trusted", json={"certificate": apps.pem})).json()["trusted"]
                assert [(t["subject"], t["ca"]) for t in trusted] == [("CN=Tenant host applications CA", True)]
                assert trusted[0]["fingerprint"] == apps.cert.fingerprint(hashes.SHA256()).hex()
                response = await api.put("/host-tls", json={"host1": "mutual", "host2": "mutual"})
                assert response.status_code == 200, response.text
                assert response.json()["ports"] == {"host1": "mutual", "host2": "mutual"}
                assert response.json()["server_certificate"]["pem"] == server_pem
            good = client_context(tmp_path, server_pem, apps.client("payments-app"))
            for which in (1, 2):
                client = await connect(appliance, which, good)
                assert await client.call(b"NC") == b"ND00" + check_value.encode() + b"1500-1803"
                assert ok(await client.call(CW), b"CW") == "561"
                await client.close()
            # No certificate, another CA's certificate, plain TCP: no answer on either port.
            assert await refused(appliance, 1, client_context(tmp_path, server_pem))
            assert await refused(appliance, 2, client_context(tmp_path, server_pem, stranger.client("intruder")))
            assert await refused(appliance, 1, None)
            errors = await tls_errors(appliance)
            assert any(e.startswith("HOST1") and "presented no certificate" in e for e in errors), errors
            assert any(e.startswith("HOST2") and "not trusted" in e for e in errors), errors
            assert any(e.startswith("HOST1") and "does not speak TLS" in e for e in errors), errors

    guarded(scenario())


def test_a_single_client_certificate_can_be_trusted_and_other_ports_keep_their_mode(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await ready(appliance)
            issuer = Issuer("A CA the tenant does not trust as a whole")
            chosen, other = issuer.client("the-one-app"), issuer.client("another-app")
            async with tenant(appliance) as api:
                server_pem = (await api.get("/host-tls/server-certificate")).text
                assert (await api.post("/host-tls/trusted", json={"certificate": pem(chosen[0])})).status_code == 200
                assert (await api.put("/host-tls", json={"host1": "mutual", "host2": "on"})).status_code == 200
            client = await connect(appliance, 1, client_context(tmp_path, server_pem, chosen))
            assert (await client.call(b"NC"))[:4] == b"ND00"
            await client.close()
            assert await refused(appliance, 1, client_context(tmp_path, server_pem, other))
            # HOST2 is TLS without client certificates: any TLS client that trusts the device is served.
            client = await connect(appliance, 2, client_context(tmp_path, server_pem))
            assert (await client.call(b"NC"))[:4] == b"ND00"
            await client.close()
            assert await refused(appliance, 2, None)

    guarded(scenario())


def test_the_server_certificate_survives_a_restart_and_a_release_replaces_it(tmp_path):
    async def scenario():
        cfg = config(tmp_path)
        async with running(cfg) as appliance:
            await ready(appliance)
            async with tenant(appliance) as api:
                assert (await api.put("/host-tls", json={"host1": "on", "host2": "on"})).status_code == 200
                first = (await api.get("/host-tls/server-certificate")).text
        async with running(cfg) as appliance:
            async with tenant(appliance) as api:
                assert (await api.get("/host-tls/server-certificate")).text == first
                assert (await api.get("/host-tls")).json()["ports"] == {"host1": "on", "host2": "on"}
            # A client pinning the certificate from before the restart still connects.
            client = await connect(appliance, 1, client_context(tmp_path, first))
            assert (await client.call(b"NC"))[:4] == b"ND00"
            await client.close()
            async with tenant(appliance) as api:
                assert (await api.post("/release")).json()["pristine"] is True
            await allocate(appliance)
            async with tenant(appliance) as api:
                assert (await api.get("/host-tls")).json() == {
                    "ports": {"host1": "off", "host2": "off"}, "trusted": [], "server_certificate": None}
                assert (await api.get("/host-tls/server-certificate")).text != first

    guarded(scenario())


def test_changing_the_mode_or_the_trust_cuts_connections_that_no_longer_qualify(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await ready(appliance)
            apps, spare = Issuer("Apps CA"), Issuer("Spare CA")
            plain = await connect(appliance, 1, None)
            assert (await plain.call(b"NC"))[:4] == b"ND00"
            async with tenant(appliance) as api:
                server_pem = (await api.get("/host-tls/server-certificate")).text
                await api.post("/host-tls/trusted", json={"certificate": apps.pem + spare.pem})
                await api.put("/host-tls", json={"host1": "mutual"})
            assert await plain.reader.read() == b""  # the plain connection made before was cut
            context = client_context(tmp_path, server_pem, apps.client("app"))
            secure = await connect(appliance, 1, context)
            assert (await secure.call(b"NC"))[:4] == b"ND00"
            async with tenant(appliance) as api:
                fingerprint = apps.cert.fingerprint(hashes.SHA256()).hex()
                view = (await api.delete(f"/host-tls/trusted/{fingerprint}")).json()
                assert [t["subject"] for t in view["trusted"]] == ["CN=Spare CA"]
            with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
                await secure.call(b"NC")  # cut: its CA is no longer trusted
            assert await refused(appliance, 1, context)

    guarded(scenario())


def test_host_tls_input_is_checked_and_changes_nothing(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await ready(appliance)
            issuer = Issuer("Apps CA")
            client_cert, client_key = issuer.client("app")
            key_pem = client_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()).decode()
            async with tenant(appliance) as api:
                before = (await api.get("/host-tls")).json()
                for body, status, code in (
                    ({"host1": "mutual"}, 409, "NoTrustedClientCertificate"),
                    ({"host1": "strict"}, 400, "InvalidRequest"),
                    ({"host3": "on"}, 400, "InvalidRequest"),
                    ({}, 400, "InvalidRequest"),
                ):
                    response = await api.put("/host-tls", json=body)
                    assert (response.status_code, response.json()["error"]["code"]) == (status, code), body
                for certificate in ("not a certificate", issuer.pem.replace("MII", "XXX"), 42,
                                    pem(client_cert) + key_pem, "junk\n" + issuer.pem):
                    response = await api.post("/host-tls/trusted", json={"certificate": certificate})
                    assert response.status_code == 400, certificate
                    assert response.json()["error"]["code"] == "InvalidCertificate"
                response = await api.post("/host-tls/trusted", json={"cert": issuer.pem})
                assert response.status_code == 400
                assert (await api.delete("/host-tls/trusted/" + "0" * 64)).status_code == 404
                assert (await api.get("/host-tls")).json() == before
                # The last trusted certificate cannot go while a port needs it.
                await api.post("/host-tls/trusted", json={"certificate": issuer.pem})
                await api.put("/host-tls", json={"host2": "mutual"})
                fingerprint = issuer.cert.fingerprint(hashes.SHA256()).hex()
                response = await api.delete(f"/host-tls/trusted/{fingerprint}")
                assert (response.status_code, response.json()["error"]["code"]) == (409, "NoTrustedClientCertificate")
                assert len((await api.get("/host-tls")).json()["trusted"]) == 1
            async with management(appliance) as provider:  # the provider has no say in the tenant's TLS
                assert (await provider.get("/host-tls")).status_code == 403
                assert (await provider.put("/host-tls", json={"host2": "off"})).status_code == 403
            async with tenant(appliance) as api:
                audit = (await api.get("/logs/audit")).json()["entries"]
            assert {"host_tls.trust", "host_tls.update"} <= {e["action"] for e in audit}

    guarded(scenario())

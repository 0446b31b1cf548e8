"""TLS on the host ports: modes, the device's server identity, the client certificates trusted.

Each host port runs in one of three modes:

* ``off``: plain TCP, as the host ports of a real payShield are by default;
* ``on``: TLS with the device's server certificate (the client can pin it);
* ``mutual``: TLS in which the client must present a certificate the tenant trusts.

Host ports have no other credential, on the real device as here. On one machine every tenant
shares the loopback, so ``mutual`` is how a tenant keeps other local processes off its HSM.

The server identity is a self-signed ECDSA P-256 certificate made when TLS is first needed and
kept in the appliance state (its key sealed under the device master key), so it stays the same
across restarts until a release. The tenant trusts CA certificates (any client certificate they
issued is accepted) or individual client certificates (that one is accepted).
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .errors import InvalidCertificate

OFF, ON, MUTUAL = "off", "on", "mutual"
MODES = (OFF, ON, MUTUAL)
#: The host ports, as the management API and the health report name them.
PORTS = ("host1", "host2")
#: At most this many trusted certificates (a CA bundle for each tenant application fits).
MAX_TRUSTED = 32
MAX_PEM_BYTES = 256 * 1024
SERVER_CERT_DAYS = 3650


@dataclass(frozen=True, kw_only=True)
class TrustedCertificate:
    """One certificate the tenant trusts for client authentication."""

    pem: str
    #: SHA-256 of the DER certificate, lower-case hex: how the API names it.
    fingerprint: str
    subject: str
    issuer: str
    not_after: str
    is_ca: bool

    def view(self) -> dict[str, object]:
        return {"fingerprint": self.fingerprint, "subject": self.subject, "issuer": self.issuer,
                "not_after": self.not_after, "ca": self.is_ca}


def _describe(cert: x509.Certificate) -> TrustedCertificate:
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return TrustedCertificate(
        pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_after=cert.not_valid_after_utc.isoformat(),
        is_ca=is_ca,
    )


def parse_certificates(text: object) -> list[TrustedCertificate]:
    """Every certificate of a PEM text; InvalidCertificate if there is none or anything else."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidCertificate("certificate must be PEM text: one or more '-----BEGIN CERTIFICATE-----' blocks")
    if len(text.encode("utf-8", "replace")) > MAX_PEM_BYTES:
        raise InvalidCertificate(f"the PEM text is larger than {MAX_PEM_BYTES // 1024} KiB")
    if "PRIVATE KEY" in text:
        raise InvalidCertificate("the PEM text holds a private key: send certificates only, keep the key with "
                                 "the client")
    try:
        certs = x509.load_pem_x509_certificates(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise InvalidCertificate(f"not a PEM certificate ({exc.__class__.__name__})") from None
    # Refuse anything between or around the certificates, so nothing unseen is trusted.
    rest = text
    for _ in certs:
        begin, end = rest.find("-----BEGIN CERTIFICATE-----"), rest.find("-----END CERTIFICATE-----")
        if rest[:begin].strip():
            raise InvalidCertificate("the PEM text holds something other than certificates")
        rest = rest[end + len("-----END CERTIFICATE-----"):]
    if rest.strip():
        raise InvalidCertificate("the PEM text holds something other than certificates")
    return [_describe(cert) for cert in certs]


@dataclass(frozen=True, kw_only=True)
class ServerIdentity:
    """The host ports' TLS certificate and its private key (PEM)."""

    certificate: str
    private_key: str

    @property
    def fingerprint(self) -> str:
        cert = x509.load_pem_x509_certificate(self.certificate.encode("ascii"))
        return cert.fingerprint(hashes.SHA256()).hex()


def new_server_identity(serial: str, addresses: list[str]) -> ServerIdentity:
    """A self-signed certificate for the device, valid for its loopback addresses."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"payShield {serial}")])
    now = datetime.datetime.now(datetime.timezone.utc)
    sans = [x509.IPAddress(ipaddress.ip_address(a)) for a in dict.fromkeys(addresses)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVER_CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ServerIdentity(certificate=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
                          private_key=key_pem.decode("ascii"))


def server_context(identity: ServerIdentity, mode: str, trusted: list[TrustedCertificate]) -> ssl.SSLContext:
    """The TLS server context of a host port in ``mode`` (``on`` or ``mutual``)."""
    assert mode in (ON, MUTUAL), mode
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # load_cert_chain reads files only: the key exists on disk for this call, in a private directory.
    with tempfile.TemporaryDirectory(prefix="hsmcloud-tls-") as tmp:
        cert_file, key_file = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert_file.write_text(identity.certificate)
        key_file.touch(mode=0o600)
        key_file.write_text(identity.private_key)
        context.load_cert_chain(cert_file, key_file)
    if mode == MUTUAL:
        context.verify_mode = ssl.CERT_REQUIRED
        # A trusted client certificate that is not a CA is a trust anchor of its own.
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        context.load_verify_locations(cadata="".join(c.pem for c in trusted))
    return context

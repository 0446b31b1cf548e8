"""Client and server certificates on the tenant side (what Luna's `vtl createCert` / `vtl addServer` do).

A client certificate is self-signed: the appliance trusts exactly the certificates registered on
it, so no CA is involved. The private key stays in the client home (0600)."""
from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from hsmcloud.clients.luna.config import ConfigError, check_name, client_home, write_private_file

KEY_TYPES = ("rsa", "ec")
MAX_DAYS = 36500


@dataclass(frozen=True, kw_only=True)
class ClientCertificate:
    name: str
    certificate: Path
    private_key: Path
    fingerprint: str
    not_after: datetime.datetime


def client_cert_dir() -> Path:
    return client_home() / "cert" / "client"


def server_cert_dir() -> Path:
    return client_home() / "cert" / "server"


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, as colon-separated hex (what `ntls show` prints too)."""
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def create_client_certificate(name: str, *, key_type: str = "rsa", days: int = 3650, overwrite: bool = False,
                              directory: Path | None = None,
                              not_before: datetime.datetime | None = None) -> ClientCertificate:
    """A new key pair and self-signed certificate `<name>.pem` / `<name>Key.pem`."""
    check_name(name, "client")
    if key_type not in KEY_TYPES:
        raise ConfigError(f"--key-type must be one of {', '.join(KEY_TYPES)}, not '{key_type}'.",
                          code="InvalidKeyType")
    if not 1 <= days <= MAX_DAYS:
        raise ConfigError(f"--days must be 1 to {MAX_DAYS}, not {days}.", code="InvalidValidity")
    directory = directory or client_cert_dir()
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}Key.pem"
    if not overwrite and (cert_path.exists() or key_path.exists()):
        raise ConfigError(f"A client certificate named '{name}' exists already ({cert_path}). Pass --force to "
                          "replace it (then register the new one on every appliance again).",
                          code="CertificateExists")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if key_type == "rsa" \
        else ec.generate_private_key(ec.SECP256R1())
    start = not_before or datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "hsmcloud client")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    write_private_file(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    write_private_file(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return ClientCertificate(name=name, certificate=cert_path, private_key=key_path, fingerprint=fingerprint(cert),
                             not_after=cert.not_valid_after_utc)


def read_certificate(path: Path, *, what: str = "certificate") -> x509.Certificate:
    try:
        data = Path(path).expanduser().read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"The {what} file {path} does not exist.", code="CertificateNotFound") from None
    except OSError as exc:
        raise ConfigError(f"Cannot read the {what} file {path}: {exc.strerror}.", code="CertificateNotFound") \
            from None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise ConfigError(f"{path} is not a PEM X.509 certificate.", code="InvalidCertificate") from None


def store_server_certificate(name: str, source: Path) -> tuple[Path, x509.Certificate]:
    """Copy an appliance's server.pem into the client home under the server's name."""
    check_name(name, "server")
    cert = read_certificate(source, what="server certificate")
    target = server_cert_dir() / f"{name}.pem"
    write_private_file(target, cert.public_bytes(serialization.Encoding.PEM))
    return target, cert

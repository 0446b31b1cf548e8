"""A real appliance core behind a real NTLS listener on loopback, and real clients of it.

``Harness`` sets up an initialized HSM with one partition (PO, CO and CU initialized, PIN
change after init switched off with partition policy 21 so logins work at once), registers a
client certificate, assigns the partition and starts the NTLS listener on 127.0.0.1.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hsmcloud.appliances.luna.core.appliance_core import ApplianceCore
from hsmcloud.appliances.luna.core.roles import Role
from hsmcloud.appliances.luna.ntls.dispatcher import NtlsDispatcher
from hsmcloud.appliances.luna.ntls.server import NtlsServer
from hsmcloud.clients.luna.ntls_client import NtlsClient
from hsmcloud.protocols.pkcs11 import constants as c
from hsmcloud.protocols.pkcs11.attributes import NativeLayout
from luna_helpers import CO_PIN, CU_PIN, PO_PIN, SERIAL, initialized, ok

RW = c.CKF_SERIAL_SESSION | c.CKF_RW_SESSION
RO = c.CKF_SERIAL_SESSION


def client_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed client certificate and its key, as PEM files (what `vtl createCert` makes)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}Key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Harness:
    def __init__(self, tmp_path: Path, *, partitions: tuple[str, ...] = ("app1",),
                 serial: str = SERIAL, domain: str | None = None) -> None:
        self.tmp_path = tmp_path
        self.core = ApplianceCore.open(tmp_path / "appliance", serial)
        self.shell = shell = initialized(self.core)
        self.serials: list[str] = []
        for name in partitions:
            ok(shell, f"partition create -partition {name}")
            serial = self.core.partitions.by_name(name).serial
            self.prepare_partition(serial, label=f"{name}-label", domain=domain)
            self.serials.append(serial)
        self.serial = self.serials[0]
        self.cert, self.key = client_certificate(tmp_path / "client", "client1")
        self.core.clients.register("client1", certificate_pem=self.cert.read_bytes(),
                                   hostname="client1")
        for serial in self.serials:
            self.core.clients.assign("client1", serial)
        self.server_cert = tmp_path / "client" / "server.pem"
        self.server_cert.write_text(self.core.clients.server_certificate().certificate_pem)
        self.server = NtlsServer(self.core, NtlsDispatcher)
        self.port = self.server.start("127.0.0.1", 0)

    def prepare_partition(self, serial: str, *, label: str, domain: str | None = None) -> None:
        """Initialize the partition (in ``domain``, default the HSM's) with PO, CO and CU."""
        partitions = self.core.partitions
        partitions.init(serial, so_pin=PO_PIN, label=label, domain=domain)
        po = partitions.login(serial, Role.PARTITION_SO, PO_PIN)
        partitions.change_policy(serial, 21, 0, by=po)
        partitions.init_role(serial, Role.CRYPTO_OFFICER, CO_PIN, by=po)
        co = partitions.login(serial, Role.CRYPTO_OFFICER, CO_PIN)
        partitions.init_role(serial, Role.CRYPTO_USER, CU_PIN, by=co)

    def connect(self, **kwargs) -> NtlsClient:
        return NtlsClient.connect("127.0.0.1", self.port, certificate=self.cert,
                                  private_key=self.key, server_certificate=self.server_cert,
                                  timeout=20, **kwargs)

    def session(self, client: NtlsClient, *, user: int | None = c.CKU_USER,
                flags: int = RW) -> int:
        """A session on the partition, logged in as ``user`` (CO by default) unless None."""
        session = client.open_session(self.serial, flags)
        if user is not None:
            pin = {c.CKU_USER: CO_PIN, c.CKU_CRYPTO_USER: CU_PIN, c.CKU_SO: PO_PIN}[user]
            client.login(session, user, pin.encode())
        return session

    def close(self) -> None:
        self.server.stop()
        self.core.close()


def layouts():
    """Every CK_ULONG layout a client may declare."""
    return [NativeLayout(8, "little"), NativeLayout(4, "little"), NativeLayout(8, "big"),
            NativeLayout(4, "big")]

"""NTLS clients registered on the appliance, their partition assignments, and the server certificate.

A client is a name, the host name or IP address it registered with (data only: nothing ever
connects to it) and its certificate. The NTLS listener trusts exactly the certificates of
clients that have at least one partition assigned. The server certificate (``server.pem``)
is self-signed; its private key is sealed under the device key.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .clock import Clock, stored
from .errors import (
    CertificateInUse,
    CertificateInvalid,
    ClientExists,
    ClientNotFound,
    InvalidUsage,
    PartitionAlreadyAssigned,
    PartitionNotAssigned,
    PartitionNotFound,
    StateError,
)
from .schema import fingerprint
from .sealing import DeviceSealer
from .state import ApplianceState
from .views import View

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*")
_SERVER_KEY_AAD = b"hsmcloud/luna/ntls-server-key/v1"
SERVER_CERTIFICATE_DAYS = 3650


@dataclass(frozen=True, kw_only=True)
class RegisteredClient:
    name: str
    hostname: str | None
    ip: str | None
    certificate_pem: str = field(repr=False)
    certificate_der: bytes = field(repr=False)
    fingerprint: str
    not_before: datetime
    not_after: datetime
    registered_at: str
    #: Serial numbers of the partitions assigned to the client.
    partitions: frozenset[str] = frozenset()

    @property
    def registered_as(self) -> str:
        return self.hostname or self.ip or ""

    def expired(self, now: datetime) -> bool:
        return now > self.not_after


@dataclass(frozen=True, kw_only=True)
class ServerCertificate:
    certificate_pem: str
    key_pem: bytes = field(repr=False)
    fingerprint: str
    created_at: str


def check_name(name: str, what: str = "client name") -> str:
    if not _NAME.fullmatch(name):
        raise InvalidUsage(
            f"'{name}' is not a valid {what}: use 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    return name


def parse_certificate(pem: bytes | str, *, source: str) -> x509.Certificate:
    """The one PEM X.509 certificate in ``pem`` (a client's ``<name>.pem``)."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertificateInvalid(
            f"{source} is not a PEM X.509 certificate (expected '-----BEGIN CERTIFICATE-----')."
        ) from None
    if len(certificates) != 1:
        raise CertificateInvalid(f"{source} holds {len(certificates)} certificates; register one.")
    return certificates[0]


def new_server_certificate(serial: str, now: datetime) -> tuple[str, bytes]:
    """A fresh self-signed EC P-256 server certificate and its private key (PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, serial),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hsmcloud emulated Luna Network HSM"),
    ])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=SERVER_CERTIFICATE_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (
        certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


class ClientRegistry:
    """Registered NTLS clients and the appliance's server certificate."""

    def __init__(self, state: ApplianceState, sealer: DeviceSealer, clock: Clock) -> None:
        self._state = state
        self._sealer = sealer
        self._clock = clock
        self._view = View(state, self._load)
        self._server_view = View(state, self._load_server)
        #: Called with a client's name after it was deleted or lost a partition.
        self.access_reduced: list[Callable[[str], None]] = []

    # -- reading ------------------------------------------------------------------------

    def _load(self) -> dict[str, RegisteredClient]:
        assigned: dict[str, set[str]] = {}
        for client, serial in self._state.query(
            "SELECT client, serial FROM ntls_client_partitions"
        ):
            assigned.setdefault(client.lower(), set()).add(serial)
        result = {}
        for name, hostname, ip, pem, fp, registered_at in self._state.query(
            "SELECT name, hostname, ip, certificate_pem, fingerprint, registered_at"
            " FROM ntls_clients ORDER BY name"
        ):
            certificate = x509.load_pem_x509_certificate(pem.encode())
            result[name.lower()] = RegisteredClient(
                name=name,
                hostname=hostname,
                ip=ip,
                certificate_pem=pem,
                certificate_der=certificate.public_bytes(serialization.Encoding.DER),
                fingerprint=fp,
                not_before=certificate.not_valid_before_utc,
                not_after=certificate.not_valid_after_utc,
                registered_at=registered_at,
                partitions=frozenset(assigned.get(name.lower(), ())),
            )
        return result

    def list(self) -> list[RegisteredClient]:
        return list(self._view.get().values())

    def show(self, name: str) -> RegisteredClient:
        client = self._view.get().get(name.lower())
        if client is None:
            raise ClientNotFound(f"There is no client named '{name}'. See: client list")
        return client

    def by_certificate(self, certificate_der: bytes) -> RegisteredClient | None:
        """The registered client presenting exactly this certificate, if any."""
        wanted = fingerprint(certificate_der)
        for client in self._view.get().values():
            if client.fingerprint == wanted:
                return client
        return None

    def assigned_partitions(self, name: str) -> frozenset[str]:
        """Serials of the partitions assigned to client ``name`` (empty if it is gone)."""
        client = self._view.get().get(name.lower())
        return client.partitions if client is not None else frozenset()

    def trusted(self) -> list[RegisteredClient]:
        """The clients NTLS accepts: registered and assigned to at least one partition."""
        return [c for c in self._view.get().values() if c.partitions]

    # -- changing -----------------------------------------------------------------------

    def register(
        self,
        name: str,
        *,
        certificate_pem: str | bytes,
        hostname: str | None = None,
        ip: str | None = None,
        source: str = "the certificate",
    ) -> RegisteredClient:
        """Register client ``name`` with its certificate, under a host name or an IP address."""
        check_name(name)
        if (hostname is None) == (ip is None):
            raise InvalidUsage("Give the client's host name or its IP address (one of the two).")
        if hostname is not None and (len(hostname) > 253 or not _HOSTNAME.fullmatch(hostname)):
            raise InvalidUsage(f"'{hostname}' is not a valid host name.")
        if ip is not None:
            try:
                ip = str(ipaddress.ip_address(ip))
            except ValueError:
                raise InvalidUsage(f"'{ip}' is not a valid IP address.") from None
        certificate = parse_certificate(certificate_pem, source=source)
        pem = certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
        fp = fingerprint(certificate.public_bytes(serialization.Encoding.DER))
        with self._state.transaction() as db:
            existing = db.execute(
                "SELECT name FROM ntls_clients WHERE name = ?", (name,)
            ).fetchone()
            if existing:
                raise ClientExists(f"A client named '{existing[0]}' is already registered. "
                                   "See: client show -client " + existing[0])
            same = db.execute(
                "SELECT name FROM ntls_clients WHERE fingerprint = ?", (fp,)
            ).fetchone()
            if same:
                raise CertificateInUse(
                    f"Client '{same[0]}' is already registered with this certificate."
                )
            db.execute(
                "INSERT INTO ntls_clients (name, hostname, ip, certificate_pem, fingerprint,"
                " registered_at) VALUES (?, ?, ?, ?, ?, ?)",
                (name, hostname, ip, pem, fp, stored(self._clock())),
            )
            self._state._append_log(db, f"NTLS client '{name}' registered ({hostname or ip}).")
        return self.show(name)

    def _serial_of(self, db, partition: str) -> tuple[str, str]:
        row = db.execute(
            "SELECT serial, name FROM partitions WHERE name = ? OR serial = ?",
            (partition, partition),
        ).fetchone()
        if row is None:
            raise PartitionNotFound(f"There is no partition named '{partition}'. See: partition list")
        return row[0], row[1]

    def assign(self, name: str, partition: str) -> RegisteredClient:
        """Give client ``name`` access to ``partition`` (its name or serial number)."""
        with self._state.transaction() as db:
            client = self._name_in(db, name)
            serial, partition_name = self._serial_of(db, partition)
            if db.execute(
                "SELECT 1 FROM ntls_client_partitions WHERE client = ? AND serial = ?",
                (client, serial),
            ).fetchone():
                raise PartitionAlreadyAssigned(
                    f"Partition '{partition_name}' is already assigned to client '{client}'."
                )
            db.execute(
                "INSERT INTO ntls_client_partitions (client, serial, assigned_at) VALUES (?, ?, ?)",
                (client, serial, stored(self._clock())),
            )
            self._state._append_log(
                db, f"NTLS client '{client}' assigned partition {serial} ({partition_name})."
            )
        return self.show(name)

    def revoke(self, name: str, partition: str) -> RegisteredClient:
        """Take ``partition`` away from client ``name``; its next call there fails."""
        with self._state.transaction() as db:
            client = self._name_in(db, name)
            serial, partition_name = self._serial_of(db, partition)
            cursor = db.execute(
                "DELETE FROM ntls_client_partitions WHERE client = ? AND serial = ?",
                (client, serial),
            )
            if cursor.rowcount == 0:
                raise PartitionNotAssigned(
                    f"Partition '{partition_name}' is not assigned to client '{client}'."
                )
            self._state._append_log(
                db, f"NTLS client '{client}' revoked from partition {serial} ({partition_name})."
            )
        self._notify(client)
        return self.show(name)

    def delete(self, name: str) -> RegisteredClient:
        """Unregister client ``name`` (and its assignments); its connections end."""
        client = self.show(name)
        with self._state.transaction() as db:
            cursor = db.execute("DELETE FROM ntls_clients WHERE name = ?", (client.name,))
            if cursor.rowcount == 0:
                raise ClientNotFound(f"There is no client named '{name}'. See: client list")
            self._state._append_log(db, f"NTLS client '{client.name}' deleted.")
        self._notify(client.name)
        return client

    def _name_in(self, db, name: str) -> str:
        row = db.execute("SELECT name FROM ntls_clients WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise ClientNotFound(f"There is no client named '{name}'. See: client list")
        return row[0]

    def _notify(self, name: str) -> None:
        for listener in self.access_reduced:
            listener(name)

    # -- the server certificate ---------------------------------------------------------

    def _load_server(self) -> ServerCertificate | None:
        rows = self._state.query(
            "SELECT certificate_pem, key_sealed, created_at FROM ntls_server WHERE id = 1"
        )
        if not rows:
            return None
        pem, sealed, created_at = rows[0]
        certificate = x509.load_pem_x509_certificate(pem.encode())
        return ServerCertificate(
            certificate_pem=pem,
            key_pem=self._sealer.unseal(sealed, _SERVER_KEY_AAD),
            fingerprint=fingerprint(certificate.public_bytes(serialization.Encoding.DER)),
            created_at=created_at,
        )

    def server_certificate(self) -> ServerCertificate:
        server = self._server_view.get()
        if server is None:
            raise StateError("The appliance has no NTLS server certificate.")
        return server

    def server_certificate_row(self, sealer: DeviceSealer) -> tuple[str, bytes, str]:
        """A new server certificate as the ``ntls_server`` row, its key sealed by ``sealer``."""
        now = self._clock()
        pem, key_pem = new_server_certificate(self._state.device().serial, now.astimezone(timezone.utc))
        return pem, sealer.seal(key_pem, _SERVER_KEY_AAD), stored(now)

    @staticmethod
    def store_server_certificate(db, row: tuple[str, bytes, str]) -> None:
        db.execute("DELETE FROM ntls_server")
        db.execute(
            "INSERT INTO ntls_server (id, certificate_pem, key_sealed, created_at) VALUES (1, ?, ?, ?)",
            row,
        )

    def ensure_server_certificate(self) -> None:
        if self._server_view.get() is None:
            row = self.server_certificate_row(self._sealer)
            with self._state.transaction() as db:
                if db.execute("SELECT 1 FROM ntls_server WHERE id = 1").fetchone() is None:
                    self.store_server_certificate(db, row)

    def regenerate_server_certificate(self) -> ServerCertificate:
        """``sysconf regenCert``: a new key pair and certificate; clients must fetch server.pem again."""
        row = self.server_certificate_row(self._sealer)
        with self._state.transaction() as db:
            self.store_server_certificate(db, row)
            self._state._append_log(db, "NTLS server certificate regenerated (sysconf regenCert).")
        return self.server_certificate()

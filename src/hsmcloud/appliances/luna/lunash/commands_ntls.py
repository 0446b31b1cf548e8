"""LunaSH commands of NTLS: registered clients, the admin's files, the listener and its certificate.

The registration flow is Luna's: the client's certificate is copied to the appliance
(``scp myclient.pem admin@ADDR:``), then ``client register -client myclient -hostname
myclient`` finds ``myclient.pem`` among the admin's files, and ``client assignPartition``
gives it a partition.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from ..core.clients import RegisteredClient
from ..core.errors import ClientExists, FileNotFound, InvalidUsage
from ..core.files import SERVER_CERTIFICATE_FILE
from .command_line import Command, Flag, Group
from .shell import Invocation

_FORCE = Flag(name="force", takes_value=False, help="do not ask to type 'proceed'")
_CLIENT = Flag(name="client", metavar="name", required=True, help="client name")
_PARTITION = Flag(name="partition", metavar="name", required=True, help="partition name")


class NtlsStatus(Protocol):
    """What ``ntls show`` reads from the running NTLS listener."""

    @property
    def running(self) -> bool: ...

    @property
    def address(self) -> str: ...

    @property
    def port(self) -> int | None: ...

    def connection_count(self) -> int: ...


def _colon_hex(hex_digest: str) -> str:
    return ":".join(hex_digest[i:i + 2] for i in range(0, len(hex_digest), 2)).upper()


def _partition_names(inv: Invocation, client: RegisteredClient) -> list[str]:
    names = {p.serial: p.name for p in inv.core.partitions.list()}
    return [f'"{names.get(s, s)}"' for s in sorted(client.partitions)]


# -- client -----------------------------------------------------------------------------


async def client_register(inv: Invocation) -> None:
    name = inv.value("client") or ""
    hostname, ip = inv.value("hostname"), inv.value("ip")
    if (hostname is None) == (ip is None):
        raise InvalidUsage("'client register' needs -hostname <host> or -ip <address> (one of them).")
    existing = next((c for c in inv.core.clients.list() if c.name.lower() == name.lower()), None)
    if existing is not None:
        raise ClientExists(f"A client named '{existing.name}' is already registered. "
                           f"See: client show -client {existing.name}")
    wanted = [f"{hostname or ip}.pem"] + ([f"{name}.pem"] if name != (hostname or ip) else [])
    found = next((f for f in wanted if inv.core.files.exists(f)), None)
    if found is None:
        uploaded = inv.core.files.uploaded_names()
        raise FileNotFound(
            f"No certificate file for client '{name}': looked for {' and '.join(wanted)} among "
            "the admin's files. Copy it first (scp <file>.pem admin@<appliance>:). Files here: "
            + (", ".join(uploaded) if uploaded else "none uploaded")
            + "."
        )
    data = inv.core.files.get(found)
    client = inv.core.clients.register(
        name, certificate_pem=data, hostname=hostname, ip=ip, source=found
    )
    inv.out("'client register' successful.")
    inv.out(f"Client '{client.name}' registered with the certificate from {found}.")
    if client.expired(inv.core.clock()):
        inv.out(f"Warning: that certificate expired on {client.not_after:%Y-%m-%d %H:%M:%S} UTC; "
                "NTLS will refuse it.")
    if not client.partitions:
        inv.out(f"Assign it a partition: client assignPartition -client {client.name} -partition <name>")


async def client_list(inv: Invocation) -> None:
    clients = inv.core.clients.list()
    for index, client in enumerate(clients, start=1):
        inv.out(f"registered client {index}: {client.name}")
    if not clients:
        inv.out("No clients are registered.")


async def client_show(inv: Invocation) -> None:
    client = inv.core.clients.show(inv.value("client") or "")
    rows = [
        ("ClientID", client.name),
        ("IPAddress", client.ip or "(none)"),
        ("Hostname", client.hostname or "(none)"),
        ("Partitions", ", ".join(_partition_names(inv, client)) or "(none)"),
        ("Certificate expires", f"{client.not_after:%Y-%m-%d %H:%M:%S} UTC"
         + (" (EXPIRED)" if client.expired(inv.core.clock()) else "")),
        ("Fingerprint (SHA-256)", _colon_hex(client.fingerprint)),
    ]
    for label, value in rows:
        inv.out(f"{label + ':':<24} {value}")


async def client_fingerprint(inv: Invocation) -> None:
    client = inv.core.clients.show(inv.value("client") or "")
    inv.out(f"Certificate fingerprint (SHA-256) of client {client.name}:")
    inv.out(_colon_hex(client.fingerprint))


async def client_assign(inv: Invocation) -> None:
    partition = inv.core.partitions.by_name(inv.value("partition") or "")
    client = inv.core.clients.assign(inv.value("client") or "", partition.serial)
    inv.out("'client assignPartition' successful.")
    inv.out(f"Client '{client.name}' may use partition {partition.name} ({partition.serial}).")


async def client_revoke(inv: Invocation) -> None:
    partition = inv.core.partitions.by_name(inv.value("partition") or "")
    client = inv.core.clients.revoke(inv.value("client") or "", partition.serial)
    inv.out("'client revokePartition' successful.")
    inv.out(f"Client '{client.name}' no longer has partition {partition.name} ({partition.serial}).")


async def client_delete(inv: Invocation) -> None:
    client = inv.core.clients.show(inv.value("client") or "")
    await inv.confirm(
        f"CAUTION: deleting client '{client.name}' removes its partition assignments and ends "
        "its NTLS connections."
    )
    inv.core.clients.delete(client.name)
    inv.out("'client delete' successful.")


# -- my file ----------------------------------------------------------------------------


async def file_list(inv: Invocation) -> None:
    for entry in inv.core.files.list():
        inv.out(f"{entry.size:>10} {entry.modified} {entry.name}")


async def file_delete(inv: Invocation) -> None:
    name = inv.value("file") or ""
    inv.core.files.delete(name)
    inv.out(f"File '{name}' deleted.")


# -- ntls and sysconf regenCert ---------------------------------------------------------


async def ntls_show(inv: Invocation) -> None:
    ntls: NtlsStatus | None = inv.session.ntls
    server = inv.core.clients.server_certificate()
    clients = inv.core.clients.list()
    if ntls is not None and ntls.running and ntls.port is not None:
        inv.out(f'NTLS bound to network device: all IP Address: "{ntls.address}" '
                f"(TCP port {ntls.port})")
        inv.out("Status: running")
        inv.out(f"Connections: {ntls.connection_count()}")
    else:
        inv.out("NTLS bound to network device: all")
        inv.out("Status: not running")
    inv.out(f"Server certificate fingerprint (SHA-256): {_colon_hex(server.fingerprint)}")
    inv.out(f"Server certificate made: {server.created_at}")
    inv.out(f"Registered clients: {len(clients)} "
            f"({sum(1 for c in clients if c.partitions)} with partitions assigned)")


async def sysconf_regen_cert(inv: Invocation) -> None:
    await inv.confirm(
        "WARNING: this replaces the NTLS server certificate and its private key. Every client "
        "then fails to connect until it fetches the new server.pem (scp admin@<appliance>:"
        "server.pem .) and trusts it (hsmcloud client server add)."
    )
    server = await asyncio.to_thread(inv.core.clients.regenerate_server_certificate)
    inv.out("'sysconf regenCert' successful: new NTLS server certificate.")
    inv.out(f"Fingerprint (SHA-256): {_colon_hex(server.fingerprint)}")
    inv.out(f"Fetch it from the appliance as {SERVER_CERTIFICATE_FILE}. New connections use it now.")


CLIENT_GROUP = Group(
    name="client",
    summary="NTLS clients: register, list, show, fingerprint, assignPartition, revokePartition, delete",
    children=(
        Command(
            name="register",
            summary="Register a client with the certificate copied to the appliance",
            handler=client_register,
            flags=(
                _CLIENT,
                Flag(name="hostname", metavar="host", help="the client's host name (finds <host>.pem)"),
                Flag(name="ip", metavar="address", help="the client's IP address (finds <address>.pem)"),
            ),
            details=(
                "Looks for <host>.pem (or <address>.pem), then <client>.pem, among the admin's "
                "files: copy the certificate first with scp <file>.pem admin@<appliance>:"
            ),
            example="client register -client myclient -hostname myclient",
        ),
        Command(name="list", summary="List the registered clients", handler=client_list),
        Command(
            name="show",
            summary="Show a client: address, partitions, certificate",
            handler=client_show,
            flags=(_CLIENT,),
            example="client show -client myclient",
        ),
        Command(
            name="fingerprint",
            summary="Show the fingerprint of a client's certificate",
            handler=client_fingerprint,
            flags=(_CLIENT,),
        ),
        Command(
            name="assignPartition",
            summary="Let a client use a partition",
            handler=client_assign,
            flags=(_CLIENT, _PARTITION),
            example="client assignPartition -client myclient -partition app1",
        ),
        Command(
            name="revokePartition",
            summary="Take a partition away from a client",
            handler=client_revoke,
            flags=(_CLIENT, _PARTITION),
            details="The client's next call on that partition fails (CKR_SLOT_ID_INVALID).",
            example="client revokePartition -client myclient -partition app1",
        ),
        Command(
            name="delete",
            summary="Unregister a client (ends its connections)",
            handler=client_delete,
            flags=(_CLIENT, _FORCE),
            example="client delete -client myclient -force",
        ),
    ),
)

FILE_GROUP = Group(
    name="file",
    summary="Your files on the appliance (scp): list, delete",
    children=(
        Command(name="list", summary="List the files (server.pem is always there)", handler=file_list),
        Command(
            name="delete",
            summary="Delete an uploaded file",
            handler=file_delete,
            flags=(Flag(name="file", metavar="name", required=True, help="file name"),),
            example="my file delete -file myclient.pem",
        ),
    ),
)

NTLS_GROUP = Group(
    name="ntls",
    summary="The NTLS listener: show",
    children=(
        Command(
            name="show",
            summary="Show the NTLS listener: address, port, status, server certificate",
            handler=ntls_show,
        ),
    ),
)

REGEN_CERT = Command(
    name="regenCert",
    summary="Replace the NTLS server certificate (clients must trust the new one)",
    handler=sysconf_regen_cert,
    flags=(_FORCE,),
    example="sysconf regenCert -force",
)

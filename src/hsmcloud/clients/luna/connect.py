"""`hsmcloud client connect`: the whole NTLS certificate exchange with one appliance, over its SSH shell.

What a Luna administrator does by hand (scp the client certificate up, `client register`, `client
assignPartition`, scp `server.pem` down, `vtl addServer`), done in one go against the appliance's
LunaSH with the appliance admin's password. The SSH host key is trusted on first use and pinned
in the client home's `known_hosts`, so a later connection to a different key is refused."""
from __future__ import annotations

import asyncio
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from hsmcloud.clients.luna import certificates, config as client_config
from hsmcloud.clients.luna.config import ConfigError, Server, Slot

ADMIN_USER = "admin"


@dataclass(frozen=True, kw_only=True)
class ConnectResult:
    server: str
    address: str
    port: int
    slot: int
    partition: str
    client: str
    server_fingerprint: str
    registered: bool  # False when the same certificate was registered already


def known_hosts_path() -> Path:
    return client_config.client_home() / "known_hosts"


def _known_key(address: str, port: int) -> asyncssh.SSHKey | None:
    path = known_hosts_path()
    if not path.exists():
        return None
    tag = f"[{address}]:{port}"
    for line in path.read_text().splitlines():
        host, _, key = line.partition(" ")
        if host == tag and key:
            return asyncssh.import_public_key(key)
    return None


def _remember_key(address: str, port: int, key: asyncssh.SSHKey) -> None:
    path = known_hosts_path()
    tag = f"[{address}]:{port}"
    lines = [ln for ln in (path.read_text().splitlines() if path.exists() else []) if not ln.startswith(tag + " ")]
    lines.append(f"{tag} {key.export_public_key().decode().strip()}")
    client_config.write_private_file(path, ("\n".join(lines) + "\n").encode())


def forget_host(address: str, port: int) -> bool:
    path = known_hosts_path()
    if not path.exists():
        return False
    tag = f"[{address}]:{port} "
    lines = path.read_text().splitlines()
    kept = [ln for ln in lines if not ln.startswith(tag)]
    client_config.write_private_file(path, ("\n".join(kept) + "\n").encode() if kept else b"")
    return len(kept) != len(lines)


class ShellRefused(ConfigError):
    """A LunaSH command answered with an error."""


async def _run(conn: asyncssh.SSHClientConnection, command: str) -> str:
    result = await conn.run(command, check=False)
    output = (result.stdout or "") + (result.stderr or "")
    if result.exit_status != 0:
        error = next((ln[len("Error: "):] for ln in output.splitlines() if ln.startswith("Error: ")), output.strip())
        raise ShellRefused(f"The appliance refused '{command.split(' -')[0]}': {error}", code="ApplianceRefused")
    return output


async def _exchange(*, address: str, ssh_port: int, admin_password: str, identity: client_config.ClientIdentity,
                    partition: str, replace: bool, server_name: str, ntls_port: int) -> ConnectResult:
    pinned = _known_key(address, ssh_port)
    known_hosts = ([pinned], [], []) if pinned is not None else None
    try:
        conn = await asyncssh.connect(address, port=ssh_port, username=ADMIN_USER, password=admin_password,
                                      known_hosts=known_hosts, client_keys=None, agent_path=None,
                                      preferred_auth="password,keyboard-interactive", connect_timeout=20)
    except asyncssh.HostKeyNotVerifiable:
        raise ConfigError(f"The SSH host key of {address}:{ssh_port} is not the one recorded at the first "
                          "connection (the device was reset or replaced, or this is not your appliance). If the "
                          f"provider reset it, forget the old key with 'hsmcloud client forget-host --address "
                          f"{address} --ssh-port {ssh_port}' and connect again.", code="HostKeyChanged") from None
    except asyncssh.PermissionDenied:
        raise ConfigError(f"The appliance at {address} refused the admin password.", code="AuthenticationFailed") \
            from None
    except (OSError, asyncssh.Error) as exc:
        raise ConfigError(f"Cannot reach the appliance's SSH shell at {address}:{ssh_port}: {exc}.",
                          code="ApplianceUnreachable") from None
    async with conn:
        if pinned is None:
            _remember_key(address, ssh_port, conn.get_server_host_key())
        cert = certificates.read_certificate(identity.certificate, what="client certificate")
        fingerprint = certificates.fingerprint(cert)
        registered = True
        listing = await _run(conn, f"client show -client {shlex.quote(identity.name)}") \
            if await _client_exists(conn, identity.name) else None
        if listing is not None:
            if fingerprint.replace(":", "").lower() in listing.replace(":", "").lower():
                registered = False
            elif not replace:
                raise ConfigError(f"A client named '{identity.name}' is registered on the appliance with another "
                                  "certificate. Pass --replace to register this one instead (the other host "
                                  "loses access), or make a certificate with another name.",
                                  code="ClientNameTaken")
            else:
                await _run(conn, f"client delete -client {shlex.quote(identity.name)} -force")
        async with conn.start_sftp_client() as sftp:
            if registered:
                await sftp.put(str(identity.certificate), f"{identity.name}.pem")
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / "server.pem"
                await sftp.get("server.pem", str(local))
                stored, server_cert = certificates.store_server_certificate(server_name, local)
        if registered:
            await _run(conn, f"client register -client {shlex.quote(identity.name)} "
                             f"-hostname {shlex.quote(identity.name)}")
            listing = None
        if listing is None or partition.lower() not in _assigned(listing):
            await _run(conn, f"client assignPartition -client {shlex.quote(identity.name)} "
                             f"-partition {shlex.quote(partition)}")
    cfg = client_config.load()
    cfg.set_server(Server(name=server_name, address=address, port=ntls_port, certificate=stored))
    slot = cfg.add_slot(Slot(server=server_name, partition=partition))
    client_config.save(cfg)
    return ConnectResult(server=server_name, address=address, port=ntls_port, slot=slot, partition=partition,
                         client=identity.name, server_fingerprint=certificates.fingerprint(server_cert),
                         registered=registered)


def _assigned(listing: str) -> set[str]:
    """The partition names `client show` lists for a client."""
    for line in listing.splitlines():
        label, _, value = line.partition(":")
        if label.strip().lower() == "partitions":
            names = {p.strip().strip("'\"").lower() for p in value.split(",")}
            return names - {"", "(none)"}
    return set()


async def _client_exists(conn: asyncssh.SSHClientConnection, name: str) -> bool:
    listing = await _run(conn, "client list")  # "registered client 1: NAME" per client
    return any(line.partition(":")[2].strip().lower() == name.lower() for line in listing.splitlines())


def connect(*, address: str, ssh_port: int, ntls_port: int, admin_password: str, partition: str,
            server_name: str, replace: bool = False) -> ConnectResult:
    """Register this client's certificate on the appliance, assign it `partition`, pin the server certificate
    and add the slot. The client certificate must exist (`hsmcloud client cert new`)."""
    cfg = client_config.load()
    if cfg.client is None:
        raise ConfigError("This client has no certificate yet: make one with 'hsmcloud client cert new --name "
                          "<name>' (or let 'hsmcloud client connect --client-name <name>' make it).",
                          code="NoClientCertificate")
    return asyncio.run(_exchange(address=address, ssh_port=ssh_port, admin_password=admin_password,
                                 identity=cfg.client, partition=partition, replace=replace,
                                 server_name=server_name, ntls_port=ntls_port))

"""`hsmcloud client ...`: the tenant-side NTLS client set-up (Luna's `vtl`), and `connect` for a whole HSM.

Everything here works on the client home (`$HSMCLOUD_CLIENT_HOME`, default ~/.hsmcloud-client) and the
client configuration file that the PKCS#11 library reads (`$HSMCLOUD_CONF` or <home>/client.conf).
Only `connect` talks to the service and the appliance."""
from __future__ import annotations

import datetime
import functools
import inspect
import typing
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from hsmcloud.cli.client import CliError
from hsmcloud.cli.common import Ctx, run_guarded, service_command
from hsmcloud.cli.output import Output
from hsmcloud.clients.luna import certificates, config as client_config
from hsmcloud.clients.luna.config import ClientIdentity, ConfigError, Server, Slot

app = typer.Typer(help="The NTLS client on your side: certificates, appliances, slots (the PKCS#11 library's "
                       "configuration).", no_args_is_help=True)
cert_app = typer.Typer(help="Your client certificate (what 'vtl createCert' makes).", no_args_is_help=True)
server_app = typer.Typer(help="Appliances this client talks to (what 'vtl addServer' records).",
                         no_args_is_help=True)
slot_app = typer.Typer(help="Which partitions appear to applications as PKCS#11 slots.", no_args_is_help=True)
config_app = typer.Typer(help="The client configuration file.", no_args_is_help=True)
app.add_typer(cert_app, name="cert")
app.add_typer(server_app, name="server")
app.add_typer(slot_app, name="slot")
app.add_typer(config_app, name="config")

Json = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


def local_command(group: typer.Typer, name: str) -> Callable:
    """A command that works on local files: one-line errors, `--json`, no service connection."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            out = Output(json_mode=bool(kwargs.get("json_output")))

            def body():
                try:
                    return fn(out, *args, **kwargs)
                except ConfigError as exc:
                    raise CliError(exc.code, exc.message) from None
            return run_guarded(out, body)

        hints = typing.get_type_hints(fn, include_extras=True)
        params = [p.replace(annotation=hints.get(p.name, p.annotation))
                  for p in list(inspect.signature(fn).parameters.values())[1:]]
        wrapper.__signature__ = inspect.Signature(params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__
        group.command(name)(wrapper)
        return fn

    return deco


def _load() -> client_config.ClientConfig:
    return client_config.load()


# ---- cert ----------------------------------------------------------------------------------------

@local_command(cert_app, "new")
def cert_new(out: Output,
             name: Annotated[str, typer.Option("--name", "-n", help="Client name (registered on the appliance "
                                                                      "with 'client register -client NAME').",
                                               show_default=False)],
             key_type: Annotated[str, typer.Option("--key-type", help="rsa (2048) or ec (P-256).")] = "rsa",
             days: Annotated[int, typer.Option("--days", help="Validity in days.")] = 3650,
             force: Annotated[bool, typer.Option("--force", help="Replace an existing certificate of that "
                                                                 "name.")] = False,
             json_output: Json = False):
    """Create this client's key pair and self-signed certificate, and make it the configured identity."""
    made = certificates.create_client_certificate(name, key_type=key_type, days=days, overwrite=force)
    cfg = _load()
    cfg.client = ClientIdentity(name=made.name, certificate=made.certificate, private_key=made.private_key)
    path = client_config.save(cfg)
    data = {"name": made.name, "certificate": str(made.certificate), "privateKey": str(made.private_key),
            "fingerprint": made.fingerprint, "notAfter": made.not_after.isoformat(), "config": str(path)}

    def human(d: dict) -> None:
        out.print(f"Private key created and written to: {d['privateKey']}")
        out.print(f"Certificate created and written to: {d['certificate']}")
        out.fields([("fingerprint", d["fingerprint"]), ("valid until", d["notAfter"][:19]),
                    ("configuration", d["config"])])
        out.note(f"Next: scp {d['certificate']} admin@<appliance>:  then on the appliance: client register "
                 f"-client {d['name']} -hostname {d['name']}  (or: hsmcloud client connect ...)", style="dim")
    out.result(data, human)


# ---- server --------------------------------------------------------------------------------------

def _server_json(server: Server) -> dict:
    data = {"name": server.name, "address": server.address, "port": server.port,
            "certificate": str(server.certificate)}
    try:
        cert = certificates.read_certificate(server.certificate, what="server certificate")
        data["fingerprint"] = certificates.fingerprint(cert)
        data["notAfter"] = cert.not_valid_after_utc.isoformat()
    except ConfigError as exc:
        data["problem"] = exc.message
    return data


@local_command(server_app, "add")
def server_add(out: Output,
               address: Annotated[str, typer.Option("--address", "-a", help="The appliance's address (its "
                                                                             "loopback address here).",
                                                    show_default=False)],
               server_cert: Annotated[Path, typer.Option("--server-cert", "-c", help="The appliance's server.pem "
                                                                                      "(scp admin@ADDR:server.pem .)",
                                                         show_default=False)],
               port: Annotated[int, typer.Option("--port", help="NTLS port.")] = client_config.DEFAULT_NTLS_PORT,
               name: Annotated[Optional[str], typer.Option("--name", help="Name for the server (default: the "
                                                                            "address).", show_default=False)] = None,
               json_output: Json = False):
    """Trust an appliance's server certificate and record where its NTLS listener is."""
    _check_loopback(address)
    if not 1 <= port <= 65535:
        raise CliError("InvalidPort", f"--port must be 1 to 65535, not {port}.")
    name = client_config.check_name(name or address, "server")
    cfg = _load()
    clash = cfg.server_by_address(address, port)
    if clash is not None and clash.name != name:
        raise CliError("ServerExists", f"{address}:{port} is configured already as server '{clash.name}'; remove "
                                       f"it first ('hsmcloud client server remove --name {clash.name}').")
    stored, _ = certificates.store_server_certificate(name, server_cert)
    server = Server(name=name, address=address, port=port, certificate=stored)
    cfg.set_server(server)
    client_config.save(cfg)
    data = _server_json(server)
    out.result(data, lambda d: out.print(f"New server {d['name']} ({d['address']}:{d['port']}) successfully added "
                                         f"to the server list; certificate fingerprint {d.get('fingerprint')}."))


@local_command(server_app, "remove")
def server_remove(out: Output,
                  name: Annotated[str, typer.Option("--name", "-n", help="Server name.", show_default=False)],
                  json_output: Json = False):
    """Forget an appliance (and the slots on it)."""
    cfg = _load()
    removed = cfg.remove_server(name)
    client_config.save(cfg)
    out.result({"removed": removed.name}, lambda d: out.print(f"Server {d['removed']} removed, with its slots."))


@local_command(server_app, "list")
def server_list(out: Output, json_output: Json = False):
    """The appliances in the configuration."""
    items = [_server_json(s) for s in _load().servers.values()]
    out.result(items, lambda xs: out.table(["Name", "Address", "Port", "Fingerprint", "Valid until"],
                                           [[x["name"], x["address"], x["port"], x.get("fingerprint") or
                                             x.get("problem"), (x.get("notAfter") or "")[:10]] for x in xs],
                                           empty="No servers: add one with 'hsmcloud client server add'."))


# ---- slot ----------------------------------------------------------------------------------------

@local_command(slot_app, "add")
def slot_add(out: Output,
             server: Annotated[str, typer.Option("--server", "-s", help="Server name.", show_default=False)],
             partition: Annotated[str, typer.Option("--partition", "-p", help="Partition serial number or name.",
                                                    show_default=False)],
             json_output: Json = False):
    """Show a partition of a server to applications as the next slot."""
    if not partition.strip() or any(c.isspace() or not c.isprintable() for c in partition):
        raise CliError("InvalidPartition", f"'{partition}' is not a partition serial number or name.")
    cfg = _load()
    slot_id = cfg.add_slot(Slot(server=server, partition=partition))
    client_config.save(cfg)
    out.result({"slot": slot_id, "server": server, "partition": partition},
               lambda d: out.print(f"Slot {d['slot']}: partition {d['partition']} on {d['server']}."))


@local_command(slot_app, "remove")
def slot_remove(out: Output,
                slot: Annotated[int, typer.Option("--slot", help="Slot ID.", show_default=False)],
                json_output: Json = False):
    """Remove a slot (later slots move down by one)."""
    cfg = _load()
    removed = cfg.remove_slot(slot)
    client_config.save(cfg)
    out.result({"slot": slot, "server": removed.server, "partition": removed.partition},
               lambda d: out.print(f"Slot {d['slot']} (partition {d['partition']} on {d['server']}) removed."))


# ---- config --------------------------------------------------------------------------------------

def config_json(cfg: client_config.ClientConfig) -> dict:
    client = None
    if cfg.client is not None:
        client = {"name": cfg.client.name, "certificate": str(cfg.client.certificate),
                  "privateKey": str(cfg.client.private_key)}
        try:
            cert = certificates.read_certificate(cfg.client.certificate, what="client certificate")
            client["fingerprint"] = certificates.fingerprint(cert)
            client["notAfter"] = cert.not_valid_after_utc.isoformat()
            if cert.not_valid_after_utc < datetime.datetime.now(datetime.timezone.utc):
                client["problem"] = "expired: make a new one with 'hsmcloud client cert new --force' and register it"
        except ConfigError as exc:
            client["problem"] = exc.message
    return {"path": str(client_config.config_path()), "client": client,
            "receiveTimeoutSeconds": cfg.receive_timeout_seconds,
            "servers": [_server_json(s) for s in cfg.servers.values()],
            "slots": [{"slot": i, "server": s.server, "partition": s.partition} for i, s in enumerate(cfg.slots)]}


@local_command(config_app, "show")
def config_show(out: Output, json_output: Json = False):
    """The client identity, servers and slots the PKCS#11 library will use."""
    data = config_json(_load())

    def human(d: dict) -> None:
        c = d["client"] or {}
        out.fields([("configuration", d["path"]), ("client", c.get("name") or "(none: hsmcloud client cert new)"),
                    ("certificate", c.get("certificate")), ("fingerprint", c.get("fingerprint") or c.get("problem")),
                    ("receive timeout", f"{d['receiveTimeoutSeconds']} s")])
        out.print("")
        out.table(["Server", "Address", "Port", "Server certificate"],
                  [[s["name"], s["address"], s["port"], s.get("fingerprint") or s.get("problem")]
                   for s in d["servers"]], empty="No servers.")
        out.print("")
        out.table(["Slot", "Server", "Partition"], [[s["slot"], s["server"], s["partition"]] for s in d["slots"]],
                  empty="No slots.")
    out.result(data, human)


def _check_loopback(address: str) -> None:
    import ipaddress
    try:
        ok = ipaddress.ip_address(address).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise CliError("InvalidAddress", f"'{address}' is not a loopback IP address: hsmcloud appliances listen on "
                                         "127.0.0.0/8 (an HSM's private IP is data; 'hsmcloud hsm endpoints' shows "
                                         "the address to use).")


# ---- connect and forget-host ------------------------------------------------------------------

@service_command(app, "connect")
def connect(cx: Ctx,
            name: Annotated[str, typer.Option("--name", "-n", help="The dedicated HSM (a Luna-class SKU).",
                                              show_default=False)],
            resource_group: Annotated[str, typer.Option("--resource-group", "-g", help="Its resource group.",
                                                        show_default=False)],
            partition: Annotated[str, typer.Option("--partition", "-p", help="The partition to use (created on "
                                                                             "the appliance with 'partition create').",
                                                   show_default=False)],
            admin_password: Annotated[Optional[str], typer.Option(
                "--admin-password", envvar="HSMCLOUD_ADMIN_PASSWORD", show_default=False,
                help="The appliance admin's password (asked for when not given).")] = None,
            client_name: Annotated[Optional[str], typer.Option(
                "--client-name", show_default=False,
                help="Make a client certificate with this name first, if this client has none.")] = None,
            replace: Annotated[bool, typer.Option("--replace", help="Replace another certificate registered "
                                                                    "under this client's name.")] = False):
    """Register this client with the HSM's appliance and show the partition as a slot, in one go."""
    from hsmcloud.cli.client import HSM_API
    from hsmcloud.clients.luna import connect as connecting

    client = cx.client
    ep = client.get(client.hsm_path(resource_group, name) + "/endpoints", params={"api-version": HSM_API})
    ports = ep.get("ports") or {}
    if ep.get("kind") != "luna" or not ports.get("ssh"):
        raise CliError("NotAGeneralPurposeHsm", f"'{name}' is a {ep.get('kind')} HSM; 'client connect' is for "
                                                "Luna-class dedicated HSMs (payment HSMs use host ports).")
    if not ports.get("ntls"):
        raise CliError("NtlsUnavailable", f"The appliance of '{name}' reports no NTLS port yet; try again shortly.")
    try:
        cfg = client_config.load()
        if cfg.client is None:
            if not client_name:
                raise CliError("NoClientCertificate", "This client has no certificate yet: pass --client-name "
                                                      "<name> to make one, or run 'hsmcloud client cert new'.")
            made = certificates.create_client_certificate(client_name)
            cfg.client = ClientIdentity(name=made.name, certificate=made.certificate, private_key=made.private_key)
            client_config.save(cfg)
        if admin_password is None:
            admin_password = typer.prompt(f"Appliance admin password for {ep.get('address')}", hide_input=True,
                                          err=True)
        result = connecting.connect(address=ep["address"], ssh_port=int(ports["ssh"]), ntls_port=int(ports["ntls"]),
                                    admin_password=admin_password, partition=partition,
                                    server_name=name, replace=replace)
    except ConfigError as exc:
        raise CliError(exc.code, exc.message) from None
    data = {"server": result.server, "address": result.address, "port": result.port, "slot": result.slot,
            "partition": result.partition, "client": result.client,
            "serverFingerprint": result.server_fingerprint, "config": str(client_config.config_path())}

    def human(d: dict) -> None:
        cx.out.print(f"Client '{d['client']}' registered with '{d['server']}' ({d['address']}:{d['port']}) and "
                     f"assigned partition '{d['partition']}': it is slot {d['slot']}.")
        cx.out.note(f"Applications load {_module_hint()} and use slot {d['slot']}; initialize the partition "
                    "first if it is new: hsmcloud lunacm, then 'partition init'.", style="dim")
    cx.out.result(data, human)


@local_command(app, "forget-host")
def forget_host(out: Output,
                address: Annotated[str, typer.Option("--address", "-a", help="Appliance address.",
                                                     show_default=False)],
                ssh_port: Annotated[int, typer.Option("--ssh-port", help="Its SSH port.", show_default=False)],
                json_output: Json = False):
    """Forget an appliance's pinned SSH host key (after the provider reset the device)."""
    from hsmcloud.clients.luna import connect as connecting
    removed = connecting.forget_host(address, ssh_port)
    out.result({"forgotten": removed}, lambda d: out.print(
        f"SSH host key of {address}:{ssh_port} forgotten." if d["forgotten"] else
        f"No SSH host key of {address}:{ssh_port} was recorded."))


def _module_hint() -> str:
    return "the PKCS#11 library ('hsmcloud pkcs11 module-path')"

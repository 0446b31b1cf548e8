"""The `hsmcloud` command."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from hsmcloud.config import DEFAULT_PORT, DEFAULT_REGIONS, DEFAULT_STATE_DIR, Settings

app = typer.Typer(help="hsmcloud: dedicated HSMs (Luna and payShield class) as a local cloud service.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console(soft_wrap=True)


@app.command()
def up(
    state_dir: Path = typer.Option(DEFAULT_STATE_DIR, "--state-dir", help="Where the store, keys and devices live."),
    port: int = typer.Option(DEFAULT_PORT, "--port", help="ARM endpoint port on 127.0.0.1 (0: any free port)."),
    http: bool = typer.Option(False, "--http", help="Serve plain HTTP instead of HTTPS."),
    database_url: Optional[str] = typer.Option(None, "--database-url",
                                               help="postgresql://... (default: SQLite in the state directory)."),
    region: list[str] = typer.Option(list(DEFAULT_REGIONS), "--region", help="Regions to seed (repeatable)."),
    gateway_seconds: float = typer.Option(3.0, "--gateway-provision-seconds",
                                          help="How long a new gateway stays Updating."),
    step_delay: float = typer.Option(0.3, "--step-delay", help="Seconds between provisioning steps."),
    retry_after: int = typer.Option(1, "--retry-after", help="Retry-After seconds on long-running operations."),
    device_ssh_port: int = typer.Option(2222, "--device-ssh-port",
                                        help="SSH port of every Luna appliance on its own address (0: any free "
                                             "port; a taken port falls back to a free one)."),
    device_host_port: int = typer.Option(1500, "--device-host-port",
                                         help="HOST1 port of every payShield appliance (HOST2 is the next one; "
                                              "0: any free port)."),
    share_loopback: Optional[bool] = typer.Option(
        None, "--share-loopback/--own-loopback",
        help="Devices share 127.0.0.1 (default where the OS has only it, e.g. macOS) or get 127.x.y.z each."),
    no_worker: bool = typer.Option(False, "--no-worker", help="Serve the API only; another replica runs steps."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
):
    """Run the whole service on 127.0.0.1: ARM endpoint, provisioning worker and appliances."""
    from hsmcloud.server import build_server, write_endpoint

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(state_dir=state_dir.expanduser(), port=port, tls=not http, database_url=database_url,
                        regions=tuple(region), gateway_provision_seconds=gateway_seconds,
                        step_delay_seconds=step_delay, retry_after_seconds=retry_after,
                        device_ssh_port=device_ssh_port, device_host_port=device_host_port,
                        run_worker=not no_worker)
    if share_loopback is not None:
        settings.loopback_share_single = share_loopback
    if port:
        import socket

        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            probe.bind((settings.host, port))
        except OSError as exc:
            console.print(f"[red]error:[/] cannot listen on {settings.host}:{port} ({exc.strerror}). Another "
                          "hsmcloud may be running there: stop it, or pick another port with --port.")
            raise typer.Exit(1)
        finally:
            probe.close()
    try:
        server, endpoint = build_server(settings)
    except Exception as exc:  # noqa: BLE001 - one line for the user, not a traceback
        console.print(f"[red]error:[/] hsmcloud could not start: {exc.__class__.__name__}: {exc}")
        raise typer.Exit(1)

    async def serve():
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started:
            bound = server.servers[0].sockets[0].getsockname()[1]
            write_endpoint(settings, endpoint, bound)
            url = endpoint.url.rsplit(":", 1)[0] + f":{bound}"
            console.print(f"[bold green]hsmcloud is up[/] at [bold]{url}[/]")
            if endpoint.ca_path:
                console.print(f"  CA certificate: {endpoint.ca_path}  (REQUESTS_CA_BUNDLE={endpoint.ca_path})")
            console.print(f"  store: {settings.resolved_database_url.split('@')[-1]}")
            console.print(f"  regions: {', '.join(settings.regions)}")
            console.print("  token:  hsmcloud token --subscription <uuid>   (operators: hsmcloud token --operator)")
            console.print("  first:  hsmcloud operator allowlist <uuid>")
            console.print("Ctrl-C stops it; a restart keeps every resource.")
        await task

    try:
        asyncio.run(serve())
    except SystemExit as exc:
        if exc.code not in (0, None):
            console.print("[red]error:[/] hsmcloud stopped during start-up (see the message above).")
            raise typer.Exit(1)
    except KeyboardInterrupt:
        pass


@app.command()
def token(
    subscription: Optional[str] = typer.Option(None, "--subscription", help="Subscription id (a GUID)."),
    operator: bool = typer.Option(False, "--operator", help="An operator token instead."),
    hours: float = typer.Option(24.0, "--hours", help="Lifetime in hours."),
    state_dir: Path = typer.Option(DEFAULT_STATE_DIR, "--state-dir"),
):
    """Print a bearer token for the ARM endpoint."""
    from datetime import timedelta

    from hsmcloud.errors import HsmCloudError
    from hsmcloud.identity.tokens import TokenAuthority

    if operator == (subscription is not None):
        console.print("[red]error:[/] give exactly one of --subscription <uuid> or --operator")
        raise typer.Exit(2)
    state_dir = state_dir.expanduser()
    if not TokenAuthority.key_file(state_dir).exists():
        console.print(f"[red]error:[/] {state_dir} has no token signing key: start the service there first "
                      "('hsmcloud up --state-dir ...') or point --state-dir at its state directory.")
        raise typer.Exit(2)
    try:
        tok = TokenAuthority(state_dir).issue(subscription_id=subscription, operator=operator,
                                                           lifetime=timedelta(hours=hours))
    except HsmCloudError as exc:
        console.print(f"[red]error:[/] {exc.message}")
        raise typer.Exit(2)
    print(tok)


def _register_subcommands() -> None:
    from hsmcloud.cli import hsm, network, operator, payshield, pkcs11, quota

    app.add_typer(operator.app, name="operator")
    app.add_typer(hsm.app, name="hsm")
    app.add_typer(network.app, name="network")
    app.add_typer(quota.app, name="quota")
    app.add_typer(payshield.app, name="payshield")
    app.add_typer(pkcs11.app, name="pkcs11")


_register_subcommands()

if __name__ == "__main__":
    app()

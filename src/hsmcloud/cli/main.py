"""The `hsmcloud` command."""
from __future__ import annotations

import asyncio
import logging
import math
import shlex
from pathlib import Path
from typing import NoReturn, Optional

import typer
from rich.console import Console

from hsmcloud.cli.client import default_state_dir
from hsmcloud.cli.output import Output
from hsmcloud.config import DEFAULT_PORT, DEFAULT_REGIONS, DEFAULT_STATE_DIR, Settings

app = typer.Typer(help="hsmcloud: dedicated HSMs (Luna and payShield class) as a local cloud service.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console(soft_wrap=True)
# Longest lifetime 'hsmcloud token --hours' gives a token (a year).
MAX_TOKEN_HOURS = 8760


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
    device_ntls_port: int = typer.Option(1792, "--device-ntls-port",
                                         help="NTLS port (PKCS#11 clients) of every Luna appliance on its own "
                                              "address (0: any free port; a taken port falls back to a free one)."),
    device_host_port: int = typer.Option(1500, "--device-host-port",
                                         help="HOST1 port of every payShield appliance (HOST2 is the next one; "
                                              "0: any free port)."),
    share_loopback: Optional[bool] = typer.Option(
        None, "--share-loopback/--own-loopback",
        help="Devices share 127.0.0.1 (default where the OS has only it, e.g. macOS) or get 127.x.y.z each."),
    no_worker: bool = typer.Option(False, "--no-worker", help="Serve the API only; another replica runs steps."),
    lease_seconds: float = typer.Option(15.0, "--operation-lease-seconds", min=0.5,
                                        help="How long a worker's lease on an operation lasts unless renewed; "
                                             "another worker takes a step over after that."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
):
    """Run the whole service on 127.0.0.1: ARM endpoint, provisioning worker and appliances."""
    from hsmcloud import logredact
    from hsmcloud.errors import HsmCloudError
    from hsmcloud.listener import listen
    from hsmcloud.server import build_server, write_endpoint

    logredact.configure(logging.INFO if verbose else logging.WARNING)
    state_dir = state_dir.expanduser().absolute()
    settings = Settings(state_dir=state_dir, port=port, tls=not http, database_url=database_url,
                        regions=tuple(region), gateway_provision_seconds=gateway_seconds,
                        step_delay_seconds=step_delay, retry_after_seconds=retry_after,
                        device_ssh_port=device_ssh_port, device_ntls_port=device_ntls_port,
                        device_host_port=device_host_port,
                        run_worker=not no_worker, operation_lease_seconds=lease_seconds)
    if share_loopback is not None:
        settings.loopback_share_single = share_loopback
    # The port first: a conflict is reported before anything is created or started.
    try:
        sock = listen(settings.host, port, state_dir=state_dir)
    except HsmCloudError as exc:
        _fail(exc.code, exc.message)
    try:
        server, endpoint = build_server(settings)
    except Exception as exc:  # noqa: BLE001 - one line for the user, not a traceback
        sock.close()
        _fail("StartFailed", f"hsmcloud could not start: {exc.__class__.__name__}: {exc}")
    # Hints that work as pasted: name the state directory unless the commands find it by default.
    where = "" if state_dir == default_state_dir().absolute() else f" --state-dir {shlex.quote(str(state_dir))}"

    async def serve():
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started:
            bound = server.servers[0].sockets[0].getsockname()[1]
            write_endpoint(settings, endpoint, bound)
            url = endpoint.url.rsplit(":", 1)[0] + f":{bound}"
            console.print(f"[bold green]hsmcloud is up[/] at [bold]{url}[/]")
            if endpoint.ca_path:
                console.print(f"  CA certificate: {endpoint.ca_path}  (REQUESTS_CA_BUNDLE={endpoint.ca_path})",
                              markup=False)
            # Paths as they are: a '[' in a directory name is not rich markup.
            console.print(f"  store: {settings.resolved_database_url.split('@')[-1]}", markup=False)
            console.print(f"  regions: {', '.join(settings.regions)}", markup=False)
            console.print(f"  token:  hsmcloud token --subscription <uuid>{where}   "
                          f"(operators: hsmcloud token --operator{where})", markup=False)
            console.print(f"  first:  hsmcloud operator allowlist <uuid>{where}", markup=False)
            console.print("Ctrl-C stops it; a restart keeps every resource.")
        await task

    try:
        asyncio.run(serve())
    except SystemExit as exc:
        if exc.code not in (0, None):
            _fail("StartFailed", "hsmcloud stopped during start-up (see the message above).")
    except KeyboardInterrupt:
        pass


def _fail(code: str, message: str) -> NoReturn:
    """The CLI's one error line, `error: <code>: <message>`, and exit code 1."""
    Output.error(code, message)
    raise typer.Exit(1)


@app.command()
def token(
    subscription: Optional[str] = typer.Option(None, "--subscription", help="Subscription id (a GUID)."),
    operator: bool = typer.Option(False, "--operator", help="An operator token instead."),
    hours: float = typer.Option(24.0, "--hours", help=f"Lifetime in hours (more than 0, at most {MAX_TOKEN_HOURS})."),
    state_dir: Path = typer.Option(DEFAULT_STATE_DIR, "--state-dir"),
):
    """Print a bearer token for the ARM endpoint."""
    from datetime import timedelta

    from hsmcloud.errors import HsmCloudError
    from hsmcloud.identity.tokens import TokenAuthority

    if operator == (subscription is not None):
        _fail("InvalidArgument", "Give exactly one of --subscription <uuid> or --operator.")
    if not (math.isfinite(hours) and 0 < hours <= MAX_TOKEN_HOURS):
        _fail("InvalidArgument", f"--hours takes a lifetime of more than 0 and at most {MAX_TOKEN_HOURS} hours "
                                 f"(a year), not {hours:g}.")
    state_dir = state_dir.expanduser()
    if not TokenAuthority.key_file(state_dir).exists():
        _fail("NoSigningKey", f"{state_dir} has no token signing key: start the service there first "
                              f"('hsmcloud up --state-dir {shlex.quote(str(state_dir))}') or point --state-dir at "
                              "its state directory.")
    try:
        tok = TokenAuthority(state_dir).issue(subscription_id=subscription, operator=operator,
                                              lifetime=timedelta(hours=hours))
    except HsmCloudError as exc:
        _fail(exc.code, exc.message)
    except (OSError, ValueError) as exc:
        _fail("NoSigningKey", f"Cannot use the token signing key in {state_dir}: {exc}.")
    print(tok)


def _register_subcommands() -> None:
    from hsmcloud.cli import az_cloud, hsm, luna_client, lunacm, network, operator, payshield, pkcs11, quota, sp

    app.add_typer(operator.app, name="operator")
    app.add_typer(hsm.app, name="hsm")
    app.add_typer(network.app, name="network")
    app.add_typer(quota.app, name="quota")
    app.add_typer(payshield.app, name="payshield")
    app.add_typer(sp.app, name="sp")
    app.command("az-cloud")(az_cloud.az_cloud)
    app.add_typer(luna_client.app, name="client")
    app.command("lunacm")(lunacm.lunacm)
    app.add_typer(pkcs11.app, name="pkcs11")


_register_subcommands()

if __name__ == "__main__":
    app()

"""`hsmcloud az-cloud`: how to point the az CLI at this service.

It prints the lines to paste: trust the service's CA (REQUESTS_CA_BUNDLE), turn off MSAL's
instance discovery (it would ask login.microsoftonline.com about this authority), register the
service as a cloud (az reads `/metadata/endpoints` from it) and make that cloud active."""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated, Optional

import typer

from hsmcloud.cli.client import CliError, resolve_target
from hsmcloud.cli.common import run_guarded
from hsmcloud.cli.output import Output

CLOUD_NAME = "hsmcloud"
# The audience of the service's tokens: what az asks the token endpoint for.
ARM_AUDIENCE = "https://management.azure.com/"


def cloud_config(endpoint: str) -> dict:
    """The `az cloud register --cloud-config` document of the service at `endpoint`."""
    base = endpoint.rstrip("/") + "/"
    return {"endpoints": {"resourceManager": base, "activeDirectory": base, "activeDirectoryResourceId": ARM_AUDIENCE,
                          "management": ARM_AUDIENCE, "portal": base}}


def commands(endpoint: str, ca: str | None, name: str) -> list[str]:
    """The shell lines that make az talk to the service at `endpoint`."""
    lines = [f"export REQUESTS_CA_BUNDLE={shlex.quote(ca)}"] if ca else []
    return lines + ["az config set core.instance_discovery=false",
                    f"az cloud register --name {shlex.quote(name)} --endpoint-resource-manager "
                    f"{shlex.quote(endpoint.rstrip('/') + '/')}",
                    f"az cloud set --name {shlex.quote(name)}"]


def az_cloud(
    name: Annotated[str, typer.Option("--name", "-n", help="The cloud's name in az.")] = CLOUD_NAME,
    as_config: Annotated[bool, typer.Option(
        "--cloud-config",
        help="Print only the JSON for 'az cloud register --cloud-config @FILE --skip-endpoint-discovery'.")] = False,
    state_dir: Annotated[Optional[Path], typer.Option(
        "--state-dir", envvar="HSMCLOUD_STATE_DIR", show_default=False,
        help="State directory of the service (its endpoint.json).")] = None,
    endpoint: Annotated[Optional[str], typer.Option("--endpoint", envvar="HSMCLOUD_ENDPOINT", show_default=False,
                                                    help="The service's URL (default: from endpoint.json).")] = None,
    ca: Annotated[Optional[Path], typer.Option(
        "--ca", show_default=False, help="CA certificate of the endpoint (default: the service's own).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")] = False,
):
    """Print the commands that register this service as a cloud in the az CLI."""
    out = Output(json_mode=as_json)

    def body() -> None:
        target = resolve_target(state_dir=state_dir, endpoint=endpoint, ca=ca, insecure=False)
        if not target.url.startswith("https://"):
            raise CliError("HttpsRequired", f"{target.url} is plain HTTP: MSAL (az login, azure-identity) signs in "
                                            "over HTTPS only. Run the service without --http.")
        ca_file = str(ca.expanduser().absolute()) if ca else _ca_of(target.state_dir, target.url)
        if as_config:
            print(json.dumps(cloud_config(target.url), indent=2))
            return
        lines = commands(target.url, ca_file, name)
        out.result({"cloud": name, "endpoint": target.url, "ca": ca_file, "commands": lines,
                    "cloudConfig": cloud_config(target.url)}, lambda d: print("\n".join(d["commands"])))
    run_guarded(out, body)


def _ca_of(state_dir: Path, url: str) -> str | None:
    info_path = state_dir / "endpoint.json"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError):
        info = {}
    if info.get("ca") and str(info.get("endpoint", "")).rstrip("/") == url.rstrip("/"):
        return str(Path(info["ca"]).absolute())
    default = state_dir / "tls" / "ca.pem"
    return str(default.absolute()) if default.exists() else None

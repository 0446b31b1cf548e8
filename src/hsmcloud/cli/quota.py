"""`hsmcloud quota ...`: a subscription's HSM quota in a region, and requests to raise it."""
from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.text import Text

from hsmcloud.cli.client import HSM_API, CliError
from hsmcloud.cli.common import Ctx, service_command

app = typer.Typer(help="Your dedicated-HSM quota per region, and quota-increase requests.", no_args_is_help=True)

Region = Annotated[str, typer.Option("--location", "-l", "--region", help="Region, e.g. eastus.",
                                     show_default=False)]


def request_row(r: dict) -> list:
    style = {"Granted": "green", "Rejected": "red", "Pending": "yellow"}.get(r.get("status"), "")
    return [r.get("id"), r.get("region"), r.get("perRegion"), r.get("perStamp"), Text(str(r.get("status")), style=style),
            (r.get("createdAt") or "")[:19], r.get("reason")]


REQUEST_COLUMNS = ["Id", "Region", "Per region", "Per stamp", "Status", "Created", "Reason"]


@service_command(app, "show")
def show(cx: Ctx, location: Region):
    """Quota in force, HSMs in use, and whether the subscription is allowlisted."""
    client = cx.client
    q = client.get(client.location_path(location) + "/quota", params={"api-version": HSM_API})

    def human(d: dict) -> None:
        allow = Text("yes", style="green") if d.get("allowlisted") else Text(
            "no (ask the provider: 'hsmcloud operator allowlist " + str(d.get("subscriptionId")) + "')", style="red")
        cx.out.fields([("subscription", d.get("subscriptionId")), ("region", d.get("region")),
                       ("allowlisted", allow), ("per region", d.get("perRegion")), ("per stamp", d.get("perStamp")),
                       ("in use", d.get("used"))])
    cx.out.result(q, human)


@service_command(app, "request")
def request(cx: Ctx, location: Region,
            per_region: Annotated[Optional[int], typer.Option("--per-region", min=0, show_default=False,
                                                              help="HSMs wanted in the region.")] = None,
            per_stamp: Annotated[Optional[int], typer.Option("--per-stamp", min=0, show_default=False,
                                                             help="HSMs wanted per stamp.")] = None,
            reason: Annotated[str, typer.Option("--reason", help="Why (for the operator).")] = ""):
    """Ask the provider for a higher quota; an operator grants or rejects it."""
    if per_region is None and per_stamp is None:
        raise CliError("InvalidArgument", "Give --per-region N and/or --per-stamp M.")
    client = cx.client
    body: dict = {"reason": reason}
    if per_region is not None:
        body["perRegion"] = per_region
    if per_stamp is not None:
        body["perStamp"] = per_stamp
    r = client.post(client.location_path(location) + "/quotaRequests", body, params={"api-version": HSM_API})

    def human(d: dict) -> None:
        cx.out.print(f"Quota request {d.get('id')}: {d.get('status')} ({d.get('perRegion')} per region, "
                     f"{d.get('perStamp')} per stamp in {d.get('region')}).")
        cx.out.note("An operator decides it: hsmcloud operator quota-grant " + str(d.get("id")), style="dim")
    cx.out.result(r, human)


@service_command(app, "list")
def list_(cx: Ctx, location: Region):
    """Your quota requests in a region."""
    client = cx.client
    items = client.get(client.location_path(location) + "/quotaRequests", params={"api-version": HSM_API}).get("value") or []
    cx.out.result(items, lambda xs: cx.out.table(REQUEST_COLUMNS, [request_row(r) for r in xs],
                                                 empty="No quota requests."))

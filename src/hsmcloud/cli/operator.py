"""`hsmcloud operator ...`: the provider's side (allowlisting, quotas, fleet, orphans, billing, audit log).

Every command here uses an operator token (minted from the state directory's key, or --token)."""
from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.text import Text

from hsmcloud.cli.client import arm_path, normalize_subscription, poll_interval
from hsmcloud.cli.common import Ctx, service_command
from hsmcloud.cli.output import bar, styled_state
from hsmcloud.cli.quota import REQUEST_COLUMNS, request_row

app = typer.Typer(help="Provider operations: allowlist, quotas, stamps, devices, orphans, force-delete, billing, "
                       "events.", no_args_is_help=True)

SubArg = Annotated[str, typer.Argument(help="Subscription id (a GUID).", show_default=False)]


def _yes_no(value: object) -> Text:
    return Text("yes", style="green") if value else Text("no", style="dim")


def _short_time(value: str | None) -> str | None:
    return value[:19].replace("T", " ") if value else None


@service_command(app, "allowlist", operator=True)
def allowlist(cx: Ctx, subscription: SubArg,
              remove: Annotated[bool, typer.Option("--remove", help="Withdraw the approval.")] = False):
    """Approve a subscription for dedicated HSMs (or withdraw it with --remove)."""
    sub = normalize_subscription(subscription)
    r = cx.client.put(arm_path("operator", "subscriptions", sub, "allowlist"), {"allowlisted": not remove})
    cx.out.result(r, lambda d: cx.out.print(
        f"Subscription {d.get('subscriptionId')} is {'now' if d.get('allowlisted') else 'no longer'} allowlisted "
        "for dedicated HSMs."))


@service_command(app, "subscriptions", operator=True)
def subscriptions(cx: Ctx):
    """Known subscriptions and whether they are allowlisted."""
    items = cx.client.get("/operator/subscriptions").get("value") or []
    cx.out.result(items, lambda xs: cx.out.table(
        ["Subscription", "Allowlisted", "Since"],
        [[x.get("subscriptionId"), _yes_no(x.get("allowlisted")), _short_time(x.get("allowlistedAt"))] for x in xs],
        empty="No subscriptions yet."))


@service_command(app, "quota", operator=True)
def quota(cx: Ctx, subscription: SubArg,
          region: Annotated[str, typer.Option("--region", "-l", help="Region, e.g. eastus.", show_default=False)],
          per_region: Annotated[Optional[int], typer.Option("--per-region", min=0, show_default=False,
                                                            help="New per-region limit.")] = None,
          per_stamp: Annotated[Optional[int], typer.Option("--per-stamp", min=0, show_default=False,
                                                           help="New per-stamp limit.")] = None):
    """Show a subscription's quota in a region, or set it with --per-region/--per-stamp."""
    sub = normalize_subscription(subscription)
    path = arm_path("operator", "subscriptions", sub, "quotas", region)
    if per_region is None and per_stamp is None:
        q = cx.client.get(path)
    else:
        body = {}
        if per_region is not None:
            body["perRegion"] = per_region
        if per_stamp is not None:
            body["perStamp"] = per_stamp
        q = cx.client.put(path, body)
    cx.out.result(q, lambda d: cx.out.fields([("subscription", d.get("subscriptionId")), ("region", d.get("region")),
                                              ("per region", d.get("perRegion")),
                                              ("per stamp", d.get("perStamp"))]))


@service_command(app, "quota-requests", operator=True)
def quota_requests(cx: Ctx,
                   status: Annotated[Optional[str], typer.Option("--status", show_default=False,
                                                                 help="Pending, Granted or Rejected.")] = None):
    """Quota-increase requests of all subscriptions."""
    params = {"status": status} if status else None
    items = cx.client.get("/operator/quotaRequests", params=params).get("value") or []
    cx.out.result(items, lambda xs: cx.out.table(["Subscription"] + REQUEST_COLUMNS,
                                                 [[r.get("subscriptionId")] + request_row(r) for r in xs],
                                                 empty="No quota requests."))


def _decide(cx: Ctx, request_id: str, decision: str) -> None:
    r = cx.client.post(arm_path("operator", "quotaRequests", request_id, decision))
    cx.out.result(r, lambda d: cx.out.print(
        f"Quota request {d.get('id')} {str(d.get('status')).lower()}: {d.get('perRegion')} per region, "
        f"{d.get('perStamp')} per stamp in {d.get('region')} for {d.get('subscriptionId')}."))


@service_command(app, "quota-grant", operator=True)
def quota_grant(cx: Ctx, request_id: Annotated[str, typer.Argument(help="Quota request id.", show_default=False)]):
    """Grant a quota-increase request (the new limits apply at once)."""
    _decide(cx, request_id, "grant")


@service_command(app, "quota-reject", operator=True)
def quota_reject(cx: Ctx, request_id: Annotated[str, typer.Argument(help="Quota request id.", show_default=False)]):
    """Reject a quota-increase request."""
    _decide(cx, request_id, "reject")


@service_command(app, "stamps", operator=True)
def stamps(cx: Ctx):
    """Fill level per region, stamp and device kind."""
    items = cx.client.get("/operator/stamps").get("value") or []
    cx.out.result(items, lambda xs: cx.out.table(
        ["Region", "Stamp", "Kind", "Alloc", "Free", "Failed", "Spare", "Test", "Fill"],
        [[x.get("region"), x.get("stamp"), x.get("kind"), f"{x.get('allocated')}/{x.get('customerDevices')}",
          x.get("free"), x.get("failed"), x.get("spares"), x.get("testDevices"), bar(x.get("fillPercent") or 0)]
         for x in xs],
        empty="No stamps."))


def _hsm_short(hsm_id: str | None) -> str | None:
    if not hsm_id:
        return None
    parts = hsm_id.split("/")
    try:
        return f"{parts[parts.index('resourceGroups') + 1]}/{parts[-1]}"
    except (ValueError, IndexError):
        return hsm_id


@service_command(app, "devices", operator=True)
def devices(cx: Ctx, region: Annotated[Optional[str], typer.Option("--region", "-l", show_default=False,
                                                                   help="Only this region.")] = None):
    """The physical devices: role, state, address and which HSM holds them."""
    params = {"region": region} if region else None
    items = cx.client.get("/operator/devices", params=params).get("value") or []
    state_style = {"free": "green", "allocated": "cyan", "failed": "red"}
    cx.out.result(items, lambda xs: cx.out.table(
        ["Serial", "Region", "Stamp", "Kind", "Role", "State", "Address", "SSH", "Subscription", "HSM"],
        [[d.get("serial"), d.get("region"), d.get("stamp"), d.get("kind"), d.get("role"),
          Text(str(d.get("state")), style=state_style.get(d.get("state"), "")), d.get("address"), d.get("sshPort"),
          d.get("subscriptionId"), _hsm_short(d.get("hsm"))] for d in xs],
        empty="No devices."))


SerialArg = Annotated[str, typer.Argument(help="Device serial (see 'hsmcloud operator devices').",
                                          show_default=False)]


WaitOpt = Annotated[bool, typer.Option("--no-wait", help="Return at once with the operation to poll.")]
IntervalOpt = Annotated[Optional[float], typer.Option("--interval", show_default=False,
                                                      help="Seconds between polls.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds.")]


def _run_device_operation(cx: Ctx, accepted: dict, label: str, *, no_wait: bool, interval: float | None,
                          timeout: float) -> dict:
    """Follow a device operation the service accepted (202) until it ends, showing its steps."""
    location = (accepted or {}).get("location")
    if not location or no_wait:
        return dict(accepted or {}, status="InProgress")
    with cx.out.progress(label) as progress:
        progress.update(accepted.get("step"))
        final = cx.client.wait_operation(location, interval=poll_interval(interval), timeout=timeout,
                                         on_tick=lambda _t: progress.tick(),
                                         on_status=lambda op: progress.update(op.get("provisioningState")))
        progress.update("Succeeded")
    return final.json()


@service_command(app, "licence", operator=True)
def licence(cx: Ctx, serial: SerialArg,
            lift: Annotated[bool, typer.Option("--lift/--restore",
                                               help="Lift the calls-per-second limit (benchmarks) or restore it.")]
            = True, no_wait: WaitOpt = False, interval: IntervalOpt = None, timeout: TimeoutOpt = 600.0):
    """Lift or restore an allocated payment device's calls-per-second licence limit (waits for the operation)."""
    r = cx.client.put(arm_path("operator", "devices", serial, "licence"), {"cpsLimitLifted": lift})
    op = _run_device_operation(cx, r, f"licence {serial}", no_wait=no_wait, interval=interval, timeout=timeout)

    def human(d: dict) -> None:
        if d.get("status") == "Succeeded":
            cx.out.print(f"Device {serial}: calls-per-second limit {'lifted' if lift else 'restored'}.")
        else:
            cx.out.print(f"Licence change of device {serial} accepted (operation {d.get('operationId') or d.get('id')}).")
    cx.out.result(op, human)


@service_command(app, "firmware", operator=True)
def firmware(cx: Ctx, serial: SerialArg,
             version: Annotated[str, typer.Option("--version", help="Firmware to install, e.g. '1.4a 1.8.3'.",
                                                  show_default=False)],
             no_wait: WaitOpt = False, interval: IntervalOpt = None, timeout: TimeoutOpt = 600.0):
    """Patch an unallocated payment device's firmware (versions below 1.4a 1.8.3 are refused; waits for it)."""
    r = cx.client.post(arm_path("operator", "devices", serial, "firmware"), {"version": version})
    op = _run_device_operation(cx, r, f"firmware {serial}", no_wait=no_wait, interval=interval, timeout=timeout)

    def human(d: dict) -> None:
        if d.get("status") == "Succeeded":
            cx.out.print(f"Device {serial} now runs firmware {(d.get('result') or {}).get('firmware')}.")
        else:
            cx.out.print(f"Firmware patch of device {serial} accepted (operation {d.get('operationId') or d.get('id')}).")
    cx.out.result(op, human)


@service_command(app, "operations", operator=True)
def operations(cx: Ctx,
               status: Annotated[Optional[str], typer.Option("--status", show_default=False,
                                                             help="InProgress, Succeeded or Failed.")] = None,
               kind: Annotated[Optional[str], typer.Option("--kind", show_default=False,
                                                           help="e.g. hsm.create, device.firmware.")] = None,
               target: Annotated[Optional[str], typer.Option("--target", show_default=False,
                                                             help="An HSM's internal id or a device serial.")] = None,
               limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="Newest N.")] = 50):
    """Long-running operations, newest first: kind, target, step, the worker holding it, outcome."""
    params = {k: v for k, v in (("status", status), ("kind", kind), ("target", target)) if v}
    params["limit"] = str(limit)
    items = cx.client.get("/operator/operations", params=params).get("value") or []
    cx.out.result(items, lambda xs: cx.out.table(
        ["Started", "Kind", "Target", "Status", "Step", "Worker", "Error"],
        [[_short_time(o.get("startTime")), o.get("kind"), o.get("target"), styled_state(o.get("status")),
          o.get("step"), o.get("worker"), (o.get("error") or {}).get("code")] for o in xs],
        empty="No operations."))


@service_command(app, "orphans", operator=True)
def orphans(cx: Ctx):
    """HSMs whose resource group was deleted: not deleted, still billed."""
    items = cx.client.get("/operator/orphans").get("value") or []
    cx.out.result(items, lambda xs: cx.out.table(
        ["Subscription", "Resource group", "Name", "Location", "State", "Device", "Created"],
        [[h.get("subscriptionId"), h.get("resourceGroup"), h.get("name"), h.get("location"),
          styled_state(h.get("provisioningState")), h.get("device"), _short_time(h.get("createdAt"))] for h in xs],
        empty="No orphaned HSMs."))


@service_command(app, "force-delete", operator=True)
def force_delete(cx: Ctx,
                 subscription: Annotated[str, typer.Option("--subscription", help="The HSM's subscription.",
                                                           show_default=False)],
                 resource_group: Annotated[str, typer.Option("--resource-group", "-g", show_default=False,
                                                             help="The HSM's resource group.")],
                 name: Annotated[str, typer.Option("--name", "-n", help="The HSM's name.", show_default=False)],
                 no_wait: Annotated[bool, typer.Option("--no-wait", help="Return at once.")] = False,
                 interval: Annotated[Optional[float], typer.Option("--interval", show_default=False,
                                                                   help="Seconds between polls.")] = None,
                 timeout: Annotated[float, typer.Option("--timeout", help="Seconds.")] = 1800.0):
    """Set the force-delete flag and reclaim the HSM's device out of band (all content cleared; orphans too)."""
    sub = normalize_subscription(subscription)
    client = cx.client
    r = client.post(arm_path("operator", "subscriptions", sub, "resourceGroups", resource_group, "dedicatedHSMs", name,
                             "forceDelete"))
    location = (r or {}).get("location")
    status = "Accepted"
    if location and not no_wait:
        with cx.out.progress(f"force-deleting {name}") as progress:
            progress.update("Deleting")
            client.wait_operation(location, interval=poll_interval(interval), timeout=timeout,
                                  on_tick=lambda _t: progress.tick())
            progress.update("Deleted")
        status = "Deleted"
    result = dict(r or {}, status=status)

    def human(_d: dict) -> None:
        if status == "Deleted":
            cx.out.print(f"Dedicated HSM '{name}' force-deleted; its device was reset and returned to the pool.")
        else:
            cx.out.print(f"Force delete of '{name}' accepted (operation {result.get('operationId')}).")
    cx.out.result(result, human)


@service_command(app, "billing", operator=True)
def billing(cx: Ctx, subscription: Annotated[Optional[str], typer.Option("--subscription", show_default=False,
                                                                         help="Only this subscription.")] = None):
    """Hours billed per HSM resource, orphans included."""
    params = {"subscription": normalize_subscription(subscription)} if subscription else None
    items = cx.client.get("/operator/billing", params=params).get("value") or []

    def human(xs: list) -> None:
        cx.out.table(["Subscription", "Resource group", "Name", "State", "Orphaned", "Hours", "Billed h", "Billing"],
                     [[h.get("subscriptionId"), h.get("resourceGroup"), h.get("name"),
                       styled_state(h.get("provisioningState")),
                       Text("ORPHANED", style="bold red") if h.get("orphaned") else "", f"{h.get('hours', 0):.2f}",
                       h.get("billedHours"), h.get("billing")] for h in xs], empty="Nothing billed.")
        if xs:
            cx.out.print(f"\ntotal billed hours: {sum(int(h.get('billedHours') or 0) for h in xs)}")
    cx.out.result(items, human)


@service_command(app, "events", operator=True)
def events(cx: Ctx, limit: Annotated[int, typer.Option("--limit", min=1, max=1000,
                                                       help="Newest N events.")] = 50):
    """The service audit log, newest first."""
    items = cx.client.get("/operator/events", params={"limit": str(limit)}).get("value") or []
    cx.out.result(items, lambda xs: cx.out.table(
        ["At", "Actor", "Action", "Subject", "Detail"],
        [[_short_time(e.get("at")), e.get("actor"), e.get("action"), e.get("subject"),
          json.dumps(e.get("detail"), separators=(",", ":")) if e.get("detail") else None] for e in xs],
        empty="No events."))
